"""The Kafka consumer against a real Kafka-protocol broker (Tansu) and Redis."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis import asyncio as aioredis

from consumers import kafka
from consumers.kafka import DLQ_SUFFIX, ERROR_HEADER, ORIGIN_HEADER, TRUNCATED_HEADER, KafkaSource
from service.pipeline import Pipeline
from service.stores import RedisStore
from tests.support import ses
from tests.support.fold import essence, fold
from tests.support.kafka import (
    committed,
    create_topic,
    keyed,
    produce,
    read_all,
    simulated_records,
    wait_until,
)
from tests.support.servers import RedisServer, TansuBroker
from tests.support.sources import RunningSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_names = itertools.count()
T = ses.SENT_AT


@pytest.fixture
def topic() -> str:
    return f"ses-events-{next(_names)}"


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(aioredis.Redis.from_url(redis_server.url), prefix=f"kafka{next(_names)}:")
    try:
        yield store
    finally:
        await store.close()


def source_for(
    broker: TansuBroker,
    store: RedisStore,
    topic: str,
    group: str,
    producer_factory: Any = AIOKafkaProducer,
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


async def test_every_shape_on_a_topic_reaches_the_store(kafka_broker, store, topic) -> None:
    await create_topic(kafka_broker.bootstrap_servers, topic)
    firehose_batch = ses.dumps(
        ses.send("m-fh", ["a@x.com"]), ses.delivery("m-fh", ["a@x.com"], T + 700), sep=b""
    )
    items = [
        (b"m-raw", ses.dumps(ses.bounce("m-raw", ["a@x.com"], T + 100))),
        (b"m-sns", orjson.dumps(ses.sns(ses.complaint("m-sns", ["a@x.com"], T + 100)))),
        (b"m-eb", orjson.dumps(ses.eventbridge(ses.delay("m-eb", ["a@x.com"], T + 100)))),
        (b"m-fh", firehose_batch),
    ]
    await produce(kafka_broker.bootstrap_servers, topic, items)
    running = RunningSource(source_for(kafka_broker, store, topic, "g-shapes"))

    async def all_there() -> bool:
        return all([await store.get(m) for m in ("m-raw", "m-sns", "m-eb", "m-fh")])

    await wait_until(all_there, 30)
    await running.stop()
    statuses = {m: (await store.get(m)).status() for m in ("m-raw", "m-sns", "m-eb", "m-fh")}
    assert statuses == {
        "m-raw": "bounced",
        "m-sns": "complained",
        "m-eb": "delayed",
        "m-fh": "delivered",
    }

    # The checkpoint in the store and the group's committed offsets agree: 4 records.
    checkpoint = await store.load_checkpoint("kafka:g-shapes")
    offsets = await committed(kafka_broker.bootstrap_servers, "g-shapes", topic, 3)
    assert sum(int(v) for v in checkpoint.values()) == 4
    assert {f"{topic}:{p}": str(o) for p, o in offsets.items() if o} == checkpoint


async def test_a_stream_of_traffic_ends_in_the_right_state(kafka_broker, store, topic) -> None:
    await create_topic(kafka_broker.bootstrap_servers, topic)
    records = simulated_records(150, seed=3)
    await produce(kafka_broker.bootstrap_servers, topic, keyed(records))
    running = RunningSource(source_for(kafka_broker, store, topic, "g-stream"))
    source = running.source

    async def consumed() -> bool:
        return source.pipeline.counters.get("kafka") is not None and (
            source.pipeline.counters["kafka"].events == len(records)
        )

    await wait_until(consumed, 30)
    await running.stop()
    reference, _ = fold([records])
    for message_id, expected in reference.items():
        assert essence(await store.get(message_id)) == essence(expected), message_id
    assert source.lag and all(v == 0 for v in source.lag.values())


async def test_poison_records_are_dead_lettered_and_the_rest_goes_on(
    kafka_broker, store, topic
) -> None:
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
    good = ses.dumps(ses.send("m-ok", ["a@x.com"]))
    items = [
        (None, good),
        (None, good[:30]),
        (None, orjson.dumps({"eventType": "Zap", "mail": ses.mail("m-zap", [])})),
        (None, ses.dumps(ses.delivery("m-ok", ["a@x.com"], T + 5))),
    ]
    await produce(kafka_broker.bootstrap_servers, topic, items)
    running = RunningSource(source_for(kafka_broker, store, topic, "g-poison"))
    source = running.source

    async def delivered() -> bool:
        record = await store.get("m-ok")
        return record is not None and record.status() == "delivered"

    await wait_until(delivered, 30)
    await running.stop()
    assert source.dead_lettered == 2
    assert source.pipeline.counters["kafka"].rejected == 2
    parked = await read_all(kafka_broker.bootstrap_servers, topic + DLQ_SUFFIX, expected=2)
    # The dead-letter topic may have several partitions: find records by origin.
    by_origin = {dict(r.headers)[ORIGIN_HEADER].decode(): r for r in parked}
    assert set(by_origin) == {f"{topic}:0:1", f"{topic}:0:2"}
    truncated, unknown = by_origin[f"{topic}:0:1"], by_origin[f"{topic}:0:2"]
    assert "invalid JSON" in dict(truncated.headers)[ERROR_HEADER].decode()
    assert truncated.value == good[:30]
    assert "unknown SES event type" in dict(unknown.headers)[ERROR_HEADER].decode()
    assert (await committed(kafka_broker.bootstrap_servers, "g-poison", topic, 1)) == {0: 4}


async def test_nothing_is_committed_while_the_store_is_down(kafka_broker, tmp_path, topic) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    store = RedisStore(aioredis.Redis.from_url(redis.url))
    try:
        await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
        running = RunningSource(source_for(kafka_broker, store, topic, "g-outage"))
        await wait_until(lambda: _true(running.source.connected), 30)
        redis.stop()
        await produce(
            kafka_broker.bootstrap_servers, topic, [(None, ses.dumps(ses.send("m-o", ["a@x.com"])))]
        )
        await wait_until(lambda: _true(running.source.failure is not None), 30)
        assert (await committed(kafka_broker.bootstrap_servers, "g-outage", topic, 1)) == {0: None}
        redis.start()  # same port and data directory
        await wait_until(lambda: _true(running.source.batches == 1), 30)
        await running.stop()
        assert (await store.get("m-o")).status() == "sent"
        assert (await committed(kafka_broker.bootstrap_servers, "g-outage", topic, 1)) == {0: 1}
    finally:
        await store.close()
        redis.stop()


async def _true(value: bool) -> bool:
    return value


# --- 10. dead-lettering never wedges a partition nor starts a rebalance loop -------


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


async def test_retrying_an_unreachable_broker_leaks_no_client(
    store, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed start closes both clients; none is left for the collector."""
    import gc

    from tests.support.servers import free_port

    source = KafkaSource(
        Pipeline(store),
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        topics=["nowhere"],
        group_id="g-leak",
    )
    running = RunningSource(source)
    await asyncio.sleep(3)  # several retries
    await running.stop()
    gc.collect()
    await asyncio.sleep(0)
    assert source.failure is not None  # it did try, and fail
    assert not [r for r in caplog.records if "Unclosed AIOKafka" in r.getMessage()]


# --- #18: a checkpoint outside the log, and a stalled partition -----------------------


async def test_a_broker_that_forgot_its_topic_does_not_stall_the_consumer(store, tmp_path) -> None:
    """Tansu's memory engine forgets topics on restart: the stored checkpoint then
    points past the new log. It is reset (from the log's start), not trusted."""
    broker = TansuBroker(tmp_path / "broker.log")
    broker.start()
    try:
        await create_topic(broker.bootstrap_servers, "forgetful", partitions=1)
        first = [(None, ses.dumps(ses.send(f"before-{n}", ["a@x.com"]))) for n in range(20)]
        await produce(broker.bootstrap_servers, "forgetful", first)
        running = RunningSource(source_for(broker, store, "forgetful", "g-forget"))
        await wait_until(lambda: stored(store, "before-19", "sent"), 30)
        assert running.source.status()["state"] == "consuming"
        await running.stop()
        broker.stop()
        broker.start()  # empty again: no topic, no offsets
        await create_topic(broker.bootstrap_servers, "forgetful", partitions=1)
        after = [(None, ses.dumps(ses.send(f"after-{n}", ["a@x.com"]))) for n in range(5)]
        await produce(broker.bootstrap_servers, "forgetful", after)
        running = RunningSource(source_for(broker, store, "forgetful", "g-forget"))
        await wait_until(lambda: stored(store, "after-4", "sent"), 30)
        assert running.source.checkpoints_reset == 1
        await running.stop()
    finally:
        broker.stop()


def test_a_partition_behind_the_broker_that_does_not_move_is_stalled() -> None:
    from aiokafka import TopicPartition

    class FakeConsumer:
        def assignment(self) -> set:
            return {TopicPartition("t", 0), TopicPartition("t", 1)}

        def highwater(self, tp: TopicPartition) -> int:
            return 100

    source = KafkaSource(Pipeline(None), bootstrap_servers="x", topics=["t"], group_id="g")
    source._consumer = FakeConsumer()  # type: ignore[assignment]
    source._progress = {TopicPartition("t", 0): (40, 0.0), TopicPartition("t", 1): (100, 0.0)}
    assert source.stalled(now=30.0) == []  # not for long yet
    assert source.stalled(now=61.0) == ["t:0"]  # t:1 is caught up, not stalled
