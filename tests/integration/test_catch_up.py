"""A consumer an hour behind catches up without making an incident of the past.

An hour of realistic traffic (the simulator's model, back-dated on a fake clock)
sits on a Kafka topic, with a burst of delivery delays forty minutes ago. A fresh
consumer group reads it from the start, gated so the test can act in the middle of
the catch-up. Statistics count by event time: the old burst must not fire a
delay-spike alert, a real burst pushed meanwhile (another replica's HTTP ingest)
must, and once caught up, the last five minutes must read exactly as they would on
a tracker that had been live all along.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
import pytest
from redis import asyncio as aioredis

from consumers.kafka import KafkaSource
from service.alerts.delivery import Deliverer
from service.alerts.engine import Alerting
from service.alerts.model import AlertState
from service.alerts.rules import parse_rules
from service.alerts.store import MemoryAlertStore
from service.events import SesEvent
from service.pipeline import Pipeline
from service.state import Transition
from service.stats import window_buckets
from service.stores import Checkpoint, MemoryStore, RedisStore
from service.timestamps import parse_ms
from service.traffic.model import TrafficModel
from tests.support import ses
from tests.support.clock import ManualClock
from tests.support.kafka import create_topic, produce, wait_until
from tests.support.servers import RedisServer, TansuBroker
from tests.support.sources import RunningSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOW = 1_800_000_000_000  # the fake wall clock, fixed while the consumer catches up
HOUR = 3_600_000
RULES = """
timing: {group_wait_s: 0, group_interval_s: 60, repeat_interval_s: 3600}
rules:
  - {name: delay-spike, kind: delay_spike, window_s: 300, baseline_s: 3600, factor: 3,
     min_delays: 20}
"""
_names = itertools.count()


class GatedPipeline(Pipeline):
    """Merges a batch only when the test lets one through (or opens the gate)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowed = asyncio.Semaphore(0)
        self.open = False

    def allow(self, batches: int) -> None:
        for _ in range(batches):
            self._allowed.release()

    def open_gate(self) -> None:
        self.open = True
        self.allow(1)  # the batch waiting now

    async def apply(
        self,
        events: Sequence[SesEvent],
        source: str,
        *,
        account_events: Sequence[Any] = (),
        checkpoint: Checkpoint | None = None,
    ) -> list[Transition]:
        if not self.open:
            await self._allowed.acquire()
        return await super().apply(
            events, source, account_events=account_events, checkpoint=checkpoint
        )


def an_hour_of_traffic() -> list[tuple[int, dict[str, Any]]]:
    """(visible at, record) for an hour of mail up to NOW, plus a past delay burst."""
    model = TrafficModel(random.Random(17))
    scheduled: list[tuple[int, dict[str, Any]]] = []
    for sent_at in range(NOW - HOUR, NOW, 2_500):
        scheduled += model.message(sent_at)
    burst_at = NOW - 40 * 60_000
    for n in range(150):
        sent_at = burst_at + n * 200
        address = [f"r{n}@burst-past.example"]
        scheduled.append((sent_at, ses.send(f"past-{n}", address, sent_at)))
        delay = ses.delay(f"past-{n}", address, sent_at + 5_000, sent_at)
        scheduled.append((sent_at + 5_000, delay))
    visible = [(at, record) for at, record in scheduled if at <= NOW]
    visible.sort(key=lambda item: item[0])
    return visible


def the_burst_now() -> list[dict[str, Any]]:
    """40 messages to one domain, all delayed in the last minute."""
    records = []
    for n in range(40):
        address = [f"r{n}@burst-now.example"]
        records += [
            ses.send(f"now-{n}", address, NOW - 60_000),
            ses.delay(f"now-{n}", address, NOW - 30_000 + n * 100, NOW - 60_000),
        ]
    return records


async def live_all_along(traffic: list[tuple[int, dict[str, Any]]]) -> MemoryStore:
    """What a tracker that never fell behind holds: each second's events merged in
    that second, and the burst when it was pushed (now)."""
    clock = ManualClock(NOW - HOUR)
    store = MemoryStore()
    pipeline = Pipeline(store, clock_ms=clock)
    for second, group in itertools.groupby(traffic, key=lambda item: item[0] // 1000):
        clock.ms = second * 1000 + 999
        await pipeline.ingest(ses.dumps(*(record for _, record in group)), "live")
    clock.ms = NOW
    await pipeline.ingest(ses.dumps(*the_burst_now()), "http")
    return store


def figures(counters: Counter[str]) -> Counter[str]:
    """Counters less ingest lag: when the tracker saw each event is the one figure a
    catch-up changes by definition."""
    return +Counter({k: v for k, v in counters.items() if not k.startswith("l:ingest_lag:")})


def delays_in(traffic: list[tuple[int, dict[str, Any]]], first_s: int, last_s: int) -> int:
    """Distinct DeliveryDelay events dated in buckets first_s..last_s (epoch seconds)."""
    seen = set()
    for _, record in traffic:
        if record["eventType"] != "DeliveryDelay":
            continue
        body = record["deliveryDelay"]
        at = parse_ms(body["timestamp"]) // 1000
        if first_s <= at < last_s + 10:
            addresses = tuple(r["emailAddress"] for r in body["delayedRecipients"])
            seen.add((record["mail"]["messageId"], addresses, body["timestamp"], body["delayType"]))
    return len(seen)


async def test_a_consumer_an_hour_behind_fires_only_for_what_is_happening_now(
    kafka_broker: TansuBroker, redis_server: RedisServer
) -> None:
    traffic = an_hour_of_traffic()
    topic = f"catch-up-{next(_names)}"
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
    await produce(
        kafka_broker.bootstrap_servers, topic, [(None, orjson.dumps(r)) for _, r in traffic]
    )

    clock = ManualClock(NOW)
    prefix = f"cu{next(_names)}:"
    store = RedisStore(aioredis.Redis.from_url(redis_server.url), prefix=prefix)
    pipeline = GatedPipeline(store, clock_ms=clock)
    source = KafkaSource(
        pipeline,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=[topic],
        group_id=f"fresh-{topic}",
        max_records=250,
        session_timeout_ms=6_000,
    )
    alerting = Alerting(
        store,
        MemoryAlertStore(None),
        parse_rules(RULES),
        [],
        Deliverer(httpx.AsyncClient()),
        overdue_after_s=900,
        clock_ms=clock,
        health_of=lambda: [{"name": "kafka", **source.status()}],
    )
    fired: list = []
    running = RunningSource(source)
    try:
        # A third of the backlog through: the consumer reads mail 40 minutes old.
        pipeline.allow(8)
        await wait_until(lambda: _true(source.batches >= 8), within_s=30, every=0.05)
        [(position, lag_s)] = source.event_lag.seconds().items()
        assert lag_s > 900, lag_s  # catching up, by the events' own time
        fired += await alerting.tick()
        assert alerting.catching_up == [f"{alerting.owner} kafka {position}"]
        assert fired == []  # the past burst is in the hour's baseline, not in "now"

        # A real burst, now, pushed to another replica while this one catches up.
        other = Pipeline(store, clock_ms=clock)
        await other.ingest(ses.dumps(*the_burst_now()), "http")
        fired += await alerting.tick()
        assert [(a.key, a.state) for a in fired] == [("delay-spike", AlertState.FIRING)]
        assert "burst-now.example" in fired[0].title
        assert "burst-past.example" not in str(fired[0].worst)

        # The rest of the backlog, with evaluations all the way through.
        pipeline.open_gate()
        expected_events = len(traffic)

        async def caught_up() -> bool:
            fired.extend(await alerting.tick())
            return source.lag.get(position) == 0 and pipeline.counters["kafka"].records >= (
                expected_events
            )

        await wait_until(caught_up, within_s=60, every=0.05)
        for _ in range(3):
            clock.ms += 10_000
            fired += await alerting.tick()
        clock.ms = NOW
        assert [(a.key, a.state) for a in fired] == [("delay-spike", AlertState.FIRING)]
        assert source.event_lag.seconds()[position] < 900
        assert (await alerting.tick()) == [] and alerting.catching_up == []

        # The last five minutes read as on a tracker that was live all along, and
        # the delays in them are exactly the distinct ones dated there (plus the burst).
        first, last = window_buckets(NOW, 300)
        caught = await store.read_stats(first, last)
        reference = await live_all_along(traffic)
        assert figures(caught) == figures(await reference.read_stats(first, last))
        delays = sum(v for k, v in caught.items() if k.startswith("y:"))
        assert delays == delays_in(traffic, first, last) + 40
        assert caught["g:domain=burst-past.example|y"] == 0
    finally:
        pipeline.open_gate()
        await running.stop()
        await alerting.stop()
        await store.close()


async def _true(value: bool) -> bool:
    return value
