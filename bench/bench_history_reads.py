"""What `/v1/history` costs over a long range (issue #26, point 4).

    python -m bench.bench_history_reads                 # 400 full days, a private redis
    python -m bench.bench_history_reads --days 30 --groups 16   # the CI-sized run

On a private redis-server, ``--days`` daily rollups, each *full*: every dimension
(configuration set, identity, domain, provider, one tag) at its cap of
``stats.HISTORY_GROUP_CAP`` groups, each group with every status and a spread of
latency bins, besides the admission fields, as a busy year leaves them. Then:

* the read as it was (every field of every period in range, HGETALL, then summed
  and summarized: ``read_rollups`` without ``fields``);
* the read as ``/v1/history`` now does it, cold (nothing cached) and warm (closed
  periods from the process), without and with ``by``;
* an empty store split in ``--groups`` slot groups (a cluster's layout on one
  Redis): as it was, one read a period a group; now, one index read a group;
* over HTTP, ``ses-tracker serve`` on the same Redis: ``/v1/history?step=day`` over
  the whole range (first call and the next), while ``/healthz`` is asked every
  10 ms: its slowest answer.

Times are wall-clock on a shared machine: only ratios within one run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from redis import asyncio as aioredis

from service import history, state, stats
from service.stores import RedisStore
from service.timestamps import format_ms
from tests.support.servers import RedisServer

DIMENSIONS = ("configuration_set", "identity", "domain", "provider", "tag:campaign")
LATENCIES_MS = [200 * 2**n for n in range(12)]


def full_rollup() -> dict[str, int]:
    """One day's fields with every dimension at its group cap."""
    names = [f"c:{status}" for status in state.STATUSES]
    names += [f"l:send_to_delivery:{stats.history_bin_of(ms)}" for ms in LATENCIES_MS]
    fields = {name: 1_000 for name in names}
    fields.update({f"y:{kind}": 3 for kind in sorted(stats.DELAY_TYPES)})
    for dimension in DIMENSIONS:
        fields[f"n:{dimension}"] = stats.HISTORY_GROUP_CAP
        for n in range(stats.HISTORY_GROUP_CAP):
            group = f"{dimension}=value-{n:03d}.example"
            fields[f"a:{group}"] = 1
            fields.update({f"g:{group}|{name}": 10 for name in names})
    return fields


async def fill(client: aioredis.Redis, store: RedisStore, starts: list[int]) -> int:
    """The rollups, their overall figures apart and their index, as merge.lua writes them."""
    keys = store.slot_groups[0].keys
    template, overall = f"{keys.prefix}bench-template", f"{keys.prefix}bench-overall"
    fields = full_rollup()
    await client.hset(template, mapping=fields)
    await client.hset(
        overall, mapping={k: n for k, n in fields.items() if k[:2] in history.FIGURE_HEADS}
    )
    dumped, dumped_overall = await client.dump(template), await client.dump(overall)
    await client.delete(overall)
    async with client.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.restore(keys.rollup("day", start), 0, dumped, replace=True)
            pipe.restore(keys.rollup_overall("day", start), 0, dumped_overall, replace=True)
        pipe.zadd(keys.rollup_index("day"), {str(start): start for start in starts})
        pipe.hlen(template)
        pipe.delete(template)
        replies = await pipe.execute()
    return int(replies[-2])


async def timed(work) -> tuple[float, object]:
    began = time.perf_counter()
    result = await work
    return time.perf_counter() - began, result


async def route_work(store: RedisStore, starts: list[int], by: str | None, fields: bool):
    """What the route does: read, then add up and summarize (in a thread)."""
    wanted = history.Fields(by) if fields else None
    rollups = await store.read_rollups("day", starts, wanted)
    return await asyncio.to_thread(history.points, starts, rollups, by)


async def over_http(url: str, since_ms: int, until_ms: int) -> list[tuple[str, float]]:
    from bench.serving import served

    settings = {"SES_TRACKER_REDIS_URL": url, "SES_TRACKER_HOST": "127.0.0.1"}
    params = {"step": "day", "since": format_ms(since_ms), "until": format_ms(until_ms)}
    figures: list[tuple[str, float]] = []
    async with (
        served(settings) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
    ):
        health: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                began = time.perf_counter()
                (await client.get("/healthz")).raise_for_status()
                health.append(time.perf_counter() - began)
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe())
        for label, by in (("first call", None), ("next call", None), ("by=domain", "domain")):
            asked = params if by is None else {**params, "by": by}
            seconds, response = await timed(client.get("/v1/history", params=asked))
            response.raise_for_status()
            figures.append((f"HTTP /v1/history?step=day, {label}", seconds))
        done.set()
        await prober
        figures.append(("HTTP /healthz meanwhile, slowest", max(health)))
    return figures


async def measure(days: int, groups: int, http: bool) -> list[tuple[str, float]]:
    """(what, seconds) of each read; the reads' answers checked equal."""
    now_ms = time.time_ns() // 1_000_000
    today = stats.day_of(now_ms)
    starts = [today - n * stats.DAY_S for n in range(days - 1, -1, -1)]
    since_ms, until_ms = starts[0] * 1000, now_ms
    workdir = tempfile.TemporaryDirectory()
    redis = RedisServer(Path(workdir.name))
    redis.start()
    client = aioredis.Redis.from_url(redis.url)
    rows: list[tuple[str, float]] = []
    try:
        store = RedisStore(client, prefix="st:")
        fields = await fill(client, store, starts)
        rows.append((f"{days} full days of rollups, fields each", fields))
        seconds, before = await timed(route_work(store, starts, None, fields=False))
        rows.append(("as it was: every field of every day", seconds))
        seconds, cold = await timed(route_work(store, starts, None, fields=True))
        rows.append(("now, nothing cached", seconds))
        seconds, warm = await timed(route_work(store, starts, None, fields=True))
        rows.append(("now, closed days cached", seconds))
        assert before == cold == warm, "the reads disagree"
        seconds, _ = await timed(route_work(store, starts, "domain", fields=False))
        rows.append(("by=domain, as it was", seconds))
        seconds, _ = await timed(route_work(store, starts, "domain", fields=True))
        rows.append(("by=domain now, nothing cached", seconds))
        seconds, _ = await timed(route_work(store, starts, "domain", fields=True))
        rows.append(("by=domain now, closed days cached", seconds))
        await store.close()

        empty = RedisStore(client, prefix="empty:", slot_groups=groups)
        seconds, _ = await timed(empty.read_rollups("day", starts))
        rows.append((f"empty store, {groups} groups, as it was", seconds))
        seconds, _ = await timed(empty.read_rollups("day", starts, history.Fields(None)))
        rows.append((f"empty store, {groups} groups, now", seconds))

        if http:
            rows += await over_http(redis.url, since_ms, until_ms)
    finally:
        await client.aclose()
        redis.stop()
        workdir.cleanup()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--groups", type=int, default=128, help="slot groups, empty store")
    parser.add_argument("--no-http", action="store_true", help="skip the served part")
    args = parser.parse_args()
    (heading, fields), *rows = await measure(args.days, args.groups, not args.no_http)
    sys.stdout.write(f"{heading.replace('fields each', f'{fields:,} fields each')}\n")
    for label, seconds in rows:
        sys.stdout.write(f"  {label:45} {seconds * 1000:9,.1f} ms\n")


if __name__ == "__main__":
    asyncio.run(main())
