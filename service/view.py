"""What a merged record means: the message view (README, HTTP API), built on read.

Pure: a record and "now" in, plain JSON-ready data out. Statuses come from the
merged flags (``service.state``); details and timestamps from the stored events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service import latency, state
from service.codec import Header, StoredEvent, decode_event, decode_header
from service.diagnosis import Diagnosis, RecipientState, diagnose
from service.events import EventType
from service.suppressions import Suppression
from service.timestamps import format_ms

_PENDING = frozenset({"sent", "delayed"})


@dataclass(frozen=True, slots=True)
class ViewOptions:
    now_ms: int
    overdue_after_ms: int


def message_view(
    message_id: str,
    record: state.MessageRecord,
    options: ViewOptions,
    suppressed: Mapping[str, Suppression] | None = None,
    providers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``GET /v1/messages/{id}`` body (README, HTTP API) for one record.

    ``suppressed``: the recipients' suppression entries, read by the caller in one
    batch (``Store.suppressions_of``); a recipient without one shows ``null``.
    ``providers``: each recipient's mailbox provider (``service.dimensions``), so
    the page can set its steps against that provider's figures."""
    header = decode_header(record.header) or Header(None, None, None, {})
    events = _events_in_order(record)
    found = suppressed or {}
    recipients = [
        _recipient_view(address, record, header, events, options, found.get(address))
        for address in sorted(record.recipients)
    ]
    for recipient in recipients:
        recipient["provider"] = (providers or {}).get(recipient["address"])
    message_latency = latency.rollup(r["latency_ms"] for r in recipients)
    lags = [e.seen_ms - e.at for e in events]
    if lags:
        message_latency["ingest_lag"] = max(0, max(lags))
    return {
        "message_id": message_id,
        "status": record.status(),
        "overdue": any(r["overdue"] for r in recipients),
        "sent_at": format_ms(header.sent_at) if header.sent_at else None,
        "source": header.source,
        "subject": header.subject,
        "configuration_set": header.configuration_set,
        "tags": header.tags,
        "recipients": recipients,
        "latency_ms": message_latency,
        "opened_at": _iso(latency.earliest(e.at for e in events if e.type is EventType.OPEN)),
        "clicked_at": _iso(latency.earliest(e.at for e in events if e.type is EventType.CLICK)),
        "events": [event_view(e) for e in events],
        "truncated": record.truncated,
        "notes": _message_notes(header),
    }


def _events_in_order(record: state.MessageRecord) -> list[StoredEvent]:
    # The blob breaks ties (two bounces of one time and recipient, say), so the
    # order never depends on which event arrived first.
    return [
        event
        for _, event in sorted(
            ((blob, decode_event(blob)) for blob in record.blobs.values()),
            key=lambda pair: (
                pair[1].at,
                pair[1].type,
                pair[1].recipients,
                pair[1].seen_ms,
                pair[0],
            ),
        )
    ]


def recipient_diagnosis(
    record: state.MessageRecord, address: str, options: ViewOptions
) -> Diagnosis:
    """One recipient's diagnosis (``service.diagnosis``), as its view shows it."""
    header = decode_header(record.header) or Header(None, None, None, {})
    status = record.recipient_status(address)
    return diagnose(_state_of(address, status, header, _events_in_order(record), options))


def _state_of(
    address: str, status: str, header: Header, events: list[StoredEvent], options: ViewOptions
) -> RecipientState:
    sent_at = header.sent_at or None
    return RecipientState(
        address=address,
        status=status,
        events=events,
        sent_at=sent_at,
        now_ms=options.now_ms,
        overdue=_is_overdue(status, sent_at, options),
        overdue_after_ms=options.overdue_after_ms,
    )


def _is_overdue(status: str, sent_at: int | None, options: ViewOptions) -> bool:
    return (
        status in _PENDING
        and sent_at is not None
        and options.now_ms - sent_at > options.overdue_after_ms
    )


def _message_notes(header: Header) -> list[str]:
    """What the answer could not know, said plainly."""
    if header.sent_at is None:
        return [
            "mail.timestamp was in none of this message's events: sent_at and the "
            "latencies from send are unknown, and the message is never overdue"
        ]
    return []


def message_summary(
    message_id: str, record: state.MessageRecord, options: ViewOptions
) -> dict[str, Any]:
    """One search result: what the message is and where each recipient stands, with
    each recipient's diagnosis code (``service.diagnosis``: why it failed, or
    what it waits for)."""
    header = decode_header(record.header) or Header(None, None, None, {})
    events = [decode_event(blob) for blob in record.blobs.values()]
    recipients = []
    for address in sorted(record.recipients):
        status = record.recipient_status(address)
        state_now = _state_of(address, status, header, events, options)
        recipients.append(
            {"address": address, "status": status, "diagnosis": diagnose(state_now).code}
        )
    waiting = any(r["status"] in _PENDING for r in recipients)
    return {
        "message_id": message_id,
        "status": record.status(),
        "overdue": bool(
            waiting
            and header.sent_at
            and options.now_ms - header.sent_at > options.overdue_after_ms
        ),
        "sent_at": format_ms(header.sent_at) if header.sent_at else None,
        "source": header.source,
        "subject": header.subject,
        "configuration_set": header.configuration_set,
        "recipients": recipients,
    }


def _recipient_view(
    address: str,
    record: state.MessageRecord,
    header: Header,
    events: list[StoredEvent],
    options: ViewOptions,
    suppressed: Suppression | None = None,
) -> dict[str, Any]:
    status = record.recipient_status(address)
    mine = [e for e in events if address in e.recipients]
    by_type: dict[EventType, list[StoredEvent]] = {}
    for event in mine:
        by_type.setdefault(event.type, []).append(event)
    deliveries = by_type.get(EventType.DELIVERY, [])
    delays = by_type.get(EventType.DELIVERY_DELAY, [])
    bounces = by_type.get(EventType.BOUNCE, [])
    complaints = by_type.get(EventType.COMPLAINT, [])
    opens = by_type.get(EventType.OPEN, [])
    clicks = by_type.get(EventType.CLICK, [])

    sent_at = header.sent_at or None
    delivered_at = deliveries[0].at if deliveries else None
    # The bounce that decides the status: a Permanent one if any, else the first.
    permanent = [b for b in bounces if b.details.get("bounce_type") == "Permanent"]
    deciding_bounce = (permanent or bounces or [None])[0]
    notes: list[dict[str, Any]] = []
    bounce_view = None
    if deciding_bounce is not None:
        bounce_view = _bounce_view(deciding_bounce, address)
        if status != "bounced":
            notes.append({"kind": "auto_reply", "bounce": bounce_view})
            bounce_view = None

    outcome = _outcome_event(status, deliveries, deciding_bounce, complaints, delays)
    latencies = {
        "send_to_delivery": latency.span(sent_at, delivered_at),
        "send_to_first_delay": latency.span(sent_at, delays[0].at if delays else None),
        "send_to_bounce": latency.span(sent_at, deciding_bounce.at if deciding_bounce else None),
        "send_to_complaint": latency.span(sent_at, complaints[0].at if complaints else None),
        "delivery_to_open": latency.span(delivered_at, opens[0].at if opens else None),
        "delivery_to_click": latency.span(delivered_at, clicks[0].at if clicks else None),
        "processing_time": deliveries[0].processing_ms if deliveries else None,
        "ingest_lag": latency.span(outcome.at, outcome.seen_ms) if outcome else None,
    }
    recipient_state = _state_of(address, status, header, events, options)
    return {
        "address": address,
        "status": status,
        "overdue": recipient_state.overdue,
        "diagnosis": diagnose(recipient_state).view(),
        "delivered_at": _iso(delivered_at),
        "smtp_response": deliveries[0].details.get("smtp_response") if deliveries else None,
        "bounce": bounce_view,
        "complaint": _complaint_view(complaints[0]) if complaints else None,
        "delays": [_delay_view(d, address) for d in delays],
        "opened_at": _iso(opens[0].at if opens else None),
        "clicked_at": _iso(clicks[0].at if clicks else None),
        "notes": notes,
        "latency_ms": {k: v for k, v in latencies.items() if v is not None},
        "suppressed": None
        if suppressed is None
        else {"reason": suppressed.reason, "since": format_ms(suppressed.since_ms),
              "message_id": suppressed.message_id},
    }  # fmt: skip


def _outcome_event(
    status: str,
    deliveries: list[StoredEvent],
    bounce: StoredEvent | None,
    complaints: list[StoredEvent],
    delays: list[StoredEvent],
) -> StoredEvent | None:
    chosen = {
        "delivered": deliveries,
        "bounced": [bounce] if bounce else [],
        "complained": complaints,
        "delayed": delays,
    }.get(status, [])
    return chosen[0] if chosen else None


def _report_for(event: StoredEvent, address: str) -> dict[str, Any]:
    for report in event.details.get("reports", ()):
        if report.get("address") == address:
            return {k: v for k, v in report.items() if k != "address"}
    return {}


def _bounce_view(event: StoredEvent, address: str) -> dict[str, Any]:
    details = event.details
    return {
        "at": format_ms(event.at),
        "type": details.get("bounce_type"),
        "subtype": details.get("bounce_subtype"),
        "feedback_id": details.get("feedback_id"),
        "reporting_mta": details.get("reporting_mta"),
        **_report_for(event, address),
    }


def _complaint_view(event: StoredEvent) -> dict[str, Any]:
    details = event.details
    return {
        "at": format_ms(event.at),
        "feedback_type": details.get("feedback_type"),
        "subtype": details.get("complaint_subtype"),
        "feedback_id": details.get("feedback_id"),
        "user_agent": details.get("user_agent"),
    }


def _delay_view(event: StoredEvent, address: str) -> dict[str, Any]:
    expiration = event.details.get("expiration_time")
    return {
        "at": format_ms(event.at),
        "delay_type": event.details.get("delay_type"),
        "expiration_time": _iso(expiration),
        **_report_for(event, address),
    }


def event_view(event: StoredEvent) -> dict[str, Any]:
    """One stored event as the API shows it (timelines, forwarded items)."""
    view: dict[str, Any] = {
        "type": event.type.label,
        "at": format_ms(event.at),
        "recipients": list(event.recipients),
        "seen_at": format_ms(event.seen_ms),
    }
    for key, value in event.details.items():
        view[key] = _iso(value) if key == "expiration_time" else value
    if event.processing_ms is not None:
        view["processing_time_ms"] = event.processing_ms
    return view


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
