"""Live windows stay bounded under a flood of group values (issue #23, point 5):
admission is shared by the buckets of an hour, and a bucket keeps its overall
figures apart from each dimension's groups."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from service import stats
from service.alerts.evaluate import dimensions_needed
from service.alerts.rules import RuleSet
from service.alerts.windows import WindowReader
from service.codec import encode_batch
from service.stores import MemoryStore
from tests.support import ses
from tests.support.fold import events_of

# Not on an hour: an hour's window then spans two hours' admission.
NOW = 1_800_001_234_000
FLOOD = 79_200  # the issue's: 220 a bucket for an hour, each its own values


def flood_write(n: int, at: int) -> SimpleNamespace:
    """What Changes reads of a message: its own configuration set and identity."""
    return SimpleNamespace(
        groups=(f"configuration_set=cs{n}", f"identity=id{n}.example"),
        providers={},
        first_bucket=stats.live_bucket(at, NOW),
        first_at=at,
    )


def test_after_an_hour_long_flood_of_values_a_window_holds_at_most_twice_the_cap() -> None:
    live: dict = {}
    changes = stats.Changes(stats.Counting(NOW, history_days=0), live, {})
    span_ms = stats.MAX_WINDOW_S * 1000 - stats.BUCKET_S * 1000
    for n in range(FLOOD):
        at = NOW - span_ms + n * span_ms // FLOOD
        changes.transition(flood_write(n, at), None, f"x@d{n}.example", None, 0)
    first, last = stats.window_buckets(NOW, stats.MAX_WINDOW_S)
    window: Counter[str] = Counter()
    for bucket, counters in live.items():
        if first <= bucket <= last:
            window.update(counters)
    overall, groups = stats.split_groups(window)
    assert overall["c:sent"] == FLOOD
    for dimension in ("configuration_set", "identity", "domain"):
        values = groups[dimension]
        assert len(values) <= 2 * stats.LIVE_GROUP_CAP + 1, dimension  # and (other)
        assert sum(fields["c:sent"] for fields in values.values()) == FLOOD
        assert values[stats.OTHER]["c:sent"] >= FLOOD - 2 * stats.LIVE_GROUP_CAP
    # Fields, not only values: the window is a few thousand, not 857k.
    assert len(window) <= 4 * (2 * stats.LIVE_GROUP_CAP + 1) + 10


def test_the_buckets_of_an_hour_share_their_admission() -> None:
    live: dict = {}
    changes = stats.Changes(stats.Counting(NOW, history_days=0), live, {})
    hour = stats.admission_hour(stats.bucket_of(NOW))
    first = hour + 10
    for n in range(stats.LIVE_GROUP_CAP):
        changes.transition(
            SimpleNamespace(groups=(), providers={}, first_bucket=first, first_at=0),
            None,
            f"a@d{n}.example",
            None,
            0,
        )
    later = SimpleNamespace(groups=(), providers={}, first_bucket=hour + 600, first_at=0)
    changes.transition(later, None, "a@new.example", None, 0)  # past the hour's cap
    changes.transition(later, None, "a@d7.example", None, 0)  # admitted earlier
    assert live[hour + 600]["g:domain=(other)|c:sent"] == 1
    assert live[hour + 600]["g:domain=d7.example|c:sent"] == 1
    assert "g:domain=new.example|c:sent" not in live[hour + 600]
    # Another hour (the one before) admits afresh.
    other_hour = SimpleNamespace(groups=(), providers={}, first_bucket=hour - 3_590, first_at=0)
    changes.transition(other_hour, None, "a@new.example", None, 0)
    assert live[hour - 3_590]["g:domain=new.example|c:sent"] == 1


def test_a_live_bucket_keeps_overall_figures_apart_from_each_dimension() -> None:
    bucket = stats.LiveBucket()
    groups = ("configuration_set=news", "domain=x.com", "provider=other")
    bucket.transition(groups, ["c:sent", "c:delivered", "l:send_to_delivery:356"])
    bucket.once(["y:General", "g:domain=x.com|y"])
    assert bucket.overall == {
        "c:sent": 1,
        "c:delivered": 1,
        "l:send_to_delivery:356": 1,
        "y:General": 1,
    }
    assert set(bucket.groups) == {"configuration_set", "domain", "provider"}
    assert bucket.fields(()) == bucket.overall
    assert set(bucket.fields(("domain",))) - set(bucket.overall) == {
        "g:domain=x.com|c:sent",
        "g:domain=x.com|c:delivered",
        "g:domain=x.com|l:send_to_delivery:356",
        "g:domain=x.com|y",
    }
    assert bucket.fields() == Counter(dict(bucket.items())) and len(bucket) == 4 + 3 * 3 + 1


def flood_records(count: int, sent_at: int) -> list[dict]:
    records = []
    for n in range(count):
        send = ses.send(f"f{n}", [f"x@d{n}.example"], sent_at=sent_at)
        send["mail"]["tags"] = {
            "ses:configuration-set": [f"cs{n}"],
            "ses:from-domain": [f"id{n}.example"],
        }
        records.append(send)
    return records


def test_a_memory_store_reads_only_the_dimensions_asked_for() -> None:
    async def run() -> None:
        store = MemoryStore()
        writes = encode_batch(list(events_of(flood_records(300, NOW - 5_000))), NOW)
        await store.merge(writes, None, stats.Counting(NOW))
        bucket = stats.bucket_of(NOW - 5_000)
        [overall] = await store.read_buckets([bucket], ())
        assert overall == {"c:sent": 300, **{k: v for k, v in overall.items() if k[:2] == "l:"}}
        [domains] = await store.read_buckets([bucket], ("domain",))
        assert {f.partition("=")[0] for f in domains if f.startswith("g:")} == {"g:domain"}
        assert sum(n for f, n in domains.items() if f.endswith("|c:sent")) == 300
        [every] = await store.read_buckets([bucket])
        dimensions = {f[2:].partition("=")[0] for f in every if f.startswith("g:")}
        assert dimensions == {"configuration_set", "identity", "domain", "provider"}
        assert await store.read_stats(bucket, bucket, ("domain",)) == domains

    asyncio.run(run())


def test_alert_windows_read_only_the_dimensions_rules_judge() -> None:
    rules = RuleSet.model_validate(
        {
            "rules": [
                {"name": "b", "kind": "bounce_rate", "warn": 0.05, "by": "provider"},
                {"name": "c", "kind": "complaint_rate", "warn": 0.001},
            ]
        }
    ).rules
    assert dimensions_needed(rules) == {"domain", "provider"}

    async def run() -> None:
        store = MemoryStore()
        writes = encode_batch(list(events_of(flood_records(50, NOW - 5_000))), NOW)
        await store.merge(writes, None, stats.Counting(NOW))
        reader = WindowReader(store, [300], dimensions_needed(rules))
        window = (await reader.read(NOW))[300]
        _, groups = stats.split_groups(window)
        assert set(groups) == {"domain", "provider"}
        assert window["c:sent"] == 50

    asyncio.run(run())
