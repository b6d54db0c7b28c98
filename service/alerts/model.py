"""An alert as every sink and the API see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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
