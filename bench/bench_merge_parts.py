"""Redis CPU per event by part of the merge, in process, as `serve` configures it.

    python -m bench.bench_merge_parts               # starts a private redis-server
    python -m bench.bench_merge_parts --messages 20000 --rounds 4

The records of ``bench.bench_throughput`` (a Send and a Delivery per message, ~1.4
kB with headers), in payloads of 500, through the pipeline and store `serve` builds
(``service.runtime.Runtime``: the change log and its projection, indexes,
suppressions), into an empty Redis each round. Redis's CPU (``INFO cpu``, user +
system) per event over the whole round, the projection's runs included.

Each part is measured by switching it off: ``merge.lua`` is loaded with that part's
lines replaced (:data:`PARTS`; a replacement that no longer matches the script
fails the run, so the table cannot quietly measure nothing). Rounds of every
configuration are interleaved and the lowest kept, since a shared machine only ever
adds time. Only differences within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from redis import asyncio as aioredis

from bench.bench_throughput import records
from service.runtime import Runtime
from service.settings import Settings
from service.stores.redis import layout
from service.stores.redis import store as redis_store
from tests.support.servers import RedisServer

BATCH = 500

# Part -> (text in merge.lua, what replaces it to switch the part off).
PARTS: dict[str, list[tuple[str, str]]] = {
    "recipient index": [
        (
            "    index_add(call, key, sent_at, handle, false)\n"
            "    redis.call('EXPIRE', key, ttl)\n",
            "    local _ = key\n",
        )
    ],
    "send-time index": [("    add_to_bucket(call, sent_at, handle)\n", "    local _ = handle\n")],
    "record write": [
        (
            "redis.call('SET', key, cmsgpack.pack(stored), 'EX', message_ttl)",
            "local _ = stored",
        )
    ],
    "change log (and so the projection)": [
        (
            "local log = ARGV[ARG_LOG] ~= '' and cmsgpack.unpack(ARGV[ARG_LOG]) or nil",
            "local log = nil",
        )
    ],
    "reply's transitions": [
        (
            "return cmsgpack.pack({call.out, call.candidates, refused})",
            "return cmsgpack.pack({{}, call.candidates, refused})",
        )
    ],
}
SERVE = "serve, no live page open"
WATCHED = "serve, a live page open (+ live stream)"


def script_without(part: str | None) -> str:
    body = redis_store._MERGE_BODY
    for old, new in PARTS.get(part or "", []):
        if body.count(old) != 1:
            raise SystemExit(f"bench_merge_parts: merge.lua changed, {part!r} no longer found")
        body = body.replace(old, new)
    return layout.lua_prelude(body) + body


async def redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_round(url: str, payloads: list[bytes], events: int, watched: bool) -> float:
    """Redis CPU µs per event of merging ``payloads`` into an empty Redis."""
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    runtime = Runtime(Settings(_env_file=None, redis_url=url, admin_port=0))
    await runtime.start()
    try:
        if watched:
            assert runtime.live_demand is not None
            await runtime.live_demand.announce(force=True)
        before = await redis_cpu_s(client)
        for payload in payloads:
            await runtime.pipeline.ingest(payload, source="bench")
        assert runtime.redis is not None
        await runtime.redis.projection.sweep()
        used = await redis_cpu_s(client) - before
    finally:
        await runtime.stop()
        await client.aclose()
    return used * 1e6 / events


async def measure(url: str, messages: int, rounds: int) -> dict[str, float]:
    items = records(messages)
    payloads = [
        b"\n".join(value for _, value in items[i : i + BATCH]) for i in range(0, len(items), BATCH)
    ]
    configurations: list[tuple[str, str | None, bool]] = [
        (SERVE, None, False),
        (WATCHED, None, True),
        *((f"- {part}", part, False) for part in PARTS),
    ]
    best: dict[str, float] = {}
    original = redis_store.MERGE_SCRIPT
    try:
        for _ in range(rounds):
            for label, part, watched in configurations:
                redis_store.MERGE_SCRIPT = script_without(part)
                per_event = await one_round(url, payloads, len(items), watched)
                best[label] = min(best.get(label, float("inf")), per_event)
    finally:
        redis_store.MERGE_SCRIPT = original
    return best


def report(best: dict[str, float], out: TextIO) -> None:
    base = best[SERVE]
    out.write(f"{'configuration':42} Redis µs/event   part\n")
    for label, per_event in best.items():
        part = "" if label == SERVE else f"{per_event - base:+6.2f}"
        if label.startswith("- "):
            part = f"{base - per_event:6.2f}"
        out.write(f"{label:42} {per_event:8.2f}       {part}\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=8_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.TemporaryDirectory()
    redis = RedisServer(Path(workdir.name))
    redis.start()
    try:
        started = time.perf_counter()
        best = await measure(redis.url, args.messages, args.rounds)
        report(best, sys.stdout)
        sys.stdout.write(
            f"({args.messages * 2:,} events a round, {time.perf_counter() - started:.0f} s)\n"
        )
    finally:
        redis.stop()
        workdir.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
