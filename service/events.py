"""Normalized SES events: what every ingestion path is parsed into.

One :class:`SesEvent` is one fact about one message (``mail.messageId``): it was
sent, delayed, delivered, bounced, ... at a time, for some recipients. Shapes from
SES event publishing, SES notifications, SNS, EventBridge and Lambda all end up here,
so nothing downstream knows where an event came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class EventType(IntEnum):
    """Event kinds; the integer is the compact code used in stored records."""

    SEND = 0
    DELIVERY_DELAY = 1
    DELIVERY = 2
    BOUNCE = 3
    COMPLAINT = 4
    REJECT = 5
    RENDERING_FAILURE = 6
    OPEN = 7
    CLICK = 8

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS: dict[EventType, str] = {
    EventType.SEND: "send",
    EventType.DELIVERY_DELAY: "delivery_delay",
    EventType.DELIVERY: "delivery",
    EventType.BOUNCE: "bounce",
    EventType.COMPLAINT: "complaint",
    EventType.REJECT: "reject",
    EventType.RENDERING_FAILURE: "rendering_failure",
    EventType.OPEN: "open",
    EventType.CLICK: "click",
}

ENGAGEMENT_TYPES = frozenset({EventType.OPEN, EventType.CLICK})


@dataclass(frozen=True, slots=True)
class MailInfo:
    """What the ``mail`` object says about the message; identical on all its events."""

    message_id: str
    # Epoch ms of mail.timestamp: when SES accepted the message. A record without
    # one (sent_at_known False) carries its event's own time here instead, which
    # orders and indexes it; nothing reads it as a send time.
    sent_at: int
    source: str | None = None
    subject: str | None = None
    configuration_set: str | None = None
    tags: dict[str, str | list[str]] = field(default_factory=dict)
    destination: tuple[str, ...] = ()
    sent_at_known: bool = True


@dataclass(frozen=True, slots=True)
class SesEvent:
    """One SES event about one message.

    ``at`` is the event's own timestamp (for Send, Reject and Rendering Failure,
    which carry none, it is ``mail.timestamp``). ``details`` holds the type-specific
    facts under short, stable keys (see ``service.parser``): bounce type and
    per-recipient diagnostics, delay type and expiry, complaint feedback type,
    SMTP response, and so on.
    """

    type: EventType
    mail: MailInfo
    at: int
    recipients: tuple[str, ...]
    details: dict[str, Any]
    processing_ms: int | None = None
    # Recipients past the per-event cap were let go (service.parser.MAX_RECIPIENTS):
    # the message's record is marked truncated.
    truncated: bool = False

    @property
    def message_id(self) -> str:
        return self.mail.message_id


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """An EventBridge account-level SES event (sending paused/resumed, advisor).

    It carries no message state; alerting consumes it.
    """

    detail_type: str
    at: int
    account: str | None
    region: str | None
    detail: dict[str, Any]

    @property
    def sending_disabled(self) -> bool:
        return self.detail_type == "Sending Status Disabled"


class Reason(StrEnum):
    """Why a record produced no event: a closed set, safe as a metric label.

    The human text beside it (:attr:`RecordIssue.reason`) may quote the input; this
    code never does, so nothing downstream parses the text back into a label.
    """

    INVALID_JSON = "invalid_json"
    NOT_UTF8 = "not_utf8"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    EMPTY = "empty"
    NOT_OBJECT = "not_object"
    NOT_SES = "not_ses"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_MANY = "too_many"
    # A recipient that is not an address (service.addresses): dropped from its event
    # (counted in ParseResult.dropped); the record is rejected when none is left.
    BAD_ADDRESS = "bad_address"
    # Parsed, but the store refused to merge the message (service.pipeline): poison.
    MERGE_FAILED = "merge_failed"
    NO_STATE = "no_state"  # well formed, but says nothing about delivery (ignored)


@dataclass(frozen=True, slots=True)
class RecordIssue:
    """Why record ``index`` of a payload produced no event.

    ``offset``: the byte of the payload where the record begins, when the framing
    knows it (one record a line, objects back to back; not inside a JSON array), so
    a replay can name the file's line.
    """

    index: int
    code: Reason
    reason: str
    offset: int | None = None


# A payload of a million tiny bad records must not cost a million issue objects, a
# million answer entries or a million log lines: the first few are kept as examples,
# every one is counted.
MAX_ISSUES_KEPT = 100


@dataclass(slots=True)
class ParseResult:
    """Everything one payload yielded.

    ``rejected`` are records that are wrong (bad JSON, bad types, unknown event
    types); ``ignored`` are well-formed records that carry no delivery state
    (subscription confirmations, inbound mail, Subscription events, records with no
    ``mail.messageId``). Neither stops the other records. Both lists keep the first
    :data:`MAX_ISSUES_KEPT` issues; ``rejected_count``, ``ignored_count`` and
    ``codes`` count all of them.
    """

    events: list[SesEvent] = field(default_factory=list)
    # The record each of ``events`` came from (its index in the payload).
    event_records: list[int] = field(default_factory=list)
    account_events: list[AccountEvent] = field(default_factory=list)
    rejected: list[RecordIssue] = field(default_factory=list)
    ignored: list[RecordIssue] = field(default_factory=list)
    rejected_count: int = 0
    ignored_count: int = 0
    codes: dict[Reason, int] = field(default_factory=dict)
    records: int = 0
    # Recipients dropped from events that were kept, all codes together, and by code:
    # ``too_many`` past the per-event cap (service.parser.MAX_RECIPIENTS),
    # ``bad_address`` for a recipient that is not an address.
    recipients_dropped: int = 0
    dropped: dict[Reason, int] = field(default_factory=dict)
    # Characters the splitter read, rescans included: the parse's work, which the
    # property tests hold linear in the payload without timing anything.
    scanned: int = 0

    def reject(self, index: int, code: Reason, reason: str) -> None:
        self.rejected_count += 1
        self.codes[code] = self.codes.get(code, 0) + 1
        if len(self.rejected) < MAX_ISSUES_KEPT:
            self.rejected.append(RecordIssue(index, code, reason))

    def drop(self, code: Reason, count: int) -> None:
        """Count ``count`` recipients dropped from a kept event, for ``code``."""
        self.recipients_dropped += count
        self.dropped[code] = self.dropped.get(code, 0) + count

    def ignore(self, index: int, reason: str) -> None:
        self.ignored_count += 1
        if len(self.ignored) < MAX_ISSUES_KEPT:
            self.ignored.append(RecordIssue(index, Reason.NO_STATE, reason))

    def refuse_merges(self, refused: dict[str, str]) -> None:
        """The store refused the merges of these messages (id -> why): their
        records are rejected (``merge_failed``), once each, and their events leave."""
        kept: list[SesEvent] = []
        kept_records: list[int] = []
        rejected: set[int] = set()
        for event, index in zip(self.events, self.event_records, strict=True):
            reason = refused.get(event.message_id)
            if reason is None:
                kept.append(event)
                kept_records.append(index)
            elif index not in rejected:
                rejected.add(index)
                self.reject(index, Reason.MERGE_FAILED, f"the store refused this message: {reason}")
        self.events, self.event_records = kept, kept_records

    @property
    def accepted(self) -> int:
        """Records that became events or account events."""
        return len(self.events) + len(self.account_events)

    @property
    def readable(self) -> bool:
        return self.records > self.rejected_count
