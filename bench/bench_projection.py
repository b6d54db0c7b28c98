"""How fresh the statistics are: merge to applied, through the change log (issue #25).

    python -m bench.bench_projection            # 5,000 events/s for 20 s, private Redis

Two stores on one private redis-server, as two `serve` replicas: one holds every
slot group's projection lease and sweeps (``StatsProjection.run_forever``), the
other merges the benchmark's records (Send + Delivery, dated now) at a steady rate
and cannot take the lease, so each of its merges is counted by the other's sweep:
the slower of the two ways a statistic becomes visible (a process holding the
lease applies its own merges before the merge returns). Reports p50/p99/max of
merge (the entry's append) to applied, over every entry, against the target of
p99 <= 1 s; then the same with the merging process holding the lease.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis import asyncio as aioredis

from bench.bench_throughput import records
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.parser import parse_payload
from service.stats import Counting
from service.stores import RedisStore
from tests.support.servers import RedisServer


async def merge_at_rate(store: RedisStore, payloads: list[bytes], rate: float) -> None:
    per_batch = len(payloads[0].splitlines())
    started = time.perf_counter()
    for number, payload in enumerate(payloads):
        due = started + number * per_batch / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        now_ms = time.time_ns() // 1_000_000
        writes = encode_batch(parse_payload(payload).events, now_ms, Dimensions())
        await store.merge(writes, None, Counting(now_ms))


def report(label: str, delays: list[float]) -> None:
    ordered = sorted(delays)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    sys.stdout.write(
        f"{label}: {len(ordered):,} entries, merge -> applied p50 "
        f"{statistics.median(ordered) * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, "
        f"max {ordered[-1] * 1000:,.0f} ms (target p99 <= 1,000 ms)\n"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=5_000, help="events/s")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=250, help="records per merge")
    args = parser.parse_args()
    workdir = tempfile.TemporaryDirectory()
    redis = RedisServer(Path(workdir.name))
    redis.start()
    try:
        messages = int(args.rate * args.seconds / 2)
        items = records(messages)
        payloads = [
            b"\n".join(value for _, value in items[i : i + args.batch])
            for i in range(0, len(items), args.batch)
        ]
        # Another replica holds the lease and sweeps.
        holder = RedisStore(aioredis.Redis.from_url(redis.url), prefix="a:")
        merger = RedisStore(aioredis.Redis.from_url(redis.url), prefix="a:")
        await holder.projection.sweep()  # takes the lease first
        sweeping = asyncio.create_task(holder.projection.run_forever())
        await merge_at_rate(merger, payloads, args.rate)
        await asyncio.sleep(1.0)
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)
        assert merger.projection.applied_entries == 0
        report("another replica sweeps", list(holder.projection.delays))
        # The merging process holds the lease: applied before its merge returns.
        alone = RedisStore(aioredis.Redis.from_url(redis.url), prefix="b:")
        await merge_at_rate(alone, payloads, args.rate)
        report("the merging process", list(alone.projection.delays))
        for store in (holder, merger, alone):
            await store.close()
    finally:
        redis.stop()
        workdir.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
