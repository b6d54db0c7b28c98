import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import stats
from service.stats import (
    BucketCounters,
    LiveCounters,
    bin_of,
    percentiles,
    summarize,
    transition_fields,
)
from tests.support import ses
from tests.support.fold import fold, summed
from tests.support.strategies import deliveries, message_events

T = ses.SENT_AT


def exact(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_the_sketch_relative_accuracy(seed: int) -> None:
    rng = random.Random(seed)
    values = [max(1, int(rng.lognormvariate(7.0, 1.2))) for _ in range(20_000)]
    bins: BucketCounters = BucketCounters(bin_of(v) for v in values)
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
    assert transition_fields("a@x.com", None, 0, -1, "") == ["c:sent", "d:x.com|c:sent"]
    assert transition_fields("a@x.com", None, 2, 2, "l:send_to_delivery:356") == [
        "c:sent",
        "d:x.com|c:sent",
        "c:delivered",
        "d:x.com|c:delivered",
        "l:send_to_delivery:356",
        "d:x.com|l:send_to_delivery:356",
    ]
    # A delivery that lands on a recipient already bounced is no delivery step.
    assert transition_fields("a@x.com", 3, 2, 3, "l:send_to_bounce:1") == [
        "c:delivered",
        "d:x.com|c:delivered",
    ]
    assert transition_fields("nobody", None, 0, -1, "") == ["c:sent", "d:(none)|c:sent"]


def test_summary_shape_rates_and_domains() -> None:
    buckets: dict = {}
    records = [
        ses.send("m1", ["a@gmail.com", "b@yahoo.com"]),
        ses.delivery("m1", ["a@gmail.com"], T + 1_200),
    ]
    records += [ses.bounce("m1", ["b@yahoo.com"], T + 3_000)]
    fold([records], seen_ms=T + 5_000, counters=LiveCounters(buckets))
    summary = summarize(summed(buckets), 300)
    assert summary["window_s"] == 300
    assert summary["counts"]["sent"] == 2 and summary["counts"]["delivered"] == 1
    assert summary["rates"] == {"bounce": 0.5, "complaint": 0.0}
    assert summary["latency_ms"]["send_to_delivery"]["count"] == 1
    assert abs(summary["latency_ms"]["send_to_delivery"]["p50"] - 1_200) <= 12
    assert summary["latency_ms"]["ingest_lag"]["count"] == 3
    assert set(summary["by_domain"]) == {"gmail.com", "yahoo.com"}
    assert summary["by_domain"]["yahoo.com"]["rates"]["bounce"] == 1.0
    assert summarize(BucketCounters(), 60)["rates"] == {"bounce": None, "complaint": None}


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_each_change_is_counted_once_whatever_the_order_and_repeats(data: st.DataObject) -> None:
    events = data.draw(message_events())
    once_buckets: dict = {}
    repeated_buckets: dict = {}
    fold([events], counters=LiveCounters(once_buckets))
    fold(data.draw(deliveries(events)), counters=LiveCounters(repeated_buckets))
    once, repeated = summed(once_buckets), summed(repeated_buckets)
    # Status counts and latencies describe each recipient's changes exactly once, so
    # they can differ only where the order itself changes the path (e.g. a recipient
    # first seen delayed vs first seen sent then delayed is the same count).
    for field in ("c:sent", "l:ingest_lag"):
        assert sum(v for k, v in once.items() if k.startswith(field)) == sum(
            v for k, v in repeated.items() if k.startswith(field)
        )


# --- 6. bounded cardinality -------------------------------------------------------


def test_a_bucket_admits_a_bounded_number_of_domains() -> None:
    from service import stats

    counters = BucketCounters()
    for n in range(1_000):
        counters.transition(f"a@d{n}.example", None, 2, 2, "l:send_to_delivery:356")
    domains = {field[2:].partition("|")[0] for field in counters if field.startswith("d:")}
    assert len(domains) == stats.MAX_DOMAINS_PER_BUCKET + 1  # the first ones, and (other)
    assert counters["d:(other)|c:sent"] == 1_000 - stats.MAX_DOMAINS_PER_BUCKET
    body = summarize(counters, 300)
    assert len(body["by_domain"]) == stats.TOP_DOMAINS + 1
    assert sum(g["counts"]["sent"] for g in body["by_domain"].values()) == 1_000
    assert body["counts"]["sent"] == 1_000


def test_unknown_delay_types_count_as_undetermined() -> None:
    from service.codec import encode_batch
    from tests.support import ses
    from tests.support.fold import events_of

    record = ses.delay("m", ["a@x.com"], ses.SENT_AT + 5)
    record["deliveryDelay"]["delayType"] = "attacker-chosen-" + "x" * 200
    [write] = encode_batch(list(events_of([record])), ses.SENT_AT + 10)
    assert "y:Undetermined" in write.events[0].once_fields
