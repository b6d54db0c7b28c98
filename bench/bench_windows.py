"""Live windows under a flood of group values (issue #23, point 5): /healthz meanwhile.

    python -m bench.bench_windows                     # 79,200 events, memory and Redis
    python -m bench.bench_windows --events 20000 --stores memory

Runs `ses-tracker serve` (the memory store, then a Redis started here) and POSTs the
issue's flood to /v1/events: events spread over the last hour of event time, each
with its own recipient domain, identity and configuration set (79,200 made a
format-1 hour window 857k fields). Meanwhile one client asks /healthz every 20 ms
and another GET /v1/stats?window_s=3600 every second, as a dashboard does, while
the alert engine evaluates the built-in rules (hour windows included) every 10 s.
After the flood both go on for --after seconds. Reported: /healthz p50/p99/max
during and after the flood (target p99 <= 100 ms), the hour's /v1/stats latency,
the groups the hour's window holds per dimension, and memory (the server's RSS;
Redis: used_memory and the fields its statistics hashes hold). This machine's
speed varies from day to day: compare within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis import asyncio as aioredis

from bench.serving import served
from tests.support import ses
from tests.support.servers import RedisServer

HOUR_MS = 3_600_000
BATCH = 500  # events a POST


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def flood(count: int, now_ms: int) -> Iterator[bytes]:
    """NDJSON bodies of ``count`` Send events spread over the last hour, each with a
    recipient domain, identity and configuration set of its own."""
    span = HOUR_MS - 20_000
    lines: list[bytes] = []
    for n in range(count):
        sent_at = now_ms - span + n * span // count
        record = ses.send(f"flood-{now_ms}-{n}", [f"x@d{n}.example"], sent_at=sent_at)
        record["mail"]["tags"] = {
            "ses:configuration-set": [f"cs{n}"],
            "ses:from-domain": [f"id{n}.example"],
        }
        lines.append(orjson.dumps(record))
        if len(lines) == BATCH:
            yield b"\n".join(lines)
            lines = []
    if lines:
        yield b"\n".join(lines)


@dataclass
class Figures:
    healthz: dict[str, list[float]] = field(default_factory=lambda: {"during": [], "after": []})
    stats: dict[str, list[float]] = field(default_factory=lambda: {"during": [], "after": []})
    posted: int = 0
    refused: int = 0
    flood_s: float = 0.0
    window: dict[str, Any] = field(default_factory=dict)


async def run(
    events: int, after_s: float, settings: dict[str, str], phase: list[str]
) -> tuple[Figures, int]:
    figures = Figures()
    async with served(settings) as port:
        base = f"http://127.0.0.1:{port}"
        pid = server_pid()
        done = asyncio.Event()

        async def post() -> None:
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                now_ms = time.time_ns() // 1_000_000
                for body in flood(events, now_ms):
                    while True:
                        answer = await http.post("/v1/events", content=body)
                        if answer.status_code == 202:
                            figures.posted += body.count(b"\n") + 1
                            break
                        figures.refused += 1
                        assert answer.status_code in (429, 503), answer.text[:200]
                        await asyncio.sleep(float(answer.headers.get("Retry-After", "0.2")))
            figures.flood_s = time.monotonic() - started
            phase[0] = "after"
            await asyncio.sleep(after_s)
            done.set()

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                while not done.is_set():
                    started = time.perf_counter()
                    (await http.get("/healthz")).raise_for_status()
                    figures.healthz[phase[0]].append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)

        async def dashboard() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                while not done.is_set():
                    started = time.perf_counter()
                    answer = await http.get("/v1/stats", params={"window_s": 3600})
                    answer.raise_for_status()
                    figures.stats[phase[0]].append(time.perf_counter() - started)
                    await asyncio.sleep(1.0)

        await asyncio.gather(post(), probe(), dashboard())
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for dimension in ("configuration_set", "identity", "domain"):
                answer = await http.get("/v1/stats", params={"window_s": 3600, "by": dimension})
                body = answer.json()
                other = [g for g in body["by"]["groups"] if g["key"] == "(other)"]
                figures.window[dimension] = {
                    "sent": body["counts"]["sent"],
                    "(other)": other[0]["counts"]["sent"] if other else 0,
                }
        rss = resident_bytes(pid)
    return figures, rss


def server_pid() -> int | None:
    """The `ses-tracker serve` child of this process (Linux)."""
    me = os.getpid()
    try:
        children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    except OSError:
        return None
    return int(children[-1]) if children else None


def resident_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def redis_figures(url: str) -> dict[str, int]:
    """Redis's memory, the live statistics' keys and fields, and the distinct values
    per dimension all live buckets hold (what an hour's window can sum)."""
    client = aioredis.Redis.from_url(url)
    values: dict[str, set[bytes]] = {}
    try:
        fields = 0
        keys = 0
        async for key in client.scan_iter(match="st:stats*", count=1_000):
            if await client.type(key) != b"hash":
                continue
            keys += 1
            names = await client.hkeys(key)
            fields += len(names)
            for name in names:
                if name.startswith(b"g:"):
                    group = name[2:].rpartition(b"|")[0]
                    dimension, _, value = group.partition(b"=")
                    values.setdefault(dimension.decode(), set()).add(value)
        used = int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()
    return {
        "used_memory": used,
        "stats_keys": keys,
        "stats_fields": fields,
        **{f"values of {d}": len(v) for d, v in sorted(values.items())},
    }


def report(name: str, figures: Figures, rss: int, extra: dict[str, int] | None = None) -> None:
    say(
        f"\n== {name}: {figures.posted:,} events in {figures.flood_s:.1f} s"
        f" ({figures.refused} POSTs refused and retried)"
    )
    for when in ("during", "after"):
        probes, reads = figures.healthz[when], figures.stats[when]
        say(
            f"/healthz {when:6} the flood: p50 / p99 / max "
            f"{percentile(probes, 0.5) * 1000:.1f} / {percentile(probes, 0.99) * 1000:.1f} / "
            f"{max(probes, default=float('nan')) * 1000:.1f} ms ({len(probes)} probes); "
            f"/v1/stats?window_s=3600 p50 / max {percentile(reads, 0.5) * 1000:.0f} / "
            f"{max(reads, default=float('nan')) * 1000:.0f} ms ({len(reads)} reads)"
        )
    for dimension, counts in figures.window.items():
        say(f"hour window by {dimension}: sent {counts['sent']:,}, (other) {counts['(other)']:,}")
    say(f"server RSS {rss / 2**20:.0f} MiB")
    for key, value in (extra or {}).items():
        say(f"redis {key}: {value:,}")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-windows-"))
    server = RedisServer(workdir, appendfsync="everysec")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def bench(
    events: int, after_s: float, stores: list[str]
) -> dict[str, tuple[Figures, dict[str, int]]]:
    results: dict[str, tuple[Figures, dict[str, int]]] = {}
    if "memory" in stores:
        figures, rss = await run(events, after_s, {}, ["during"])
        report("memory store", figures, rss)
        results["memory"] = figures, {"rss": rss}
    if "redis" in stores:
        with redis_server() as server:
            figures, rss = await run(
                events, after_s, {"SES_TRACKER_REDIS_URL": server.url}, ["during"]
            )
            stored = await redis_figures(server.url)
            report("redis store", figures, rss, stored)
            results["redis"] = figures, {"rss": rss, **stored}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=79_200)
    parser.add_argument("--after", type=float, default=20.0, help="seconds probed after")
    parser.add_argument("--stores", default="memory,redis")
    args = parser.parse_args()
    asyncio.run(bench(args.events, args.after, args.stores.split(",")))


if __name__ == "__main__":
    main()
