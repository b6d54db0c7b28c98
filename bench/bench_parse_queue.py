"""A legitimate post's latency while hostile big bodies are being parsed (issue #23, 7).

    python -m bench.bench_parse_queue                    # the issue's gzip bodies
    python -m bench.bench_parse_queue --plain            # the same bodies, not gzipped

Runs `ses-tracker serve` (memory store, loopback), sends ``--hostile`` bodies of the
parser's slowest shape at the largest allowed size (8 MiB inflated; gzip: ~8 KiB on
the wire) all at once, and meanwhile times one small post (one record, parsed
inline) and one batch (300 records, ~110 KiB: a big body's path). Reports every
status and latency. Before the bounded parse pool, big bodies queued on one thread
without bound; the batch waited for every hostile parse. Compare runs of one
sitting only: this machine's speed varies. To time an older checkout, run this
file with PYTHONPATH pointing at that checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import sys
import time
from collections import Counter

import httpx

from bench.serving import served
from tests.support import ses

SLOWEST_SHAPE = b'}{\\"'  # tests/unit/test_parser_hostile.py: "escaped quotes after }{"
BODY_BYTES = 8 * 1024 * 1024


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def timed_post(
    http: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> tuple[int, float]:
    started = time.perf_counter()
    answer = await http.post("/v1/events", content=body, headers=headers)
    return answer.status_code, time.perf_counter() - started


async def run(hostile_count: int, plain: bool, timeout_s: float) -> None:
    inflated = SLOWEST_SHAPE * (BODY_BYTES // len(SLOWEST_SHAPE))
    hostile = inflated if plain else gzip.compress(inflated)
    headers = {} if plain else {"Content-Encoding": "gzip"}
    now = ses.wall_clock_ms()
    small = ses.dumps(ses.send("legit-small", ["a@x.com"], now))
    batch = ses.dumps(*(ses.send(f"legit-{n}", [f"u{n}@x.com"], now) for n in range(300)))
    async with (
        served() as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s) as http,
    ):
        await http.post("/v1/events", content=batch)  # warm: the parse pool starts
        hostile_posts = [
            asyncio.create_task(timed_post(http, hostile, headers)) for _ in range(hostile_count)
        ]
        await asyncio.sleep(0.5)  # the hostile bodies are in
        small_status, small_s = await timed_post(http, small, {})
        batch_status, batch_s = await timed_post(http, batch, {})
        hostile_answers = await asyncio.gather(*hostile_posts)
    statuses = Counter(status for status, _ in hostile_answers)
    slowest = max(seconds for _, seconds in hostile_answers)
    say(
        f"{hostile_count} hostile posts of {len(hostile):,} bytes"
        f" ({'plain' if plain else 'gzip'}, {len(inflated):,} inflated):"
        f" statuses {dict(statuses)}, slowest answer {slowest:.2f} s"
    )
    say(f"legitimate small post (1 record): {small_status} in {small_s * 1000:.0f} ms")
    say(f"legitimate batch ({len(batch):,} bytes): {batch_status} in {batch_s * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostile", type=int, default=12)
    parser.add_argument("--plain", action="store_true", help="send the bodies uncompressed")
    parser.add_argument("--timeout", type=float, default=150.0)
    args = parser.parse_args()
    asyncio.run(run(args.hostile, args.plain, args.timeout))


if __name__ == "__main__":
    main()
