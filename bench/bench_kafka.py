"""Kafka -> state in Redis -> offsets committed, against the raw consume rate.

    python -m bench.bench_kafka          # starts its own Tansu broker and redis-server

Produces realistic SES events (one per record, keyed by message id) to a topic on a
private Kafka-protocol broker, then, in the same run and from the same broker:

* raw: a plain aiokafka consumer group reads every record (getmany, no work);
* tracker: ses-tracker's KafkaSource reads them, merges each batch into Redis with
  its checkpoint, and commits offsets.

Each rate is timed from the first record received to the last one handled (so the
consumer-group join is not counted). Target (issue #3): tracker / raw >= 0.40.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis import asyncio as aioredis

from bench.bench_pipeline import traffic_records
from consumers.kafka import KafkaSource
from service.pipeline import Pipeline
from service.runtime import tune_gc
from service.stores import RedisStore
from tests.support.servers import RedisServer, TansuBroker


async def produce(
    bootstrap: str, topic: str, partitions: int, values: list[tuple[bytes, bytes]]
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    for key, value in values:
        await producer.send(topic, value=value, key=key)
    await producer.flush()
    await producer.stop()


async def raw_rate(bootstrap: str, topic: str, total: int, max_records: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench-raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen, first = 0, None
    while seen < total:
        batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if batch and first is None:
            first = time.perf_counter()
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - first
    await consumer.commit()
    await consumer.stop()
    return total / elapsed


async def tracker_rate(
    bootstrap: str, topic: str, total: int, redis_url: str, max_records: int
) -> float:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix="benchkafka:")
    pipeline = Pipeline(store)
    source = KafkaSource(
        pipeline,
        bootstrap_servers=bootstrap,
        topics=[topic],
        group_id="bench-tracker",
        max_records=max_records,
    )
    task = asyncio.create_task(source.run())
    first = None
    while True:
        counters = pipeline.counters.get("kafka")
        if counters is not None and counters.records and first is None:
            first = time.perf_counter()
        if counters is not None and counters.records >= total and sum(source.lag.values()) == 0:
            checkpoint = await store.load_checkpoint("kafka:bench-tracker")
            if sum(int(v) for v in checkpoint.values()) == total:
                break
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - first
    source.stop()
    await task
    await client.aclose()
    return total / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--max-records", type=int, default=2_000, help="records per getmany")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    records = traffic_records(args.messages, seed=1)
    values = [(r["mail"]["messageId"].encode(), orjson.dumps(r)) for r in records]
    workdir = tempfile.TemporaryDirectory()
    broker = TansuBroker(Path(workdir.name) / "tansu.log")
    redis = RedisServer(Path(workdir.name), appendfsync="everysec")
    broker.start()
    redis.start()
    bootstrap = broker.bootstrap_servers
    try:
        await produce(bootstrap, "bench-ses", args.partitions, values)
        tune_gc()  # as `ses-tracker serve` runs
        raw = await raw_rate(bootstrap, "bench-ses", len(values), args.max_records)
        tracker = await tracker_rate(
            bootstrap, "bench-ses", len(values), redis.url, args.max_records
        )
    finally:
        broker.stop()
        redis.stop()
        workdir.cleanup()
    figures = {
        "records": len(values),
        "partitions": args.partitions,
        "raw_consume_events_per_s": round(raw),
        "tracker_kafka_to_redis_events_per_s": round(tracker),
        "ratio": round(tracker / raw, 3),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return
    for name, value in figures.items():
        line = f"{name:38} {value:>12,}"
        if name == "ratio":
            line += f"   target >= 0.40: {'ok' if value >= 0.40 else 'MISSED'}"
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    asyncio.run(main())
