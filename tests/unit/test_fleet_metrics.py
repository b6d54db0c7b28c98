"""The parent of ``serve --workers``: one scrape from its workers' (service.fleet_metrics)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.fleet_metrics import FleetMetrics
from service.settings import Settings
from tests.support import ses
from tests.support.push import in_process


def worker(records: int, leader: int, lag: float, up: int, clients: int, merges: int) -> str:
    # As prometheus_client's generate_latest writes them.
    return f"""# HELP ses_tracker_records_total Records read, by source.
# TYPE ses_tracker_records_total counter
ses_tracker_records_total{{source="kafka"}} {records}
# HELP ses_tracker_records_created Records read, by source.
# TYPE ses_tracker_records_created gauge
ses_tracker_records_created{{source="kafka"}} 1.7e9
# HELP ses_tracker_alert_leader 1 when this replica holds the alert lease.
# TYPE ses_tracker_alert_leader gauge
ses_tracker_alert_leader {leader}
# HELP ses_tracker_kafka_lag Lag.
# TYPE ses_tracker_kafka_lag gauge
ses_tracker_kafka_lag{{partition="t:0"}} {lag}
# HELP ses_tracker_consumer_up Up.
# TYPE ses_tracker_consumer_up gauge
ses_tracker_consumer_up{{consumer="kafka"}} {up}
# HELP ses_tracker_websocket_clients Clients.
# TYPE ses_tracker_websocket_clients gauge
ses_tracker_websocket_clients {clients}
# HELP ses_tracker_store_merge_seconds Merge time.
# TYPE ses_tracker_store_merge_seconds histogram
ses_tracker_store_merge_seconds_bucket{{le="0.01",store="RedisStore"}} {merges}
ses_tracker_store_merge_seconds_bucket{{le="+Inf",store="RedisStore"}} {merges}
ses_tracker_store_merge_seconds_count{{store="RedisStore"}} {merges}
ses_tracker_store_merge_seconds_sum{{store="RedisStore"}} {merges / 1000}
"""


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def values(text: bytes | tuple[bytes, list[int]]) -> Samples:
    if isinstance(text, tuple):
        text = text[0]
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_counters_and_histograms_add_up_and_gauges_follow_their_rule() -> None:
    fleet = FleetMetrics()
    raw, unreadable = fleet.answer(
        {
            1: worker(records=770, leader=0, lag=3, up=1, clients=2, merges=10),
            2: worker(records=755, leader=1, lag=9, up=0, clients=5, merges=4),
        },
        alive=[1, 2],
    )
    assert unreadable == []
    # Types survive, so Prometheus reads a counter as a counter.
    assert b"# TYPE ses_tracker_records_total counter" in raw
    assert b"# TYPE ses_tracker_store_merge_seconds histogram" in raw
    answer = values(raw)
    assert answer[("ses_tracker_records_total", (("source", "kafka"),))] == 1_525
    assert answer[("ses_tracker_alert_leader", ())] == 1  # max: the one that leads
    assert answer[("ses_tracker_kafka_lag", (("partition", "t:0"),))] == 9  # max: the worst
    assert answer[("ses_tracker_consumer_up", (("consumer", "kafka"),))] == 0  # min: any down
    assert answer[("ses_tracker_websocket_clients", ())] == 7  # sum: each its own
    bucket = ("ses_tracker_store_merge_seconds_bucket", (("le", "0.01"), ("store", "RedisStore")))
    assert answer[bucket] == 14
    assert answer[("ses_tracker_store_merge_seconds_count", (("store", "RedisStore"),))] == 14
    assert not any(name.endswith("_created") for name, _ in answer)


def test_a_worker_replaced_or_silent_never_takes_a_total_backwards() -> None:
    fleet = FleetMetrics()
    fleet.answer({1: worker(100, 0, 0, 1, 1, 1), 2: worker(50, 1, 0, 1, 1, 1)}, alive=[1, 2])
    records = ("ses_tracker_records_total", (("source", "kafka"),))
    # Worker 2 misses a scrape: its totals count as last seen, its gauges do not.
    silent = values(fleet.answer({1: worker(120, 0, 0, 1, 1, 1)}, alive=[1, 2]))
    assert silent[records] == 170
    assert silent[("ses_tracker_websocket_clients", ())] == 1
    # Worker 2 died and worker 3 replaced it: 2's figures stay in the totals.
    replaced = values(
        fleet.answer({1: worker(130, 0, 0, 1, 1, 1), 3: worker(5, 1, 0, 1, 1, 1)}, alive=[1, 3])
    )
    assert replaced[records] == 130 + 50 + 5
    later = values(
        fleet.answer({1: worker(140, 0, 0, 1, 1, 1), 3: worker(9, 1, 0, 1, 1, 1)}, alive=[1, 3])
    )
    assert later[records] == 140 + 50 + 9


def test_every_gauge_the_service_defines_has_an_aggregation() -> None:
    """A gauge added to service.metrics without saying how workers add up fails here."""
    source = Path(metrics.__file__).read_text()
    defined = set(re.findall(r'GaugeMetricFamily,?\s*\(?\s*"(ses_tracker_[a-z_]+)"', source))
    defined |= set(re.findall(r'\(GaugeMetricFamily, "(ses_tracker_[a-z_]+)"', source))
    assert defined, "no gauges found: the pattern no longer matches service/metrics.py"
    assert defined <= metrics.GAUGE_AGGREGATION.keys(), defined - metrics.GAUGE_AGGREGATION.keys()


async def test_every_gauge_in_a_scrape_has_an_aggregation() -> None:
    async with in_process(Settings(_env_file=None)) as (client, admin):
        await client.post("/v1/events", content=ses.dumps(ses.send("g-1", ["a@x.com"])))
        text = (await admin.get("/metrics")).text
    gauges = {
        family.name
        for family in text_string_to_metric_families(text)
        if family.type == "gauge"
        and family.name.startswith("ses_tracker_")
        and not family.name.endswith("_created")  # a counter's creation time
    }
    assert gauges
    assert gauges <= metrics.GAUGE_AGGREGATION.keys(), gauges - metrics.GAUGE_AGGREGATION.keys()


def test_a_figure_that_drops_within_one_pid_carries_what_it_had_reached() -> None:
    """A reused pid, or a counter object made anew (a subscription removed and put
    back): the sum must not drop, or rate() reads a reset and a false spike."""
    fleet = FleetMetrics()
    records = ("ses_tracker_records_total", (("source", "kafka"),))
    fleet.answer({7: worker(1_000, 0, 0, 1, 1, 1), 8: worker(10, 1, 0, 1, 1, 1)}, alive=[7, 8])
    dropped = values(fleet.answer({7: worker(3, 0, 0, 1, 1, 1), 8: worker(10, 1, 0, 1, 1, 1)},
                                  alive=[7, 8]))  # fmt: skip
    assert dropped[records] == 1_000 + 3 + 10
    later = values(fleet.answer({7: worker(5, 0, 0, 1, 1, 1), 8: worker(12, 1, 0, 1, 1, 1)},
                                alive=[7, 8]))  # fmt: skip
    assert later[records] == 1_000 + 5 + 12
    # And when that pid goes, what it carried stays in the total.
    gone = values(fleet.answer({8: worker(13, 1, 0, 1, 1, 1)}, alive=[8]))
    assert gone[records] == 1_000 + 5 + 13


def test_a_scrape_that_cannot_be_read_is_left_out_not_fatal() -> None:
    fleet = FleetMetrics()
    body, unreadable = fleet.answer(
        {1: worker(10, 1, 0, 1, 1, 1), 2: "ses_tracker_records_total{source= garbled"},
        alive=[1, 2],
    )
    assert unreadable == [2]
    assert values(body)[("ses_tracker_records_total", (("source", "kafka"),))] == 10
