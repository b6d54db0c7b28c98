"""An alert as every sink and the API see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Example:
    """A message that shows the problem, for the on-call engineer to look up."""

    message_id: str
    recipient: str | None = None
    detail: str | None = None
    # {"code", "summary"} of the recipient (service.diagnosis), looked up when the
    # notice is due; None without a recipient or when the message is gone.
    diagnosis: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification: a rule's condition fired or cleared for one alert key.

    ``key`` groups and de-duplicates (the rule plus what it is about, such as a
    recipient domain); ``figures`` are the numbers that made it fire, already
    formatted for people (``"bounce rate": "6.2% (31 of 500)"``).
    """

    key: str
    rule: str
    severity: Severity
    state: AlertState
    title: str
    summary: str
    started_at: int  # epoch ms
    figures: dict[str, str] = field(default_factory=dict)
    worst: dict[str, str] = field(default_factory=dict)  # e.g. domain -> rate
    examples: tuple[Example, ...] = ()
    link: str | None = None  # status page, or a lookup of the first example
    resolved_at: int | None = None

    @property
    def headline(self) -> str:
        prefix = "RESOLVED" if self.state is AlertState.RESOLVED else self.severity.value.upper()
        return f"[{prefix}] {self.title}"


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The alert as stored (outbox, history) and as ``GET /v1/alerts`` shows it."""
    return {
        "key": alert.key,
        "rule": alert.rule,
        "severity": alert.severity.value,
        "state": alert.state.value,
        "title": alert.title,
        "summary": alert.summary,
        "started_at": alert.started_at,
        "resolved_at": alert.resolved_at,
        "figures": alert.figures,
        "worst": alert.worst,
        "examples": [
            {
                "message_id": e.message_id,
                "recipient": e.recipient,
                "detail": e.detail,
                "diagnosis": e.diagnosis,
            }
            for e in alert.examples
        ],
        "link": alert.link,
    }


def alert_from_dict(data: dict[str, Any]) -> Alert:
    return Alert(
        key=data["key"],
        rule=data["rule"],
        severity=Severity(data["severity"]),
        state=AlertState(data["state"]),
        title=data["title"],
        summary=data["summary"],
        started_at=data["started_at"],
        resolved_at=data.get("resolved_at"),
        figures=dict(data.get("figures") or {}),
        worst=dict(data.get("worst") or {}),
        examples=tuple(Example(**example) for example in data.get("examples") or ()),
        link=data.get("link"),
    )
