"""The shapes every route answers with, as the OpenAPI schema publishes them.

Declared for the schema (``/docs``, ``/openapi.json``), not enforced per request:
routes return ``OrjsonResponse`` directly, so nothing here runs on the hot path.
The schemathesis test checks that answers conform (``tests/property``).
Objects allow extra fields, so adding one is not a breaking change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorAnswer(_Open):
    """Every error: ``{"error": "..."}``, more fields where useful."""

    error: str


class RecordErrorItem(_Open):
    index: int
    code: str
    error: str


class RecordNote(_Open):
    index: int
    reason: str


class IngestAnswer(_Open):
    """``POST /v1/events``: the first 100 errors and notes; the counts cover all."""

    accepted: int
    rejected: int
    ignored: int
    errors: list[RecordErrorItem]
    error_codes: dict[str, int]
    notes: list[RecordNote]


class SnsAnswer(_Open):
    """One of: ingested counts, ``duplicate``, ``confirmed`` or ``unsubscribed``."""

    accepted: int | None = None
    rejected: int | None = None
    ignored: int | None = None
    duplicate: bool | None = None
    confirmed: bool | None = None
    unsubscribed: bool | None = None


class FirehoseAnswer(_Open):
    """Amazon Data Firehose's response format."""

    requestId: str
    timestamp: int
    errorMessage: str | None = None


class RecipientSummary(_Open):
    address: str
    status: str
    diagnosis: str  # its code (service.diagnosis.CODES)


class _MessageHeader(_Open):
    message_id: str
    status: str
    overdue: bool
    sent_at: str | None
    source: str | None
    subject: str | None
    configuration_set: str | None


class MessageSummary(_MessageHeader):
    recipients: list[RecipientSummary]


class SearchAnswer(_Open):
    items: list[MessageSummary]
    next_cursor: str | None


class Diagnosis(_Open):
    """What happened, in words (``service.diagnosis``): ``code`` is one of the
    closed table in the README (HTTP API), never an event's own string."""

    code: str
    summary: str
    action: str


class SuppressedNow(_Open):
    """The recipient's entry in the suppression list, read when the message was."""

    reason: str
    since: str
    message_id: str


class RecipientView(_Open):
    address: str
    status: str
    overdue: bool
    diagnosis: Diagnosis
    suppressed: SuppressedNow | None
    # The recipient's mailbox provider (gmail, microsoft, ..., other; README, Dimensions).
    provider: str | None
    delivered_at: str | None
    smtp_response: str | None
    bounce: dict[str, Any] | None
    complaint: dict[str, Any] | None
    delays: list[dict[str, Any]]
    opened_at: str | None
    clicked_at: str | None
    notes: list[dict[str, Any]]
    latency_ms: dict[str, int]


class EventView(_Open):
    type: str
    at: str
    recipients: list[str]
    seen_at: str


class MessageView(_MessageHeader):
    tags: dict[str, Any]
    recipients: list[RecipientView]
    latency_ms: dict[str, int]
    opened_at: str | None
    clicked_at: str | None
    events: list[EventView]
    truncated: bool
    notes: list[str]


class Percentiles(_Open):
    count: int
    p50: int | None = None
    p90: int | None = None
    p99: int | None = None
    max: int | None = None


class Rates(_Open):
    bounce: float | None
    complaint: float | None


class StatsSection(_Open):
    counts: dict[str, int]
    rates: Rates
    latency_ms: dict[str, Percentiles]


class GroupSection(StatsSection):
    key: str


class Breakdown(_Open):
    dimension: str
    groups: list[GroupSection]


class StatsAnswer(StatsSection):
    window_s: int
    by_domain: dict[str, StatsSection]
    relative_accuracy: float
    by: Breakdown | None = None
    dimensions: list[str] = []


class HistoryPoint(GroupSection):
    at: str


class HistoryAnswer(_Open):
    step: str
    by: str | None
    history_days: int
    hourly_days: int
    points: list[HistoryPoint]


class AlertExample(_Open):
    message_id: str
    recipient: str | None
    detail: str | None


class AlertView(_Open):
    key: str
    rule: str
    severity: str
    state: str
    title: str
    summary: str
    started_at: str
    resolved_at: str | None
    figures: dict[str, str]
    worst: dict[str, str]
    examples: list[AlertExample]
    link: str | None


class AlertsAnswer(_Open):
    items: list[AlertView]
    firing: list[AlertView]


class HealthAnswer(_Open):
    status: str


class SourceCounters(_Open):
    records: int
    events: int
    rejected: int
    ignored: int
    recipients_dropped: dict[str, int] = {}


class ReadyAnswer(_Open):
    status: str
    store: bool
    store_kind: str
    sources_healthy: bool
    consumers: dict[str, dict[str, Any]]
    sources: dict[str, SourceCounters]
    event_lag_s: dict[str, dict[str, float]]
    catching_up: dict[str, float]
    catch_up_after_s: float


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer} for status in (400, 401, 403, 404, 413, 415, 422, 429, 503)
}


class Outcome(_Open):
    status: str
    at: str | None
    message_id: str


class Suppressed(_Open):
    reason: str
    since: str | None
    message_id: str


class RecipientProfile(_Open):
    address: str
    messages: int
    complete: bool
    first_sent_at: str
    last_sent_at: str
    status_counts: dict[str, int]
    last_outcome: Outcome
    suppressed: Suppressed | None
    recent: list[MessageSummary]


class SuppressionView(_Open):
    address: str
    reason: str
    since: str
    message_id: str
    subtype: str | None


class SuppressionList(_Open):
    items: list[SuppressionView]
    next_cursor: str | None


class SuppressionRemoved(_Open):
    address: str
    removed: bool


class ErasureAccepted(_Open):
    address: str
    id: str
    status_url: str


class ErasureProgress(_Open):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    requested_at: int
    started_at: int | None
    finished_at: int | None
    messages: int
    index_entries: int
    reached: dict[str, int]
    error: str | None


class AuditEntryView(_Open):
    id: str
    at: str
    actor: str
    action: str
    target: str | None
    result: str
    detail: str | None


class AuditPage(_Open):
    items: list[AuditEntryView]
    next_cursor: str | None
