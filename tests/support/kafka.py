"""Small Kafka helpers for tests: topics, producing, reading, offsets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.traffic.model import TrafficModel


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[bytes | None, bytes]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send(topic, value=value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int, within_s: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within_s):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for items in batch.values():
                    records.extend(items)
    finally:
        await consumer.stop()
    return records


async def committed(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def wait_until(
    check: Callable[[], Awaitable[bool]], within_s: float, every: float = 0.2
) -> None:
    """Poll state owned by another task or process until it holds."""
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110 - the state lives elsewhere: polling is the point
            await asyncio.sleep(every)


def simulated_records(messages: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    model = TrafficModel(rng)
    scheduled = []
    for n in range(messages):
        scheduled += model.message(1_763_900_000_000 + n * 11)
    scheduled.sort(key=lambda item: item[0])
    return [record for _, record in scheduled]


def keyed(records: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """Key by message id, as a producer partitioning by message should."""
    return [(r["mail"]["messageId"].encode(), orjson.dumps(r)) for r in records]
