"""What breakdowns and history cost: Redis CPU per event, and bytes per day of rollups.

    python -m bench.bench_history                  # starts a private redis-server

Traffic of issue #14's shape: 10 configuration sets x 9 mailbox providers x 5
campaign tag values, with the 21 recipient domains and 2 sending identities that go
with them. In one run, on a private redis-server:

* CPU: the same messages, sent over the last 50 minutes (so every change counts
  live), merged twice in each of four ways, into empty key prefixes: live
  statistics only by domain and provider (no message dimensions, no history: as
  before issue #14); with the message dimensions; with dimensions and history (as
  `serve` runs); and with the forwarding outbox appended too (issue #15). Redis
  CPU per event (the merge script, and the statistics projection of the change
  log, run after each merge) comes from ``INFO commandstats``. The traffic is
  spread over 50 minutes, 300 live buckets: the worst case for the projection,
  which sums alike changes of a run (``bench.bench_throughput`` is the steady one).
* Bytes: one day of the same traffic (yesterday, UTC), merged as `serve` does;
  ``MEMORY USAGE`` of its 24 hourly and 1 daily rollup hashes, what the default
  keep (daily 400 days, hourly 31) costs, and, beside it, what the same traffic's
  message records cost for their 14 days.

Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import orjson
from redis import asyncio as aioredis

from service.codec import encode_batch
from service.dimensions import Dimensions
from service.parser import parse_payload
from service.providers import CONSUMER_DOMAINS
from service.stats import DEFAULT_HISTORY_DAYS, DEFAULT_HOURLY_DAYS, Counting
from service.stores import RedisStore
from service.traffic.model import TrafficModel
from tests.support.servers import RedisServer

CONFIGURATION_SETS = [f"set-{n:02d}" for n in range(10)]
CAMPAIGNS = [f"campaign-{n}" for n in range(5)]
IDENTITIES = ["shop.example", "news.shop.example"]
# One consumer domain for each named provider, plus company domains ("other").
PROVIDER_DOMAINS = list(dict(sorted({p: d for d, p in CONSUMER_DOMAINS.items()}.items())).values())
DOMAINS = tuple((domain, 10) for domain in PROVIDER_DOMAINS) + tuple(
    (f"company{n}.example", 2) for n in range(12)
)
RECORD_BYTES = 753  # README: Redis bytes per delivered message, record and indexes


def traffic(messages: int, start_ms: int, span_ms: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    model = TrafficModel(rng, domains=DOMAINS, time_scale=1.0)
    records = []
    for n in range(messages):
        events = model.message(start_ms + n * span_ms // messages)
        tags = events[0][1]["mail"]["tags"]  # one mail object per message
        tags["ses:configuration-set"] = [rng.choice(CONFIGURATION_SETS)]
        tags["ses:from-domain"] = [rng.choice(IDENTITIES)]
        tags["campaign"] = [rng.choice(CAMPAIGNS)]
        records += [record for _, record in events]
    return records


def batches(records: list[dict], size: int) -> list[bytes]:
    return [
        b"\n".join(orjson.dumps(r) for r in records[i : i + size])
        for i in range(0, len(records), size)
    ]


async def merge_all(
    store: RedisStore,
    client: aioredis.Redis,
    payloads: list[bytes],
    dimensions: Dimensions,
    counting: Counting,
) -> tuple[int, float]:
    """Events merged, and Redis CPU (µs) their merges and projection took."""
    await client.config_resetstat()
    events = 0
    for payload in payloads:
        parsed = parse_payload(payload).events
        events += len(parsed)
        await store.merge(encode_batch(parsed, counting.now_ms, dimensions), None, counting)
    # Every command: the merge script, and the statistics projection's reads and
    # script (service.stores.redis.projection), which each merge runs inline here.
    stats = await client.info("commandstats")
    spent = sum(
        float(figures.get("usec", 0))
        for name, figures in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    )
    return events, spent


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages in the day")
    parser.add_argument("--batch", type=int, default=500, help="records per merge")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    now_ms = time.time_ns() // 1_000_000
    live = batches(traffic(args.messages, now_ms - 3_000_000, 2_900_000, args.seed), args.batch)
    yesterday = (now_ms // 86_400_000 - 1) * 86_400_000
    day = batches(traffic(args.messages, yesterday, 86_400_000 - 3_600_000, args.seed), args.batch)
    workdir = tempfile.TemporaryDirectory()
    redis = RedisServer(Path(workdir.name))
    redis.start()
    client = aioredis.Redis.from_url(redis.url)
    tags = Dimensions(tags=("campaign",))
    runs = [
        ("domain + provider, live only", "a:", Dimensions(), Counting(now_ms, history_days=0)),
        ("+ message dimensions", "b:", tags, Counting(now_ms, history_days=0)),
        ("+ hourly and daily history", "c:", tags, Counting(now_ms)),
        # What serve adds with SES_TRACKER_FORWARD_FILE set (issue #15).
        ("+ forwarding outbox", "f:", tags, Counting(now_ms)),
    ]
    out = sys.stdout
    sizes: dict[str, list[int]] = {"hour": [0, 0, 0], "day": [0, 0, 0]}
    try:
        # Each configuration twice, interleaved, into fresh prefixes; the lower of
        # the two, since a shared machine only ever adds time.
        best: dict[str, float] = {}
        events = 0
        for round_ in range(2):
            for label, prefix, dimensions, counting in runs:
                forward = 3_600 if prefix == "f:" else None
                store = RedisStore(client, prefix=f"{prefix}{round_}:", forward_keep_s=forward)
                events, usec = await merge_all(store, client, live, dimensions, counting)
                best[label] = min(best.get(label, float("inf")), usec / events)
        outbox = await client.memory_usage("f:1:fwd", samples=0) or 0
        changes = sum(
            len(msgpack.unpackb(fields[b"t"], raw=True))
            for _, fields in await client.xrange("f:1:fwd")
        )
        base = best[runs[0][0]]
        for label, per_event in best.items():
            out.write(
                f"{label:30} {events:,} events: Redis {per_event:5.1f} µs/event"
                f" ({per_event / base:.2f}x)\n"
            )
        store = RedisStore(client, prefix="d:")
        await merge_all(store, client, day, tags, Counting(now_ms))
        async for key in client.scan_iter(match="d:hist:*", count=1_000):
            step = key.decode().split(":")[2]
            sizes[step][0] += 1
            sizes[step][1] += await client.memory_usage(key, samples=0) or 0
            sizes[step][2] += await client.hlen(key)
    finally:
        await client.aclose()
        redis.stop()
        workdir.cleanup()
    out.write(
        f"forwarding outbox: {outbox / max(changes, 1):,.0f} bytes a change "
        f"({changes:,} changes), kept SES_TRACKER_FORWARD_KEEP_S\n"
    )
    messages = args.messages
    out.write(f"\none day of rollups ({messages:,} messages):\n")
    for step, (keys, size, fields) in sizes.items():
        out.write(f"  {step:5} {keys:3} hashes, {fields:7,} fields, {size / 1024:8,.0f} KiB\n")
    kept = sizes["day"][1] * DEFAULT_HISTORY_DAYS + sizes["hour"][1] * DEFAULT_HOURLY_DAYS
    everything = (sizes["day"][1] + sizes["hour"][1]) * DEFAULT_HISTORY_DAYS
    records_bytes = messages * RECORD_BYTES * 14
    out.write(
        f"kept as configured by default (daily {DEFAULT_HISTORY_DAYS} days, hourly "
        f"{DEFAULT_HOURLY_DAYS}): {kept / 1024**2:,.0f} MiB; hourly kept "
        f"{DEFAULT_HISTORY_DAYS} days too: {everything / 1024**2:,.0f} MiB\n"
        f"message records for 14 days of the same traffic: {records_bytes / 1024**2:,.0f} MiB"
        f" ({RECORD_BYTES} B a message)\n"
    )


if __name__ == "__main__":
    asyncio.run(main())
