"""What a hostile body costs: parse work per byte by shape, and /healthz meanwhile.

    python -m bench.bench_hostile                 # 8 MiB bodies (the default limit)
    python -m bench.bench_hostile --mib 1

Part 1 parses bodies of each worst shape (from tests/unit/test_parser_hostile.py,
plus good records for comparison) in this process and reports ns per byte and the
characters read per byte (the counted work that the tests hold linear).

Part 2 runs `ses-tracker serve` (memory store), POSTs the slowest shape at the
largest allowed size to /v1/events from one client, again and again, while a second
client asks /healthz every 20 ms; it reports the /healthz p50/p99/max. Target
(issue #11): p99 <= 100 ms. Big bodies are parsed on a worker thread, so the event
loop keeps answering. This machine's speed varies from day to day: compare within
one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx

from bench.serving import served
from service.parser import parse_payload
from tests.unit.test_parser_hostile import HOSTILE


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def parse_costs(size: int) -> tuple[str, bytes]:
    say(f"parse cost, {size:,}-byte bodies")
    say(f"{'shape':38} {'ms':>8} {'ns/byte':>8} {'read/byte':>9} {'records':>8}")
    slowest: tuple[float, str, bytes] = (0.0, "", b"")
    for name, unit in HOSTILE.items():
        body = unit * (size // len(unit))
        started = time.perf_counter()
        result = parse_payload(body, max_bytes=size)
        elapsed = time.perf_counter() - started
        say(
            f"{name:38} {elapsed * 1000:8.1f} {elapsed / len(body) * 1e9:8.1f}"
            f" {result.scanned / len(body):9.2f} {result.records:8,}"
        )
        if elapsed > slowest[0]:
            slowest = (elapsed, name, body)
    return slowest[1], slowest[2]


async def healthz_under_load(name: str, body: bytes, seconds: float) -> None:
    async with served() as port:
        base = f"http://127.0.0.1:{port}"
        posts: list[float] = []
        probes: list[float] = []
        deadline = time.monotonic() + seconds

        async def post() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    answer = await http.post("/v1/events", content=body)
                    posts.append(time.perf_counter() - started)
                    assert answer.status_code in (202, 400), answer.text[:200]

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    (await http.get("/healthz")).raise_for_status()
                    probes.append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)

        await asyncio.gather(post(), probe())
        say(
            f"\n/healthz while POSTing '{name}' ({len(body):,} bytes) for {seconds:.0f} s:"
            f" {len(posts)} posts, mean {sum(posts) / len(posts) * 1000:.0f} ms each"
        )
        say(
            f"/healthz p50 / p99 / max: {percentile(probes, 0.5) * 1000:.1f} /"
            f" {percentile(probes, 0.99) * 1000:.1f} / {max(probes) * 1000:.1f} ms"
            f" over {len(probes)} probes (target p99 <= 100 ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=8.0, help="body size in MiB")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)
    name, body = parse_costs(size)
    asyncio.run(healthz_under_load(name, body, args.seconds))


if __name__ == "__main__":
    main()
