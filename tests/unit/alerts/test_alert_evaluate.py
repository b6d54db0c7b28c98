"""Each rule kind, as a pure function from window counters to a finding."""

from __future__ import annotations

from collections import Counter

import pytest

from service.alerts.evaluate import (
    AccountStatus,
    Inputs,
    OverdueMessage,
    SourceHealth,
    TrackerHealth,
    evaluate,
)
from service.alerts.model import Severity
from service.alerts.rules import TrackerRule, parse_rules
from service.codec import encode_batch
from service.stats import Counting, bin_of, window_buckets
from service.stores import MemoryStore
from tests.support import ses
from tests.support.fold import events_of

NOW = 1_800_000_000_000


def rules(text: str):
    return parse_rules("rules:\n" + text).rules


def counters(**domains: dict[str, int]) -> Counter[str]:
    """Window counters with per-domain fields and their overall sums."""
    total: Counter[str] = Counter()
    for domain, fields in domains.items():
        for name, count in fields.items():
            total[f"g:domain={domain.replace('_', '.')}|{name}"] += count
            total[name] += count
    return total


def inputs(window: Counter[str], **more) -> Inputs:
    return Inputs(NOW, {300: window, 3600: window, 600: window}, **more)


def test_bounce_rate_needs_volume_and_grades_severity() -> None:
    rule = rules("  - {name: b, kind: bounce_rate, warn: 0.02, critical: 0.04, min_sent: 100}")
    few = counters(x_com={"c:sent": 50, "c:bounced": 25})
    assert evaluate(rule, inputs(few)) == {"b": None}
    calm = counters(x_com={"c:sent": 1000, "c:bounced": 19})
    assert evaluate(rule, inputs(calm)) == {"b": None}
    warm = counters(x_com={"c:sent": 600, "c:bounced": 6}, y_com={"c:sent": 400, "c:bounced": 24})
    found = evaluate(rule, inputs(warm))["b"]
    assert found is not None and found.severity is Severity.WARNING
    assert found.figures["bounce rate"] == "3% (30 of 1000)"
    assert list(found.worst) == ["y.com", "x.com"]  # worst first
    assert found.subjects == {"all domains"}
    assert found.example_query is not None and found.example_query.status == "bounced"
    hot = counters(x_com={"c:sent": 100, "c:bounced": 5})
    assert evaluate(rule, inputs(hot))["b"].severity is Severity.CRITICAL  # type: ignore[union-attr]


def test_by_domain_names_each_breaching_domain() -> None:
    rule = rules("  - {name: b, kind: bounce_rate, warn: 0.05, min_sent: 10, by: domain}")
    window = counters(
        a_com={"c:sent": 100, "c:bounced": 10},
        b_com={"c:sent": 100, "c:bounced": 1},
        c_com={"c:sent": 20, "c:bounced": 2},
        d_com={"c:sent": 5, "c:bounced": 5},  # under min_sent
    )
    found = evaluate(rule, inputs(window))["b"]
    assert found is not None
    assert found.subjects == {"a.com", "c.com"}
    assert found.title == "Bounce rate 10% at a.com and 1 more domain"


def test_rules_break_down_by_any_dimension() -> None:
    """#14: complaint rate per configuration set, p95 latency per provider."""
    rule = rules(
        "  - {name: c, kind: complaint_rate, warn: 0.001, min_sent: 100, by: configuration_set}"
    )
    window = Counter(
        {
            "c:sent": 3000,
            "c:complained": 3,
            "g:configuration_set=receipts|c:sent": 2000,
            "g:configuration_set=newsletter|c:sent": 1000,
            "g:configuration_set=newsletter|c:complained": 3,
        }
    )
    found = evaluate(rule, inputs(window))["c"]
    assert found is not None
    # Overall 0.1% would not fire; the newsletter's 0.3% does, and is named.
    assert found.subjects == {"configuration_set newsletter"}
    assert found.title == "Complaint rate 0.3% at configuration_set newsletter"
    assert list(found.worst) == ["configuration_set newsletter"]
    latency = rules(
        "  - {name: l, kind: latency, percentile: 95, above_ms: 60000, min_count: 20, by: provider}"
    )
    slow = f"l:send_to_delivery:{bin_of(90_000)}"
    window = Counter({slow: 40, f"g:provider=microsoft|{slow}": 30, f"g:provider=gmail|{slow}": 10})
    found = evaluate(latency, inputs(window))["l"]
    assert found is not None and found.subjects == {"provider microsoft"}


def test_complaint_rate() -> None:
    rule = rules("  - {name: c, kind: complaint_rate, warn: 0.0005, min_sent: 1000}")
    window = counters(x_com={"c:sent": 5000, "c:complained": 4})
    found = evaluate(rule, inputs(window))["c"]
    assert found is not None and found.figures["complaint rate"] == "0.08% (4 of 5000)"


def test_latency_percentile_per_domain() -> None:
    rule = rules(
        "  - {name: l, kind: latency, percentile: 95, above_ms: 60000, min_count: 20, by: domain}"
    )
    slow = {f"l:send_to_delivery:{bin_of(1_000)}": 10, f"l:send_to_delivery:{bin_of(90_000)}": 10}
    fast = {f"l:send_to_delivery:{bin_of(800)}": 100}
    found = evaluate(rule, inputs(counters(slow_com=slow, fast_com=fast)))["l"]
    assert found is not None and found.subjects == {"slow.com"}
    assert "p95 send to delivery" in found.title and "at slow.com" in found.title
    # Fewer measurements than min_count: no verdict.
    sparse = {f"l:send_to_delivery:{bin_of(90_000)}": 19}
    assert evaluate(rule, inputs(counters(slow_com=sparse))) == {"l": None}


def test_delay_spike_against_the_baseline() -> None:
    rule = rules(
        "  - {name: d, kind: delay_spike, window_s: 300, baseline_s: 3600, min_delays: 10}"
    )
    recent = Counter(
        {"y:MailboxFull": 30, "y:General": 4, "g:domain=x.com|y": 30, "g:domain=y.com|y": 4}
    )
    recent["c:sent"] = 500
    # No traffic before the window (a fresh start): nothing to call a spike against.
    assert evaluate(rule, Inputs(NOW, {300: recent, 3600: recent})) == {"d": None}
    # The rest of the hour: 11 windows of 5 min, about 1 MailboxFull per window.
    baseline = recent + Counter({"y:MailboxFull": 11, "g:domain=x.com|y": 11, "y:General": 40})
    baseline["c:sent"] += 5000
    found = evaluate(rule, Inputs(NOW, {300: recent, 3600: baseline}))["d"]
    assert found is not None
    assert found.subjects == {"type MailboxFull", "x.com"}
    # As many delays as usual is no spike.
    usual = baseline + Counter({"y:MailboxFull": 330, "g:domain=x.com|y": 330})
    assert evaluate(rule, Inputs(NOW, {300: recent, 3600: usual})) == {"d": None}


def test_any_reject_or_rendering_failure_fires_critical() -> None:
    rule = rules(
        "  - {name: r, kind: status_count, status: rejected}\n"
        "  - {name: f, kind: status_count, status: rendering_failed}"
    )
    found = evaluate(rule, inputs(counters(x_com={"c:sent": 9, "c:rejected": 1})))
    assert found["f"] is None
    assert found["r"] is not None and found["r"].severity is Severity.CRITICAL
    assert found["r"].worst == {"x.com": "1"}


def test_sending_disabled_is_critical_until_enabled() -> None:
    rule = rules("  - {name: s, kind: sending_disabled}")
    paused = {"123": AccountStatus(False, NOW, "Sending Status Disabled")}
    found = evaluate(rule, inputs(Counter(), accounts=paused))["s"]
    assert found is not None and found.severity is Severity.CRITICAL
    assert found.subjects == {"123"}
    back = {"123": AccountStatus(True, NOW + 1, "Sending Status Enabled")}
    assert evaluate(rule, inputs(Counter(), accounts=back)) == {"s": None}


def test_overdue_counts_waiting_recipients_and_names_examples() -> None:
    rule = rules("  - {name: o, kind: overdue, min_count: 2}")
    one = [OverdueMessage("m1", NOW - 3_600_000, (("a@x.com", "sent"),))]
    assert evaluate(rule, inputs(Counter(), overdue=one)) == {"o": None}
    two = [*one, OverdueMessage("m2", NOW - 1_000_000, (("b@y.com", "delayed"),))]
    found = evaluate(rule, inputs(Counter(), overdue=two, overdue_more=True))["o"]
    assert found is not None and found.figures["overdue recipients"] == "2+"
    assert found.figures["oldest"] == "60 min"
    assert [e.message_id for e in found.examples] == ["m1", "m2"]


async def test_delays_are_counted_by_type_and_domain_in_the_stats() -> None:
    store = MemoryStore()
    events = list(events_of([ses.delay("m1", ["a@x.com", "b@y.com"], ses.SENT_AT + 5)]))
    now = ses.SENT_AT + 60_000  # a clock near the events: older ones are not live
    await store.merge(encode_batch(events, now), None, Counting(now))
    await store.merge(encode_batch(events, now), None, Counting(now))  # counts once
    window = await store.read_stats(*window_buckets(now, 300))
    assert window["y:TransientCommunicationFailure"] == 1
    assert window["g:domain=x.com|y"] == window["g:domain=y.com|y"] == 1


# --- the tracker watching itself ------------------------------------------------------


TRACKER = TrackerRule(name="tracker-health", kind="tracker")


def tracker_finding(health: TrackerHealth):
    return evaluate([TRACKER], Inputs(NOW, {}, health=health))["tracker-health"]


def test_a_healthy_tracker_is_quiet() -> None:
    ok = SourceHealth("r1", "kafka", "consuming", False, lag=10, event_lag_s={"t:0": 240.0})
    assert tracker_finding(TrackerHealth(sources=(ok,), memory_used=10, memory_max=100)) is None
    assert tracker_finding(TrackerHealth()) is None


@pytest.mark.parametrize(
    ("health", "subject"),
    [
        (TrackerHealth(sources=(SourceHealth("r1", "sqs", "retrying", True),)), "sqs on r1: down"),
        (
            TrackerHealth(sources=(SourceHealth("r1", "kafka", "consuming", False, ("t:0",)),)),
            "kafka on r1: stalled",
        ),
        (
            TrackerHealth(sources=(SourceHealth("r2", "kafka", "consuming", False, (), ("t:3",)),)),
            "kafka on r2: dlq",
        ),
        (
            TrackerHealth(sources=(SourceHealth("r1", "kafka", "consuming", False, lag=200_000),)),
            "kafka on r1: lag",
        ),
        (
            TrackerHealth(
                sources=(SourceHealth("r1", "sqs", "polling", False, event_lag_s={"q": 2_400.0}),)
            ),
            "sqs on r1: behind",
        ),
        (TrackerHealth(dead_letters_recent=3), "dead letters"),
        (TrackerHealth(memory_used=95, memory_max=100), "store memory"),
        (TrackerHealth(evicted_recent=7), "store evictions"),
        (TrackerHealth(outbox_oldest_ms={"slack:hooks": NOW - 700_000}), "alerts to slack:hooks"),
    ],
)
def test_each_tracker_problem_fires(health: TrackerHealth, subject: str) -> None:
    finding = tracker_finding(health)
    assert finding is not None and subject in finding.subjects
    assert finding.title.startswith("ses-tracker needs attention")


def test_a_young_outbox_entry_is_not_a_problem() -> None:
    assert tracker_finding(TrackerHealth(outbox_oldest_ms={"slack:x": NOW - 60_000})) is None
