"""Compact storage encoding of events and message headers.

Footprint decides whether one Redis holds 14 days of a busy sender's mail, so a
stored event is a msgpack array, ``[type, at, recipients, details, processing_ms,
seen_ms]``, with details under one- or two-letter keys. The layout also makes the
merge rules in ``service.state`` cheap for both stores, because byte order of two
blobs follows their fields in order: a small int type code, then ``at`` and, last,
``seen_ms``, which msgpack always writes as ``0xcf`` plus 8 big-endian bytes for any
time after 2000, so byte order is numeric order:

* a status event is filed under ``e`` + a hash of what identifies it (type, time,
  recipients, feedback id ...), so the same bounce read from an SNS notification and
  from event publishing lands on one field;
* two versions of a field differ only in ``seen_ms``, so the smaller blob is the
  first sighting;
* engagement is filed per recipient (``o``/``c`` + address), so the smaller blob is
  the first open or click.

The header is a digit counting its known fields followed by msgpack, so the larger
header is the most complete one, whichever event brought it.

Why msgpack rather than JSON: smaller, and packing is several times faster once
the store holds many blobs (orjson's output buffers cost more to allocate).
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Any, NamedTuple

import msgpack

from service import state, stats
from service.dimensions import Dimensions
from service.events import ENGAGEMENT_TYPES, EventType, SesEvent

_SHORT_KEYS: dict[str, str] = {
    "smtp_response": "s",
    "reporting_mta": "m",
    "remote_mta_ip": "i",
    "bounce_type": "bt",
    "bounce_subtype": "bs",
    "feedback_id": "fb",
    "reports": "r",
    "delay_type": "dt",
    "expiration_time": "x",
    "feedback_type": "ft",
    "complaint_subtype": "cs",
    "user_agent": "ua",
    "ip_address": "ip",
    "link": "l",
    "reason": "rs",
    "error_message": "em",
    "template_name": "tn",
    "address": "a",
    "status": "st",
    "action": "ac",
    "diagnostic_code": "dc",
}
_LONG_KEYS: dict[str, str] = {short: long for long, short in _SHORT_KEYS.items()}


def short_key(name: str) -> str:
    """The key a detail is stored under in an event blob (merge.lua reads one)."""
    return _SHORT_KEYS[name]


_BOUNCE_BITS = {"Permanent": state.HARD_BOUNCE, "Transient": state.SOFT_BOUNCE}
_RECIPIENT_BITS: dict[EventType, int] = {
    EventType.DELIVERY_DELAY: state.DELAY,
    EventType.DELIVERY: state.DELIVERY,
    EventType.COMPLAINT: state.COMPLAINT,
}
_MESSAGE_BITS: dict[EventType, int] = {
    EventType.REJECT: state.REJECT,
    EventType.RENDERING_FAILURE: state.RENDERING_FAILURE,
}
# What tells two events of one type and time apart, beyond their recipients.
_DISCRIMINATORS: dict[EventType, tuple[str, ...]] = {
    EventType.BOUNCE: ("feedback_id", "bounce_type"),
    EventType.COMPLAINT: ("feedback_id",),
    EventType.DELIVERY_DELAY: ("delay_type", "expiration_time"),
    EventType.REJECT: ("reason",),
    EventType.RENDERING_FAILURE: ("error_message",),
}


_URLSAFE = bytes.maketrans(b"+/", b"-_")
# One packer for the process: the ingest path runs on a single event loop thread.
_PACKER = msgpack.Packer(use_bin_type=False)


class StoredEvent(NamedTuple):
    """An event read back from a record."""

    type: EventType
    at: int
    recipients: tuple[str, ...]
    details: dict[str, Any]
    processing_ms: int | None
    seen_ms: int


class Header(NamedTuple):
    sent_at: int | None  # None: no event carried mail.timestamp
    source: str | None
    subject: str | None
    tags: dict[str, Any]

    @property
    def configuration_set(self) -> str | None:
        value = self.tags.get("ses:configuration-set")
        if isinstance(value, list):
            return value[0] if value else None
        return value


_NO_DIMENSIONS = Dimensions()


def encode_batch(
    events: list[SesEvent], seen_ms: int, dimensions: Dimensions = _NO_DIMENSIONS
) -> list[state.MessageWrite]:
    """Group ``events`` by message, each encoded once, in first-seen order."""
    grouped: dict[str, list[SesEvent]] = {}
    for event in events:
        grouped.setdefault(event.mail.message_id, []).append(event)
    writes: list[state.MessageWrite] = []
    headers: dict[int, bytes] = {}  # events of one message usually share one MailInfo
    for message_id, group in grouped.items():
        header, richest = max((_header_for(event, headers), n) for n, event in enumerate(group))
        destination: dict[str, None] = {}
        addresses: dict[str, None] = {}
        for event in group:
            destination.update(dict.fromkeys(event.mail.destination))
            addresses.update(dict.fromkeys(event.recipients))
        addresses.update(destination)
        # A record keeps its MAX_RECIPIENTS smallest addresses, so a destination
        # beyond them (the union of many events' lists) adds nothing but work.
        capped = len(destination) > state.MAX_RECIPIENTS
        kept = tuple(sorted(destination)[: state.MAX_RECIPIENTS]) if capped else tuple(destination)
        # The richest header's mail (tags above all) names the message's groups.
        groups = dimensions.message_groups(group[richest].mail)
        providers = dimensions.providers(addresses)
        known = [event.mail.sent_at for event in group if event.mail.sent_at_known]
        writes.append(
            state.MessageWrite(
                message_id=message_id,
                header=header,
                # Without a send time, the earliest event's time orders and indexes.
                sent_at=min(known) if known else min(event.at for event in group),
                destination=kept,
                events=tuple(encode_event(event, seen_ms, groups, providers) for event in group),
                sent_known=bool(known),
                groups=groups,
                providers=providers,
                truncated=capped or any(event.truncated for event in group),
            )
        )
    return writes


def _header_for(event: SesEvent, cache: dict[int, bytes]) -> bytes:
    header = cache.get(id(event.mail))
    if header is None:
        header = cache[id(event.mail)] = encode_header(event)
    return header


def encode_header(event: SesEvent) -> bytes:
    mail = event.mail
    known = (
        mail.sent_at_known
        + (mail.source is not None)
        + (mail.subject is not None)
        + bool(mail.tags)
    )
    sent_at = mail.sent_at if mail.sent_at_known else None
    body = _PACKER.pack([sent_at, mail.source, mail.subject, mail.tags])
    return b"%d%s" % (known, body)


def decode_header(raw: bytes) -> Header | None:
    if not raw:
        return None
    sent_at, source, subject, tags = msgpack.unpackb(raw[1:], raw=False)
    return Header(sent_at, source, subject, tags)


def encode_event(
    event: SesEvent,
    seen_ms: int,
    groups: tuple[str, ...] = (),
    providers: dict[str, str] | None = None,
) -> state.EventWrite:
    """``groups`` and ``providers``: the event's message's (``MessageWrite``)."""
    kind = event.type
    details = {
        _SHORT_KEYS[key]: _compact(value)
        for key, value in event.details.items()
        if value is not None
    }
    blob = _PACKER.pack(
        [int(kind), event.at, event.recipients, details or 0, event.processing_ms, seen_ms]
    )
    counters = stats.event_counters(event, seen_ms, groups, providers or {})
    bucket = stats.live_bucket(event.at, seen_ms)
    if kind in ENGAGEMENT_TYPES:
        prefix = "o" if kind is EventType.OPEN else "c"
        recipients = event.recipients
        field = prefix + recipients[0] if len(recipients) == 1 else prefix
        bits = tuple((address, 0) for address in recipients)
        return state.EventWrite(field, blob, 0, bits, event.at, False, counters.natural,
                                counters.latency_field, counters.once_fields, bucket,
                                counters.history_latency_field, counters.live_fields)  # fmt: skip
    if kind is EventType.BOUNCE:
        per_recipient = _BOUNCE_BITS.get(event.details["bounce_type"], state.SOFT_BOUNCE)
    else:
        per_recipient = _RECIPIENT_BITS.get(kind, 0)
    bits = tuple((address, per_recipient) for address in event.recipients)
    return state.EventWrite(
        "e" + _event_id(event),
        blob,
        _MESSAGE_BITS.get(kind, 0),
        bits,
        event.at,
        True,
        counters.natural,
        counters.latency_field,
        counters.once_fields,
        bucket,
        counters.history_latency_field,
        counters.live_fields,
    )


def decode_event(blob: bytes) -> StoredEvent:
    kind, at, recipients, details, processing_ms, seen_ms = msgpack.unpackb(blob, raw=False)
    return StoredEvent(
        EventType(kind),
        at,
        tuple(recipients),
        {_LONG_KEYS[key]: _expand(value) for key, value in details.items()} if details else {},
        processing_ms,
        seen_ms,
    )


def encode_stored(event: StoredEvent) -> bytes:
    """A stored event back into its blob (erasure rewrites one without an address)."""
    details = {_SHORT_KEYS[key]: _compact(value) for key, value in event.details.items()}
    return _PACKER.pack(
        [int(event.type), event.at, list(event.recipients), details or 0,
         event.processing_ms, event.seen_ms]
    )  # fmt: skip


def _event_id(event: SesEvent) -> str:
    parts = [str(int(event.type)), str(event.at), ",".join(sorted(event.recipients))]
    for key in _DISCRIMINATORS.get(event.type, ()):
        parts.append(str(event.details.get(key) or ""))
    # 48 bits: ids only need to be unique among one message's events.
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=6).digest()
    # base64.urlsafe_b64encode, without its Python-level wrappers: the same text.
    return binascii.b2a_base64(digest, newline=False).translate(_URLSAFE).decode()


def _compact(value: Any) -> Any:
    if isinstance(value, list):
        return [
            {_SHORT_KEYS[k]: v for k, v in item.items() if v is not None}
            if isinstance(item, dict)
            else item
            for item in value
        ]
    return value


def _expand(value: Any) -> Any:
    if isinstance(value, list):
        return [
            {_LONG_KEYS[k]: v for k, v in item.items()} if isinstance(item, dict) else item
            for item in value
        ]
    return value
