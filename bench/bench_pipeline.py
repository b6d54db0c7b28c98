"""Throughput and footprint of parse -> merge -> store, in one run.

    python -m bench.bench_pipeline                 # starts a private redis-server
    python -m bench.bench_pipeline --redis-url redis://127.0.0.1:6379/15

Measures, on the same realistic SES traffic (simulator output, as Firehose would
deliver it: batches of newline-delimited records):

* raw parse rate (parser only), the ceiling for everything else;
* parse + encode + merge into the memory store;
* parse + encode + merge into Redis (one EVALSHA round trip per batch);
* footprint of a delivered one-recipient message with its timeline: bytes in Redis
  (MEMORY USAGE over its record and its share of the search indexes) and bytes per
  message in the memory store (tracemalloc over 100,000 messages).

Targets (issue #2): Redis >= 20,000 events/s, memory >= 50,000 events/s,
Redis <= 800 bytes and memory <= 1,500 bytes per delivered message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson
from redis import asyncio as aioredis

from service.codec import encode_batch
from service.parser import parse_payload
from service.runtime import Runtime, tune_gc
from service.settings import Settings
from service.stores import MemoryStore, RedisStore
from service.timestamps import format_ms, parse_ms_cache_clear
from service.traffic.model import TrafficModel
from tests.support.servers import RedisServer

SENT_AT = 1_763_900_000_000


def traffic_records(messages: int, seed: int) -> list[dict]:
    """Simulated SES events for ``messages`` messages, in the order SES would emit them."""
    model = TrafficModel(random.Random(seed))
    records = []
    for n in range(messages):
        records += [record for _, record in model.message(SENT_AT + n * 3)]
    return records


def traffic(messages: int, batch_records: int, seed: int) -> tuple[list[bytes], int]:
    records = traffic_records(messages, seed)
    payloads = [
        b"\n".join(orjson.dumps(r) for r in records[i : i + batch_records])
        for i in range(0, len(records), batch_records)
    ]
    return payloads, len(records)


def rate(events: int, seconds: float) -> float:
    return events / seconds if seconds else float("inf")


def bench_parse(payloads: list[bytes], events: int) -> float:
    start = time.perf_counter()
    for payload in payloads:
        parse_payload(payload)
    return rate(events, time.perf_counter() - start)


async def bench_pipeline(store, payloads: list[bytes], events: int) -> float:
    # The service's own wiring (metrics hooks included), around the given store.
    pipeline = Runtime(Settings(_env_file=None), store=store).pipeline
    start = time.perf_counter()
    for payload in payloads:
        await pipeline.ingest(payload, source="bench")
    elapsed = time.perf_counter() - start
    assert pipeline.counters["bench"].events == events
    return rate(events, elapsed)


def delivered_message(message_id: str, address: str) -> list[dict]:
    """Send + Delivery as SES event publishing writes them (seed-document shape)."""
    mail = {
        "timestamp": format_ms(SENT_AT),
        "source": "notifications@shop.example",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/shop.example",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": [address],
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["Shop <notifications@shop.example>"],
            "to": [address],
            "messageId": message_id,
            "subject": "Your order has shipped",
        },
        "tags": {
            "ses:configuration-set": ["transactional"],
            "ses:source-ip": ["192.0.2.0"],
            "ses:from-domain": ["shop.example"],
            "ses:caller-identity": ["shop-mailer"],
        },
    }
    delivery = {
        "timestamp": format_ms(SENT_AT + 1_234),
        "processingTimeMillis": 1_234,
        "recipients": [address],
        "smtpResponse": "250 2.0.0 OK  1763900001 a1-20020a170906.123 - gsmtp",
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "remoteMtaIp": "192.0.2.10",
    }
    return [
        {"eventType": "Send", "mail": mail, "send": {}},
        {"eventType": "Delivery", "mail": mail, "delivery": delivery},
    ]


def message_id(n: int) -> str:
    return f"0100019abcdef{n:03x}-{n:08x}-1a2b-4c3d-9e8f-0123456789ab-000000"


async def redis_footprint(client: aioredis.Redis, messages: int = 1_000) -> dict[str, int]:
    """Bytes per delivered message in Redis: its record plus its search-index entries.

    Index keys are shared (a send-time bucket holds every message of its minute, a
    recipient's zset all their mail), so the figure is MEMORY USAGE over every key
    the store wrote for ``messages`` such messages, divided by their number. Each
    message has its own recipient: the worst case for the recipient index.
    """
    store = RedisStore(client, prefix="benchfp:")
    payload = []
    for n in range(messages):
        payload += delivered_message(message_id(n), f"someone.special{n}@gmail.com")
    await store.merge(encode_batch(parse_payload(orjson.dumps(payload)).events, SENT_AT + 2_000))
    by_kind: dict[str, int] = {}
    async for key in client.scan_iter(match="benchfp:*", count=1_000):
        kind = key.decode().split(":")[1]
        by_kind[kind] = by_kind.get(kind, 0) + await client.memory_usage(key, samples=0)
    await client.delete(*[key async for key in client.scan_iter(match="benchfp:*", count=1_000)])
    names = {"m": "record", "r": "recipient_index", "t": "send_time_index", "x": "shared_indexes"}
    per_message = {
        names.get(kind, kind): round(total / messages) for kind, total in by_kind.items()
    }
    per_message["total"] = round(sum(by_kind.values()) / messages)
    return per_message


def memory_footprint(messages: int) -> float:
    """Bytes the memory store retains per message, everything it keeps included.

    Tracing starts before parsing: the store keeps strings and blobs made while
    parsing and encoding, not only what merging allocates. Everything but the store
    is dropped before the second reading.
    """
    payloads = [
        orjson.dumps(delivered_message(message_id(n), f"user{n}@gmail.com"))
        for n in range(messages)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = MemoryStore(max_messages=messages + 1)
    for payload in payloads:
        store.merge_now(encode_batch(parse_payload(payload).events, SENT_AT + 2_000))
    parse_ms_cache_clear()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(store) == messages
    return (after - before) / messages


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500, help="records per payload")
    parser.add_argument("--footprint-messages", type=int, default=100_000)
    parser.add_argument(
        "--redis-url", help="use this Redis (it is written to) instead of a private one"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    payloads, events = traffic(args.messages, args.batch, args.seed)
    tune_gc()  # as `ses-tracker serve` runs
    own_redis = None
    workdir = tempfile.TemporaryDirectory()
    url = args.redis_url
    if url is None:
        own_redis = RedisServer(Path(workdir.name), appendfsync="everysec")
        own_redis.start()
        url = own_redis.url
    client = aioredis.Redis.from_url(url)
    try:
        bench_parse(payloads[:5], 1)  # warm-up
        parse_rate = bench_parse(payloads, events)
        memory_rate = await bench_pipeline(MemoryStore(), payloads, events)
        # As the service builds it: transitions appended to the shared stream too.
        redis_store = RedisStore(client, prefix="bench:", feed_window_s=60)
        redis_rate = await bench_pipeline(redis_store, payloads, events)
        redis_bytes = await redis_footprint(client)
        memory_bytes = memory_footprint(args.footprint_messages)
    finally:
        await client.aclose()
        if own_redis is not None:
            own_redis.stop()
        workdir.cleanup()

    figures = {
        "events": events,
        "batch_records": args.batch,
        "parse_events_per_s": round(parse_rate),
        "memory_events_per_s": round(memory_rate),
        "redis_events_per_s": round(redis_rate),
        "memory_vs_parse": round(memory_rate / parse_rate, 3),
        "redis_vs_parse": round(redis_rate / parse_rate, 3),
        "redis_bytes_per_delivered_message": redis_bytes["total"],
        "redis_bytes_breakdown": redis_bytes,
        "memory_bytes_per_delivered_message": round(memory_bytes),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return
    targets = {
        "memory_events_per_s": (">=", 50_000),
        "redis_events_per_s": (">=", 20_000),
        "redis_bytes_per_delivered_message": ("<=", 800),
        "memory_bytes_per_delivered_message": ("<=", 1_500),
    }
    for name, value in figures.items():
        if isinstance(value, dict):
            parts = ", ".join(f"{part} {size:,}" for part, size in value.items())
            sys.stdout.write(f"{name:38} {parts}\n")
            continue
        line = f"{name:38} {value:>12,}"
        if name in targets:
            op, bound = targets[name]
            ok = value >= bound if op == ">=" else value <= bound
            line += f"   target {op} {bound:,}: {'ok' if ok else 'MISSED'}"
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    asyncio.run(main())
