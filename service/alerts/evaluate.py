"""What each rule sees now: pure functions from figures to findings.

The figures come from what every replica shares (windowed stats counters, the
pending index, account status), gathered by ``service.alerts.engine``; nothing here
does I/O, so the rules are tested as plain functions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.alerts.lifecycle import Finding
from service.alerts.model import Example, Severity
from service.alerts.rules import (
    DelaySpikeRule,
    LatencyRule,
    OverdueRule,
    RateRule,
    Rule,
    SendingDisabledRule,
    StatusCountRule,
    TrackerRule,
)
from service.search import SearchQuery
from service.stats import quantile, split_groups
from service.timestamps import format_ms

WORST_SHOWN = 5


@dataclass(frozen=True, slots=True)
class OverdueMessage:
    message_id: str
    sent_at: int
    waiting: tuple[tuple[str, str], ...]  # (recipient, sent|delayed)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    enabled: bool
    at: int
    detail_type: str


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One consumer of one replica, as its ``status()`` reports it."""

    replica: str
    name: str
    state: str
    failure: bool
    stalled: tuple[str, ...] = ()
    dlq_blocked: tuple[str, ...] = ()
    lag: int = 0
    dead_letters: int = 0  # parked (Kafka) or left for redrive (SQS), since it started
    # Event-time lag (service.lag) of its positions, seconds.
    event_lag_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrackerHealth:
    """ses-tracker's own figures, over every replica that reported lately."""

    sources: tuple[SourceHealth, ...] = ()
    dead_letters_recent: int = 0  # records parked or left for redrive in the window
    memory_used: int | None = None  # the store's bytes, and its limit (None: none)
    memory_max: int | None = None
    evicted_recent: int = 0  # messages the store evicted in the window
    outbox_oldest_ms: Mapping[str, int] = field(default_factory=dict)  # sink -> created


@dataclass(frozen=True, slots=True)
class Inputs:
    now_ms: int
    # Summed stats counters (``service.stats``) per window length in seconds.
    windows: Mapping[int, Mapping[str, int]]
    overdue: Sequence[OverdueMessage] = ()  # oldest first
    overdue_more: bool = False  # more overdue messages than were fetched
    overdue_after_s: float = 900
    accounts: Mapping[str, AccountStatus] | None = None
    health: TrackerHealth | None = None


# Rules judged on the statistics windows: while a source catches up, recent windows
# miss what it has not read yet, so these may fire on what is there but not resolve.
WINDOW_RULES = (RateRule, LatencyRule, DelaySpikeRule, StatusCountRule)


def windows_needed(rules: Sequence[Rule]) -> set[int]:
    """The stats windows (seconds) that evaluating ``rules`` reads."""
    needed: set[int] = set()
    for rule in rules:
        if isinstance(rule, RateRule | LatencyRule | StatusCountRule):
            needed.add(rule.window_s)
        elif isinstance(rule, DelaySpikeRule):
            needed |= {rule.window_s, rule.baseline_s}
    return needed


def dimensions_needed(rules: Sequence[Rule]) -> set[str]:
    """The dimensions whose groups evaluating ``rules`` reads from the windows: each
    window rule's own, and recipient domains (the worst-domains lists and delay
    spikes per domain). Only these are read (``WindowReader``)."""
    needed = {"domain"}
    for rule in rules:
        if isinstance(rule, RateRule | LatencyRule) and rule.by != "global":
            needed.add(rule.by)
    return needed


def evaluate(rules: Sequence[Rule], inputs: Inputs) -> dict[str, Finding | None]:
    """Each rule's finding (None: the condition is clear). Pure and CPU-bound over
    an hour's groups: ``service.alerts.engine`` runs it in a worker thread."""
    return {rule.name: _EVALUATORS[type(rule)](rule, inputs) for rule in rules}


def _scopes(
    counters: Mapping[str, int], by: str
) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """What a rule judges (each group of its dimension, or everything as one) and
    the recipient domains, for the worst-domains list."""
    overall, groups = split_groups(counters)
    per_domain = groups.get("domain", {})
    if by == "global":
        return {"all domains": overall}, per_domain
    scopes = {_scope_name(by, value): fields for value, fields in groups.get(by, {}).items()}
    return scopes, per_domain


def _scope_name(by: str, value: str) -> str:
    """A group as alerts name it: a domain as itself, others with their dimension."""
    return value if by == "domain" else f"{by} {value}"


def _rate(rule: RateRule, inputs: Inputs) -> Finding | None:
    status = "bounced" if rule.kind == "bounce_rate" else "complained"
    noun = "bounce" if status == "bounced" else "complaint"
    scopes, per_domain = _scopes(inputs.windows[rule.window_s], rule.by)
    breaches: list[tuple[float, str, int, int]] = []
    for scope, fields in scopes.items():
        sent, hits = fields.get("c:sent", 0), fields.get("c:" + status, 0)
        if sent >= rule.min_sent and hits / sent >= rule.warn:
            breaches.append((hits / sent, scope, hits, sent))
    if not breaches:
        return None
    breaches.sort(key=lambda b: (-b[0], -b[2], b[1]))  # worst rate, then most bounces
    top_rate, top_scope, top_hits, top_sent = breaches[0]
    critical = rule.critical is not None and top_rate >= rule.critical
    where = _where(rule.by, top_scope, len(breaches))
    window = _span(rule.window_s)
    figures = {
        f"{noun} rate": f"{_pct(top_rate)} ({top_hits} of {top_sent})",
        "window": window,
        "threshold": _pct(rule.warn)
        + ("" if rule.critical is None else f" (critical {_pct(rule.critical)})"),
    }
    if rule.by in ("global", "domain"):
        worst = _worst_domains(per_domain, status, rule.min_sent if rule.by == "domain" else 1)
    else:
        worst = _worst_domains(scopes, status, rule.min_sent)
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        title=f"{noun.capitalize()} rate {_pct(top_rate)}{where}",
        summary=(
            f"{top_hits} of {top_sent} recipients {status} in the last"
            f" {window}{where} (threshold {_pct(rule.warn)})."
        ),
        subjects=frozenset(scope for _, scope, _, _ in breaches),
        figures=figures,
        worst=worst,
        example_query=SearchQuery(status=status),
    )


def _worst_domains(
    per_domain: Mapping[str, Counter[str]], status: str, min_sent: int
) -> dict[str, str]:
    ranked = sorted(
        (
            (fields.get("c:" + status, 0) / fields["c:sent"], domain, fields)
            for domain, fields in per_domain.items()
            if fields.get("c:sent", 0) >= min_sent and fields.get("c:" + status, 0)
        ),
        key=lambda item: (-item[0], item[1]),
    )
    return {
        domain: f"{_pct(rate)} ({fields.get('c:' + status, 0)} of {fields['c:sent']})"
        for rate, domain, fields in ranked[:WORST_SHOWN]
    }


def _latency(rule: LatencyRule, inputs: Inputs) -> Finding | None:
    scopes, _ = _scopes(inputs.windows[rule.window_s], rule.by)
    prefix = f"l:{rule.latency}:"
    breaches: list[tuple[float, str, int]] = []
    for scope, fields in scopes.items():
        bins = [(name[len(prefix) :], n) for name, n in fields.items() if name.startswith(prefix)]
        count, value = quantile(bins, rule.percentile / 100)
        if count >= rule.min_count and value is not None and value > rule.above_ms:
            breaches.append((value, scope, count))
    if not breaches:
        return None
    breaches.sort(key=lambda item: (-item[0], item[1]))
    top_value, top_scope, top_count = breaches[0]
    critical = rule.critical_ms is not None and top_value > rule.critical_ms
    label = f"p{rule.percentile:g} {rule.latency.replace('_', ' ')}"
    where = _where(rule.by, top_scope, len(breaches))
    window = _span(rule.window_s)
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        title=f"Slow: {label} {_duration(top_value)}{where}",
        summary=(
            f"{label} was {_duration(top_value)} over the last {window}{where}, "
            f"above {_duration(rule.above_ms)} ({top_count} recipients measured)."
        ),
        subjects=frozenset(scope for _, scope, _ in breaches),
        figures={label: _duration(top_value), "threshold": _duration(rule.above_ms),
                 "window": window, "measured": str(top_count)},
        worst={scope: _duration(value) for value, scope, _ in breaches[:WORST_SHOWN]},
    )  # fmt: skip


def _delay_spike(rule: DelaySpikeRule, inputs: Inputs) -> Finding | None:
    recent_overall, recent_groups = split_groups(inputs.windows[rule.window_s])
    base_overall, base_groups = split_groups(inputs.windows[rule.baseline_s])
    recent_domains = recent_groups.get("domain", {})
    base_domains = base_groups.get("domain", {})
    if base_overall.get("c:sent", 0) - recent_overall.get("c:sent", 0) <= 0:
        return None  # no traffic before the window (a fresh start): no usual to compare
    # The baseline is the rest of baseline_s, scaled to one window.
    scale = rule.window_s / (rule.baseline_s - rule.window_s)
    series: list[tuple[str, int, float]] = []
    for name, count in recent_overall.items():
        if name.startswith("y:"):
            before = (base_overall.get(name, 0) - count) * scale
            series.append((f"type {name[2:]}", count, before))
    for domain, fields in recent_domains.items():
        count = fields.get("y", 0)
        if count:
            before = (base_domains.get(domain, Counter()).get("y", 0) - count) * scale
            series.append((domain, count, before))
    breaches = [
        (count, scope, before)
        for scope, count, before in series
        if count >= rule.min_delays and count >= rule.factor * max(before, 1.0)
    ]
    if not breaches:
        return None
    breaches.sort(key=lambda item: (-item[0], item[1]))
    count, scope, before = breaches[0]
    window = _span(rule.window_s)
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        title=f"Delivery delays spiking: {count} at {scope}",
        summary=(
            f"{count} DeliveryDelay events at {scope} in the last {window}, against about "
            f"{before:.0f} per {window} before (threshold {rule.factor:g}x, at least "
            f"{rule.min_delays})."
        ),
        subjects=frozenset(scope for _, scope, _ in breaches),
        figures={"delays": str(count), "usual": f"{before:.1f}", "window": window},
        worst={s: f"{c} (usually {b:.0f})" for c, s, b in breaches[:WORST_SHOWN]},
        example_query=SearchQuery(status="delayed"),
    )


def _status_count(rule: StatusCountRule, inputs: Inputs) -> Finding | None:
    overall, groups = split_groups(inputs.windows[rule.window_s])
    per_domain = groups.get("domain", {})
    count = overall.get("c:" + rule.status, 0)
    if count < rule.min_count:
        return None
    label = rule.status.replace("_", " ")
    window = _span(rule.window_s)
    worst = {
        domain: str(fields["c:" + rule.status])
        for domain, fields in sorted(
            per_domain.items(), key=lambda item: (-item[1].get("c:" + rule.status, 0), item[0])
        )[:WORST_SHOWN]
        if fields.get("c:" + rule.status)
    }
    why = {
        "rejected": "SES rejected them (a virus or a blocked sender): they were never sent.",
        "rendering_failed": "their template failed to render: they were never sent.",
    }.get(rule.status, "")
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        title=f"{_recipients(count)} {label} in the last {window}",
        summary=f"{_recipients(count)} {label} in the last {window}. {why}".strip(),
        subjects=frozenset({rule.status}),
        figures={label: str(count), "window": window},
        worst=worst,
        example_query=SearchQuery(status=rule.status),
    )


def _sending_disabled(rule: SendingDisabledRule, inputs: Inputs) -> Finding | None:
    paused = sorted(
        (account, status) for account, status in (inputs.accounts or {}).items()
        if not status.enabled
    )  # fmt: skip
    if not paused:
        return None
    names = ", ".join(account for account, _ in paused)
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=Severity.CRITICAL,
        title=f"SES sending is paused for account {names}",
        summary=(
            "SES reported 'Sending Status Disabled': the account cannot send email until "
            "sending is re-enabled (check the account's reputation dashboard)."
        ),
        subjects=frozenset(account for account, _ in paused),
        figures={account: f"paused since {format_ms(status.at)}" for account, status in paused},
    )


def _overdue(rule: OverdueRule, inputs: Inputs) -> Finding | None:
    waiting = [
        (message, address, status)
        for message in inputs.overdue
        for address, status in message.waiting
    ]
    if len(waiting) < rule.min_count:
        return None
    domains = Counter(address.rpartition("@")[2] or "(none)" for _, address, _ in waiting)
    plus = "+" if inputs.overdue_more else ""
    who = _recipients(len(waiting), inputs.overdue_more)
    oldest = _span((inputs.now_ms - min(m.sent_at for m in inputs.overdue)) / 1000)
    after = _span(inputs.overdue_after_s)
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        title=f"{who} overdue (no outcome {after} after sending)",
        summary=(
            f"{who} still waiting for a delivery, bounce or other outcome more than"
            f" {after} after SES accepted the message; the oldest was sent {oldest} ago."
        ),
        subjects=frozenset(domains),
        figures={"overdue recipients": f"{len(waiting)}{plus}",
                 "messages": f"{len(inputs.overdue)}{plus}", "oldest": oldest},
        worst={domain: str(n) for domain, n in domains.most_common(WORST_SHOWN)},
        examples=tuple(
            Example(message.message_id, address, status)
            for message, address, status in waiting[:WORST_SHOWN]
        ),
    )  # fmt: skip


def _tracker(rule: TrackerRule, inputs: Inputs) -> Finding | None:
    health = inputs.health
    if health is None:
        return None
    problems: dict[str, str] = {}  # subject -> what is wrong
    for source in health.sources:
        where = f"{source.name} on {source.replica}"
        if source.failure or source.state == "retrying":
            problems[f"{where}: down"] = "cannot reach its broker or queue"
        if source.stalled:
            problems[f"{where}: stalled"] = "not moving, behind: " + ", ".join(source.stalled)
        if source.dlq_blocked:
            problems[f"{where}: dlq"] = "paused, DLQ refuses: " + ", ".join(source.dlq_blocked)
        if source.lag > rule.max_lag_records:
            problems[f"{where}: lag"] = f"{source.lag:,} records behind"
        far = {p: s for p, s in source.event_lag_s.items() if s > rule.max_event_lag_s}
        if far:
            worst = max(far.values())
            problems[f"{where}: behind"] = (
                f"reading events {_span(worst)} old ({', '.join(sorted(far))})"
            )
    if health.dead_letters_recent >= rule.min_dead_letters:
        problems["dead letters"] = (
            f"{health.dead_letters_recent:,} records dead-lettered in {_span(rule.window_s)}"
        )
    if health.memory_used is not None and health.memory_max:
        ratio = health.memory_used / health.memory_max
        if ratio >= rule.memory_ratio:
            problems["store memory"] = f"{_pct(ratio)} of its memory limit used"
    if health.evicted_recent:
        problems["store evictions"] = (
            f"{health.evicted_recent:,} messages evicted in {_span(rule.window_s)}: their "
            "state is lost"
        )
    for sink, created_ms in sorted(health.outbox_oldest_ms.items()):
        age_s = (inputs.now_ms - created_ms) / 1000
        if age_s >= rule.outbox_age_s:
            problems[f"alerts to {sink}"] = f"a notice has waited {_span(age_s)} for the sink"
    if not problems:
        return None
    return Finding(
        rule=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        title=f"ses-tracker needs attention: {len(problems)} problem"
        + ("s" if len(problems) > 1 else ""),
        summary="; ".join(f"{subject}: {what}" for subject, what in problems.items()),
        subjects=frozenset(problems),
        figures=dict(list(problems.items())[:10]),
    )


_EVALUATORS = {
    RateRule: _rate,
    LatencyRule: _latency,
    DelaySpikeRule: _delay_spike,
    StatusCountRule: _status_count,
    SendingDisabledRule: _sending_disabled,
    OverdueRule: _overdue,
    TrackerRule: _tracker,
}


def _recipients(count: int, more: bool = False) -> str:
    return f"{count}{'+' if more else ''} recipient{'' if count == 1 and not more else 's'}"


def _where(by: str, top_scope: str, breaches: int) -> str:
    """`` at x.com and 2 more domains`` for a per-domain rule (`` at provider gmail
    and 1 more provider``, ...); nothing for a global one."""
    if by == "global":
        return ""
    more = breaches - 1
    noun = by.removeprefix("tag:").replace("_", " ")
    return f" at {top_scope}" + (f" and {more} more {noun}{'s' * (more > 1)}" if more else "")


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _duration(ms: float) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    return _span(seconds)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
