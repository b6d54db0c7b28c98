"""When alerts are notified: group_wait, group_interval, repeat_interval, resolve."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from service.alerts.lifecycle import AlertRecord, Finding, Phase, plan, step
from service.alerts.model import AlertState, Severity
from service.alerts.rules import Timing

TIMING = Timing(group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)
S = 1000


def finding(*subjects: str, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(
        rule="bounce-rate",
        kind="bounce_rate",
        severity=severity,
        title="Bounce rate 6%",
        summary="30 of 500 bounced",
        subjects=frozenset(subjects or ("all domains",)),
    )


def run(events: list[tuple[int, Finding | None]], timing: Timing = TIMING):
    """Feed (time, finding) in order; the last record, and notices as (time, state)."""
    record: AlertRecord | None = None
    sent = []
    for at, seen in events:
        record, notice = step(record, seen, at, timing, "http://tracker/")
        if notice is not None:
            sent.append((at, notice.state))
            assert notice.link == "http://tracker/"
    return record, sent


def test_a_new_condition_waits_out_group_wait_then_fires_once() -> None:
    record, sent = run(
        [(0, finding()), (10 * S, finding()), (30 * S, finding()), (40 * S, finding())]
    )
    assert sent == [(30 * S, AlertState.FIRING)]
    assert record is not None and record.phase is Phase.FIRING and record.since_ms == 0


def test_a_blip_shorter_than_group_wait_sends_nothing() -> None:
    record, sent = run([(0, finding()), (10 * S, None), (60 * S, None)])
    assert sent == [] and record is None


def test_resolve_waits_for_group_interval_then_is_sent_once() -> None:
    events = [(0, finding()), (30 * S, finding()), (100 * S, None), (329 * S, None)]
    events += [(330 * S, None), (400 * S, None)]
    record, sent = run(events)
    assert sent == [
        (30 * S, AlertState.FIRING),
        (330 * S, AlertState.RESOLVED),
    ]
    assert record is None


def test_flapping_inside_group_interval_is_one_alert() -> None:
    events = [(0, finding()), (30 * S, finding())]
    events += [(30 * S + k * 20 * S, None if k % 2 else finding()) for k in range(1, 14)]
    _, sent = run(events)
    assert [state for _, state in sent] == [AlertState.FIRING]


def test_news_waits_for_group_interval_and_unchanged_repeats_after_repeat_interval() -> None:
    events = [(0, finding("a.com")), (30 * S, finding("a.com"))]
    events += [(60 * S, finding("a.com", "b.com")), (329 * S, finding("a.com", "b.com"))]
    events += [(330 * S, finding("a.com", "b.com")), (3929 * S, finding("a.com", "b.com"))]
    events += [(3930 * S, finding("a.com", "b.com"))]
    _, sent = run(events)
    assert [at for at, _ in sent] == [30 * S, 330 * S, 3930 * S]


def test_escalation_to_critical_is_news() -> None:
    events = [(0, finding()), (30 * S, finding())]
    events += [(400 * S, finding(severity=Severity.CRITICAL))]
    record, sent = run(events)
    assert len(sent) == 2 and record is not None and record.severity is Severity.CRITICAL


def test_zero_group_wait_fires_at_the_first_evaluation() -> None:
    _, sent = run([(0, finding())], Timing(group_wait_s=0))
    assert len(sent) == 1


def test_plan_resolves_alerts_of_rules_that_no_longer_exist_and_skips_unchanged() -> None:
    record, _ = run([(0, finding()), (30 * S, finding())])
    assert record is not None
    changes = plan({record.key: record}, {}, 10_000 * S, TIMING)
    assert changes.deletes == [record.key]
    assert [n.state for n in changes.notices] == [AlertState.RESOLVED]
    assert changes.notices[0].resolved_at == 10_000 * S
    assert not plan({record.key: record}, {record.key: finding()}, 31 * S, TIMING)


def test_records_round_trip_through_json() -> None:
    record, _ = run([(0, finding("x.com")), (30 * S, finding("x.com"))])
    assert record is not None
    assert AlertRecord.from_dict(record.to_dict()) == record


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 400), st.booleans(), st.sampled_from(["a", "b", "ab"])),
        max_size=60,
    )
)
def test_notices_keep_alertmanager_timing(steps: list[tuple[int, bool, str]]) -> None:
    now = 0
    events: list[tuple[int, Finding | None]] = []
    for gap_s, firing, subjects in steps:
        now += gap_s * S
        events.append((now, finding(*subjects) if firing else None))
    _, sent = run(events)
    states = [state for _, state in sent]
    # Episodes alternate: fire (maybe updated/repeated), then one resolve.
    for before, after in itertools.pairwise(states):
        assert not (before is AlertState.RESOLVED and after is AlertState.RESOLVED)
    if states:
        assert states[0] is AlertState.FIRING
    # Within an episode, notices are at least group_interval apart.
    for (at1, s1), (at2, _) in itertools.pairwise(sent):
        if s1 is AlertState.FIRING:
            assert at2 - at1 >= TIMING.group_interval_s * S
    # A first notice is only sent for a condition seen for group_wait (two sightings).
    sightings = {at: seen for at, seen in events}
    for at, state in sent:
        assert (sightings[at] is not None) == (state is AlertState.FIRING)
