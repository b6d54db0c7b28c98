import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import stats
from service.dimensions import Dimensions
from service.stats import (
    Counting,
    LiveBucket,
    bin_of,
    percentiles,
    summarize,
    transition_names,
)
from tests.support import ses
from tests.support.fold import SEEN_MS, changes, fold, summed
from tests.support.strategies import deliveries, message_events

T = ses.SENT_AT


def exact(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_the_sketch_relative_accuracy(seed: int) -> None:
    rng = random.Random(seed)
    values = [max(1, int(rng.lognormvariate(7.0, 1.2))) for _ in range(20_000)]
    bins = Counter(bin_of(v) for v in values)
    result = percentiles(bins.items())
    assert result["count"] == len(values)
    for label, q in stats.QUANTILES.items():
        truth = exact(values, q)
        assert abs(result[label] - truth) <= stats.RELATIVE_ACCURACY * truth + 0.5, (label, truth)
    assert abs(result["max"] - max(values)) <= stats.RELATIVE_ACCURACY * max(values) + 0.5


def test_zeros_and_empty_windows() -> None:
    assert percentiles([("z", 3)]) == {"count": 3, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    assert percentiles([]) == {"count": 0}


def test_a_new_recipient_counts_as_sent_and_in_the_status_it_arrives_in() -> None:
    assert transition_names(None, 0, -1, "") == ["c:sent"]
    assert transition_names(None, 2, 2, "l:send_to_delivery:356") == [
        "c:sent",
        "c:delivered",
        "l:send_to_delivery:356",
    ]
    # A delivery that lands on a recipient already bounced is no delivery step.
    assert transition_names(3, 2, 3, "l:send_to_bounce:1") == ["c:delivered"]


def test_a_transition_counts_overall_and_once_under_each_group() -> None:
    counters = LiveBucket()
    groups = ("configuration_set=news", "domain=x.com", "provider=other")
    counters.transition(groups, ["c:sent", "c:delivered"])
    figures = {k: v for k, v in counters.items() if k[:2] in ("c:", "g:")}
    assert figures == {
        "c:sent": 1,
        "c:delivered": 1,
        **{f"g:{group}|{name}": 1 for group in groups for name in ("c:sent", "c:delivered")},
    }


def test_summary_shape_rates_and_domains() -> None:
    buckets: dict = {}
    records = [
        ses.send("m1", ["a@gmail.com", "b@yahoo.com"]),
        ses.delivery("m1", ["a@gmail.com"], T + 1_200),
    ]
    records += [ses.bounce("m1", ["b@yahoo.com"], T + 3_000)]
    fold([records], seen_ms=T + 5_000, counters=changes(buckets, now_ms=T + 5_000))
    summary = summarize(summed(buckets), 300)
    assert summary["window_s"] == 300
    assert summary["counts"]["sent"] == 2 and summary["counts"]["delivered"] == 1
    assert summary["rates"] == {"bounce": 0.5, "complaint": 0.0}
    assert summary["latency_ms"]["send_to_delivery"]["count"] == 1
    assert abs(summary["latency_ms"]["send_to_delivery"]["p50"] - 1_200) <= 12
    assert summary["latency_ms"]["ingest_lag"]["count"] == 3
    assert set(summary["by_domain"]) == {"gmail.com", "yahoo.com"}
    assert summary["by_domain"]["yahoo.com"]["rates"]["bounce"] == 1.0
    assert summarize(Counter(), 60)["rates"] == {"bounce": None, "complaint": None}


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_each_change_is_counted_once_whatever_the_order_and_repeats(data: st.DataObject) -> None:
    events = data.draw(message_events())
    once_buckets: dict = {}
    repeated_buckets: dict = {}
    fold([events], counters=changes(once_buckets))
    fold(data.draw(deliveries(events)), counters=changes(repeated_buckets))
    once, repeated = summed(once_buckets), summed(repeated_buckets)
    # Status counts and latencies describe each recipient's changes exactly once, so
    # they can differ only where the order itself changes the path (e.g. a recipient
    # first seen delayed vs first seen sent then delayed is the same count).
    for field in ("c:sent", "l:ingest_lag"):
        assert sum(v for k, v in once.items() if k.startswith(field)) == sum(
            v for k, v in repeated.items() if k.startswith(field)
        )


# --- 6. bounded cardinality -------------------------------------------------------


def test_a_bucket_admits_a_bounded_number_of_values_per_dimension() -> None:
    from service import stats

    bucket = LiveBucket()
    names = ["c:sent", "c:delivered", "l:send_to_delivery:356"]
    for n in range(1_000):
        bucket.transition(("configuration_set=news", f"domain=d{n}.example"), names)
    counters = bucket.fields()
    domains = {f[2:].rpartition("|")[0] for f in counters if f.startswith("g:domain=")}
    assert len(domains) == stats.LIVE_GROUP_CAP + 1  # the first ones, and (other)
    assert counters["g:domain=(other)|c:sent"] == 1_000 - stats.LIVE_GROUP_CAP
    # One dimension's many values take no room from another's.
    assert counters["g:configuration_set=news|c:sent"] == 1_000
    body = summarize(counters, 300, by="domain")
    assert len(body["by_domain"]) == stats.TOP_GROUPS + 1
    assert sum(g["counts"]["sent"] for g in body["by_domain"].values()) == 1_000
    assert body["counts"]["sent"] == 1_000
    groups = body["by"]["groups"]
    assert body["by"]["dimension"] == "domain" and len(groups) == stats.TOP_GROUPS + 1
    assert groups[-1]["key"] == "(other)"
    assert sum(g["counts"]["sent"] for g in groups) == 1_000


def test_each_dimension_adds_up_to_the_overall_figures() -> None:
    dimensions = Dimensions(tags=("campaign",))
    records = []
    for n, (domain, config, campaign) in enumerate(
        [
            ("gmail.com", "news", "spring"),
            ("hotmail.com", "news", "spring"),
            ("outlook.com", "receipts", None),
            ("corp.example", "receipts", "autumn"),
            ("icloud.com", None, "spring"),
        ]
    ):
        send = ses.send(f"m{n}", [f"a{n}@{domain}"])
        tags = send["mail"]["tags"]
        tags.pop("ses:configuration-set")
        if config:
            tags["ses:configuration-set"] = [config]
        if campaign:
            tags["campaign"] = [campaign]
        delivered = ses.delivery(f"m{n}", [f"a{n}@{domain}"], T + 1_000 * (n + 1))
        delivered["mail"]["tags"] = tags
        records += [send, delivered]
    buckets: dict = {}
    fold([records], counters=changes(buckets), dimensions=dimensions)
    body = summed(buckets)
    for dimension in dimensions.names:
        by = summarize(body, 300, by=dimension)
        groups = {g["key"]: g["counts"]["delivered"] for g in by["by"]["groups"]}
        assert sum(groups.values()) == by["counts"]["delivered"] == 5, dimension
    provider = {
        g["key"]: g["counts"]["sent"] for g in summarize(body, 300, "provider")["by"]["groups"]
    }
    assert provider == {"microsoft": 2, "gmail": 1, "apple": 1, "other": 1}
    campaign = summarize(body, 300, "tag:campaign")["by"]["groups"]
    assert {g["key"]: g["counts"]["sent"] for g in campaign} == {
        "spring": 3,
        "autumn": 1,
        "(none)": 1,
    }
    identity = summarize(body, 300, "identity")["by"]["groups"]
    assert [g["key"] for g in identity] == ["shop.example"]


def test_history_rollups_count_each_change_in_its_own_hour_and_day() -> None:
    day = 86_400_000
    now = T + 30 * day
    live: dict = {}
    rollups: dict = {}
    records = [
        ses.send("old", ["a@gmail.com"], T),
        ses.delivery("old", ["a@gmail.com"], T + 3_600_000),  # the next hour
        ses.send("new", ["b@gmail.com"], now - 60_000),
    ]
    fold([records], seen_ms=now, counters=changes(live, rollups, now_ms=now))
    hour = stats.hour_of(T)
    assert rollups[("hour", hour)]["c:sent"] == 1
    assert rollups[("hour", hour + 3_600)]["c:delivered"] == 1
    assert rollups[("hour", hour + 3_600)]["g:provider=gmail|c:delivered"] == 1
    days = {start: r for (step, start), r in rollups.items() if step == "day"}
    assert sum(r["c:sent"] for r in days.values()) == 2
    assert sum(r["c:delivered"] for r in days.values()) == 1
    assert rollups[("day", stats.day_of(now - 60_000))]["c:sent"] == 1
    # A month-old change is history only; ingest lag never enters history.
    assert summed(live)["c:sent"] == 1
    assert not any(k.startswith("l:ingest_lag") for r in rollups.values() for k in r)
    # Past history_days, nothing; with no history, no rollups at all.
    kept: dict = {}
    fold([records], seen_ms=now, counters=changes({}, kept, now_ms=now, history_days=7))
    assert set(kept) == {("hour", stats.hour_of(now - 60_000)), ("day", stats.day_of(now - 60_000))}
    # Hourly rollups are kept for fewer days than daily ones.
    tiered: dict = {}
    fold([records], seen_ms=now, counters=changes({}, tiered, now_ms=now, hourly_days=7))
    assert ("hour", hour) not in tiered and ("day", stats.day_of(T)) in tiered
    assert ("hour", stats.hour_of(now - 60_000)) in tiered
    none: dict = {}
    fold([records], seen_ms=now, counters=changes({}, none, now_ms=now, history_days=0))
    assert none == {}


def test_a_replay_counts_history_and_nothing_live() -> None:
    live: dict = {}
    rollups: dict = {}
    counting = Counting(SEEN_MS, live=False)
    fold([[ses.send("m", ["a@x.com"])]], counters=stats.Changes(counting, live, rollups))
    assert live == {} and rollups[("day", stats.day_of(T))]["c:sent"] == 1


def test_unknown_delay_types_count_as_undetermined() -> None:
    from service.codec import encode_batch
    from tests.support import ses
    from tests.support.fold import events_of

    record = ses.delay("m", ["a@x.com"], ses.SENT_AT + 5)
    record["deliveryDelay"]["delayType"] = "attacker-chosen-" + "x" * 200
    [write] = encode_batch(list(events_of([record])), ses.SENT_AT + 10)
    assert "y:Undetermined" in write.events[0].once_fields
