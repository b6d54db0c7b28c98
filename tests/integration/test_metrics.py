"""GET /metrics: Prometheus text, read back with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import asyncio as aioredis

from api.app import create_app
from consumers.base import Source
from service.runtime import Runtime
from service.settings import Settings
from tests.support import ses
from tests.support.push import admin_client, in_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T = ses.SENT_AT


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class FakeKafka(Source):
    name = "kafka"

    def __init__(self) -> None:
        super().__init__()
        self.connected = True

    async def run(self) -> None:
        await self._stopping.wait()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "lag": {"ses-events:0": 7}, "dead_lettered": 2}


async def scrape(settings: Settings, body: bytes, extra_source: Source | None = None, headers=None):
    holder: dict[str, Runtime] = {}

    def on_start(runtime: Runtime) -> None:
        if extra_source is not None:
            runtime.sources.append(extra_source)
        holder["runtime"] = runtime

    app = create_app(settings, on_start=on_start)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
            admin_client(app) as admin,
        ):
            await client.post("/v1/events", content=body, headers=headers or {})
            return await admin.get("/metrics")


async def test_counts_rejections_merges_and_latencies_are_exposed() -> None:
    body = b"\n".join(
        [
            ses.dumps(ses.send("m-1", ["a@x.com"])),
            ses.dumps(ses.delivery("m-1", ["a@x.com"], T + 1_500)),
            ses.dumps(ses.bounce("m-2", ["b@x.com"], T + 4_000)),
            b"{not json",
        ]
    )
    response = await scrape(Settings(_env_file=None), body, FakeKafka())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("ses_tracker_records_total", (("source", "http"),))] == 4
    assert found[("ses_tracker_events_total", (("source", "http"), ("type", "delivery")))] == 1
    assert found[("ses_tracker_events_total", (("source", "http"), ("type", "send")))] == 1
    reason = (("reason", "invalid_json"), ("source", "http"))
    assert found[("ses_tracker_records_rejected_total", reason)] == 1
    assert found[("ses_tracker_store_merge_seconds_count", (("store", "MemoryStore"),))] == 1
    # m-1 went sent -> delivered after 1.5 s; m-2 was first seen already bounced (no
    # Send event, as in setups that do not publish it) and still counts, 4 s after send.
    delivered = (("le", "2.0"), ("step", "send_to_delivery"))
    assert found[("ses_tracker_email_latency_seconds_bucket", delivered)] == 1
    assert found[("ses_tracker_email_latency_seconds_count", (("step", "send_to_delivery"),))] == 1
    bounced = (("le", "2.0"), ("step", "send_to_bounce"))
    assert found[("ses_tracker_email_latency_seconds_bucket", bounced)] == 0
    assert found[("ses_tracker_email_latency_seconds_count", (("step", "send_to_bounce"),))] == 1
    assert found[("ses_tracker_memory_store_messages", ())] == 2
    assert found[("ses_tracker_memory_store_dropped_total", (("kind", "suppressions"),))] == 0
    assert found[("ses_tracker_memory_store_dropped_total", (("kind", "forward_outbox"),))] == 0
    assert found[("ses_tracker_consumer_up", (("consumer", "kafka"),))] == 1
    assert found[("ses_tracker_kafka_lag", (("partition", "ses-events:0"),))] == 7
    assert found[("ses_tracker_dead_lettered_total", (("consumer", "kafka"),))] == 2


async def test_recipient_statuses_carry_bounded_provider_and_configuration_set_labels() -> None:
    """#14: provider and configuration_set labels, bounded whatever senders tag."""
    from service import metrics

    records = [
        ses.send("m-g", ["a@gmail.com"]),
        ses.delivery("m-g", ["a@gmail.com"], T + 1_000),
        ses.bounce("m-h", ["b@hotmail.com"], T + 2_000),  # first seen bounced: sent too
    ]
    for n in range(metrics.MAX_CONFIGURATION_SET_LABELS + 5):
        send = ses.send(f"m-set-{n}", [f"c{n}@corp.example"])
        send["mail"]["tags"]["ses:configuration-set"] = [f"set-{n:03d}"]
        records.append(send)
    response = await scrape(Settings(_env_file=None), ses.dumps(*records), FakeKafka())
    found = samples(response.text)
    name = "ses_tracker_recipient_statuses_total"

    def count(status: str, provider: str, configuration_set: str) -> float:
        labels = (
            ("configuration_set", configuration_set),
            ("provider", provider),
            ("status", status),
        )
        return found.get((name, labels), 0)

    assert count("sent", "gmail", "transactional") == 1
    assert count("delivered", "gmail", "transactional") == 1
    assert count("sent", "microsoft", "transactional") == 1
    assert count("bounced", "microsoft", "transactional") == 1
    sets = {dict(labels)["configuration_set"] for (metric, labels) in found if metric == name}
    # transactional came first, then 49 of the 55 sets; the other 6 share one label.
    assert len(sets) == metrics.MAX_CONFIGURATION_SET_LABELS + 1
    assert count("sent", "other", "(other)") == 6


async def test_event_time_lag_is_in_readyz_and_metrics_and_says_when_catching_up() -> None:
    # Firehose redelivering an hour of events after an endpoint outage, say.
    clock = ses.clock_from(T + 3_600_000)
    async with in_process(Settings(_env_file=None), clock) as (client, admin):
        ready = (await client.get("/readyz")).json()
        assert ready["event_lag_s"] == {} and ready["catching_up"] == {}
        await client.post("/v1/events", content=ses.dumps(ses.send("m-old", ["a@x.com"])))
        ready = (await client.get("/readyz")).json()
        [[position, lag_s]] = ready["event_lag_s"]["push"].items()
        assert position == "http" and 3_600 <= lag_s < 3_610
        assert ready["catching_up"] == {"push http": lag_s}
        assert ready["catch_up_after_s"] == 900
        found = samples((await admin.get("/metrics")).text)
        gauge = found[("ses_tracker_event_lag_seconds", (("position", "http"), ("source", "push")))]
        assert 3_600 <= gauge < 3_610
        fresh = ses.send("m-new", ["a@x.com"], T + 3_600_000 - 2_000)
        await client.post("/v1/events", content=ses.dumps(fresh))
        ready = (await client.get("/readyz")).json()
        assert ready["catching_up"] == {} and ready["event_lag_s"]["push"]["http"] < 10


async def test_metrics_are_on_the_admin_routes_only() -> None:
    # The deprecated METRICS_REQUIRE_TOKEN changes nothing: the admin port is the
    # protection, and the public port has no /metrics to protect.
    settings = Settings(_env_file=None, api_token="tok", metrics_require_token=True)
    async with in_process(settings) as (public, admin):
        token = {"Authorization": "Bearer tok"}
        assert (await public.get("/metrics", headers=token)).status_code == 404
        assert (await admin.get("/metrics")).status_code == 200
        # The admin port has nothing but its four routes.
        assert (await admin.get("/v1/stats")).status_code == 404
        assert (await admin.get("/openapi.json")).status_code == 404
        assert (await admin.get("/docs")).status_code == 404


async def test_the_statistics_projection_is_measured_with_redis(redis_server) -> None:
    settings = Settings(_env_file=None, redis_url=redis_server.url, cache_ttl_s=0)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    await client.aclose()
    body = ses.dumps(ses.send("metrics-projection", ["a@gmail.com"]))
    response = await scrape(settings, body)
    found = samples(response.text)
    labels = (("projection", "stats"),)
    assert found[("ses_tracker_projection_entries_applied_total", labels)] == 1
    assert found[("ses_tracker_projection_runs_total", labels)] >= 1
    assert found[("ses_tracker_projection_leases", labels)] == 1
    assert found[("ses_tracker_projection_fell_behind_total", labels)] == 0
    assert found[("ses_tracker_projection_skipped_total", labels)] == 0
    assert 0 <= found[("ses_tracker_projection_delay_seconds", labels)] < 5
    # Erasures: the runner's figures and the merges they made strip again.
    assert found[("ses_tracker_erasures_finished_total", ())] == 0
    assert found[("ses_tracker_erasure_failures_total", ())] == 0
    assert found[("ses_tracker_merge_calls_restripped_total", ())] == 0
