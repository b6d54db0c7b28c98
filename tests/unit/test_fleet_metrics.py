"""The parent of ``serve --workers``: one scrape from its workers' (service.fleet_metrics)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from service import metrics
from service.fleet_metrics import FleetMetrics
from service.settings import Settings
from tests.support import ses
from tests.support.push import admin_client


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


def values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_counters_and_histograms_add_up_and_gauges_follow_their_rule() -> None:
    fleet = FleetMetrics()
    raw = fleet.answer(
        {
            1: worker(records=770, leader=0, lag=3, up=1, clients=2, merges=10),
            2: worker(records=755, leader=1, lag=9, up=0, clients=5, merges=4),
        },
        alive=[1, 2],
    )
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
    app = create_app(Settings(_env_file=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
            admin_client(app) as admin,
        ):
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
