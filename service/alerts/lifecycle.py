"""When an alert is notified: Alertmanager's timing, as a pure function of state.

Each evaluation tells, per alert key, what the rule sees now (a :class:`Finding`,
or None when the condition is clear). :func:`plan` compares that with what was
last notified (:class:`AlertRecord`) and decides:

* a new condition waits ``group_wait_s`` (it must still hold then) before its
  first notice, so a blip does not page anyone;
* news about a firing alert (its domains, accounts or severity changed) and the
  ``resolved`` notice wait until ``group_interval_s`` after the last notice, so a
  flapping condition sends one update per interval, not one per evaluation;
* an unchanged firing alert is repeated every ``repeat_interval_s``.

Records are what replicas share; whoever evaluates next continues from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from service.alerts.model import (
    Alert,
    AlertState,
    Example,
    Severity,
    alert_from_dict,
    alert_to_dict,
)
from service.alerts.rules import Timing
from service.search import SearchQuery


@dataclass(frozen=True, slots=True)
class Finding:
    """What one rule sees now, ready to become an alert."""

    rule: str  # the rule's name, which is the alert key
    kind: str
    severity: Severity
    title: str
    summary: str
    subjects: frozenset[str]  # what it is about: a change here is news
    figures: dict[str, str] = field(default_factory=dict)
    worst: dict[str, str] = field(default_factory=dict)
    examples: tuple[Example, ...] = ()
    # Messages that show the problem (the latest sent in that status), looked up
    # only when the alert is about to be notified.
    example_query: SearchQuery | None = None


class Phase(StrEnum):
    PENDING = "pending"  # seen, waiting out group_wait
    FIRING = "firing"  # notified


@dataclass(frozen=True, slots=True)
class AlertRecord:
    key: str
    phase: Phase
    since_ms: int  # when the condition was first seen
    last_sent_ms: int = 0
    subjects: tuple[str, ...] = ()
    severity: Severity = Severity.WARNING
    alert: Alert | None = None  # as last notified

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "phase": self.phase.value,
            "since_ms": self.since_ms,
            "last_sent_ms": self.last_sent_ms,
            "subjects": list(self.subjects),
            "severity": self.severity.value,
            "alert": None if self.alert is None else alert_to_dict(self.alert),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRecord:
        return cls(
            key=data["key"],
            phase=Phase(data["phase"]),
            since_ms=data["since_ms"],
            last_sent_ms=data["last_sent_ms"],
            subjects=tuple(data["subjects"]),
            severity=Severity(data["severity"]),
            alert=None if data["alert"] is None else alert_from_dict(data["alert"]),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What one evaluation changes: records to write or drop, alerts to send."""

    upserts: dict[str, AlertRecord]
    deletes: list[str]
    notices: list[Alert]

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.notices)


def plan(
    records: Mapping[str, AlertRecord],
    findings: Mapping[str, Finding | None],
    now_ms: int,
    timing: Timing,
    link: str | None = None,
) -> Plan:
    """Every key's next record and notice; a key missing from ``findings`` is clear."""
    upserts: dict[str, AlertRecord] = {}
    deletes: list[str] = []
    notices: list[Alert] = []
    for key in sorted(records.keys() | findings.keys()):
        before = records.get(key)
        after, notice = step(before, findings.get(key), now_ms, timing, link)
        if after is None:
            if before is not None:
                deletes.append(key)
        elif after != before:
            upserts[key] = after
        if notice is not None:
            notices.append(notice)
    return Plan(upserts, deletes, notices)


def step(
    record: AlertRecord | None,
    finding: Finding | None,
    now_ms: int,
    timing: Timing,
    link: str | None = None,
) -> tuple[AlertRecord | None, Alert | None]:
    """One key's next record, and the alert to send now, if any."""
    group_wait = timing.group_wait_s * 1000
    group_interval = timing.group_interval_s * 1000
    if finding is None:
        if record is None or record.phase is Phase.PENDING:
            return None, None
        if now_ms - record.last_sent_ms < group_interval:
            return record, None
        assert record.alert is not None
        resolved = dataclasses.replace(record.alert, state=AlertState.RESOLVED, resolved_at=now_ms)
        return None, resolved
    if record is None:
        record = AlertRecord(finding.rule, Phase.PENDING, since_ms=now_ms)
    subjects = tuple(sorted(finding.subjects))
    if record.phase is Phase.PENDING:
        if now_ms - record.since_ms < group_wait:
            return record, None
        return _notify(record, finding, subjects, now_ms, link)
    news = subjects != record.subjects or finding.severity is not record.severity
    since_last = now_ms - record.last_sent_ms
    if (news and since_last >= group_interval) or since_last >= timing.repeat_interval_s * 1000:
        return _notify(record, finding, subjects, now_ms, link)
    return record, None


def _notify(
    record: AlertRecord,
    finding: Finding,
    subjects: tuple[str, ...],
    now_ms: int,
    link: str | None,
) -> tuple[AlertRecord, Alert]:
    alert = Alert(
        key=finding.rule,
        rule=finding.kind,
        severity=finding.severity,
        state=AlertState.FIRING,
        title=finding.title,
        summary=finding.summary,
        started_at=record.since_ms,
        figures=finding.figures,
        worst=finding.worst,
        examples=finding.examples,
        link=_link(link, finding),
    )
    after = AlertRecord(
        key=record.key,
        phase=Phase.FIRING,
        since_ms=record.since_ms,
        last_sent_ms=now_ms,
        subjects=subjects,
        severity=finding.severity,
        alert=alert,
    )
    return after, alert


def _link(status_page: str | None, finding: Finding) -> str | None:
    """The status page, opened on the first example when there is one."""
    if status_page is None or not finding.examples:
        return status_page
    return f"{status_page}?message={quote(finding.examples[0].message_id, safe='')}"


def due_for_notice(
    record: AlertRecord | None, finding: Finding | None, now_ms: int, timing: Timing
) -> bool:
    """Whether :func:`step` would send now (so examples are worth looking up)."""
    _, notice = step(record, finding, now_ms, timing)
    return notice is not None and notice.state is AlertState.FIRING
