"""10. Dead-lettering never wedges a partition nor starts a rebalance loop."""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis import asyncio as aioredis

from consumers import kafka
from consumers.kafka import DLQ_SUFFIX, ORIGIN_HEADER, TRUNCATED_HEADER, KafkaSource
from service.pipeline import Pipeline
from service.stores import RedisStore
from tests.support import ses
from tests.support.kafka import committed, create_topic, produce, read_all, wait_until
from tests.support.servers import RedisServer, TansuBroker
from tests.support.sources import RunningSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_names = itertools.count()
T = ses.SENT_AT


@pytest.fixture
def topic() -> str:
    return f"dlq-events-{next(_names)}"


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(aioredis.Redis.from_url(redis_server.url), prefix=f"dlq{next(_names)}:")
    try:
        yield store
    finally:
        await store.close()


def source_for(
    broker: TansuBroker, store: RedisStore, topic: str, group: str, producer_factory: Any
) -> KafkaSource:
    return KafkaSource(
        Pipeline(store),
        bootstrap_servers=broker.bootstrap_servers,
        topics=[topic],
        group_id=group,
        max_records=100,
        session_timeout_ms=6_000,
        producer_factory=producer_factory,
    )


async def stored(store: RedisStore, message_id: str, status: str) -> bool:
    record = await store.get(message_id)
    return record is not None and record.status() == status


async def test_a_record_too_large_for_the_dlq_is_parked_cut_down(
    kafka_broker, store, topic, monkeypatch
) -> None:
    monkeypatch.setattr(kafka, "DLQ_TRUNCATED_BYTES", 4_096)
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
    huge = b"{not json" + b"x" * 40_000
    items = [(None, huge), (None, ses.dumps(ses.send("after-huge", ["a@x.com"])))]
    await produce(kafka_broker.bootstrap_servers, topic, items)
    # A DLQ that takes 16 KiB a record, as a broker's message.max.bytes would.
    small_dlq = functools.partial(AIOKafkaProducer, max_request_size=16_384)
    running = RunningSource(source_for(kafka_broker, store, topic, "g-huge", small_dlq))
    await wait_until(lambda: stored(store, "after-huge", "sent"), 30)
    await running.stop()
    [parked] = await read_all(kafka_broker.bootstrap_servers, topic + DLQ_SUFFIX, expected=1)
    headers = dict(parked.headers)
    assert headers[TRUNCATED_HEADER] == str(len(huge)).encode()
    assert headers[ORIGIN_HEADER] == f"{topic}:0:0".encode()
    assert parked.value == huge[:4_096]
    assert running.source.dead_letter_truncated == 1
    assert (await committed(kafka_broker.bootstrap_servers, "g-huge", topic, 1)) == {0: 2}


class RefusingProducer(AIOKafkaProducer):
    """A DLQ whose broker refuses the first few sends (topic missing, not authorized)."""

    refusals = 0

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic.endswith(DLQ_SUFFIX) and RefusingProducer.refusals > 0:
            RefusingProducer.refusals -= 1
            raise KafkaError("refused by the test broker")
        return await super().send(topic, *args, **kwargs)


async def test_a_refusing_dlq_pauses_only_its_partition(kafka_broker, store, topic) -> None:
    RefusingProducer.refusals = 2
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=2)
    bootstrap = kafka_broker.bootstrap_servers
    poison = (None, b'{"eventType": "Zap", "mail": {"messageId": "zap"}}')
    await produce(bootstrap, topic, [poison, (None, ses.dumps(ses.send("p0", ["a@x.com"])))], 0)
    await produce(bootstrap, topic, [(None, ses.dumps(ses.send("p1", ["a@x.com"])))], 1)
    running = RunningSource(source_for(kafka_broker, store, topic, "g-refuse", RefusingProducer))
    source = running.source
    # The other partition goes on while partition 0 waits out its backoff.
    await wait_until(lambda: stored(store, "p1", "sent"), 30)
    await wait_until(_blocked(source, f"{topic}:0"), 30)
    consumer = source._consumer
    assert await store.get("p0") is None  # not past the record it could not park
    # Once the DLQ takes the record, the partition resumes where it stopped.
    await wait_until(lambda: stored(store, "p0", "sent"), 40)
    assert source._consumer is consumer  # never torn down: no rejoin, no rebalance
    await running.stop()
    assert source.dead_letter_failures == 2 and source.dead_lettered == 1
    assert source.status()["dlq_blocked"] == []
    assert (await committed(bootstrap, "g-refuse", topic, 2)) == {0: 2, 1: 1}


def _blocked(source: KafkaSource, partition: str) -> Any:
    async def check() -> bool:
        return partition in source.status()["dlq_blocked"]

    return check
