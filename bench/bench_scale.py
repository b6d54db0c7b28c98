"""Horizontal scale: Kafka -> Redis events/s with one `ses-tracker serve`, then two.

    python -m bench.bench_scale          # starts its own Tansu broker and redis-server

Puts realistic SES events on a topic with the load generator (one per record,
keyed by message id, 4 partitions), then for 1 and 2 replicas: flushes Redis,
starts that many `ses-tracker serve` processes in one fresh consumer group, and samples the
checkpoint they commit with each batch. The rate is taken between 20% and 80% of
the stream, once the group has settled, so start-up and rebalancing are not
counted. Every process, the broker and Redis share this machine's cores: on a
2-core machine two replicas compete with Redis and the broker for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from redis import asyncio as aioredis

from service.stores import RedisStore
from service.traffic.loadgen import KafkaTarget, generate
from tests.support.process import clean_environment
from tests.support.servers import RedisServer, TansuBroker, free_port, wait_for_port


async def redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run(
    replicas: int, args: argparse.Namespace, total: int, env_base: dict
) -> tuple[float, float]:
    """Events/s between 20% and 80% of the stream, and Redis's CPU share meanwhile."""
    group = f"scale-{replicas}-{time.monotonic_ns()}"
    client = aioredis.Redis.from_url(env_base["SES_TRACKER_REDIS_URL"])
    await client.flushdb()
    store = RedisStore(client, prefix="st:")
    processes = []
    script = Path(sys.executable).parent / "ses-tracker"
    for _ in range(replicas):
        port = free_port()
        env = {**env_base, "SES_TRACKER_PORT": str(port), "SES_TRACKER_KAFKA_GROUP_ID": group}
        processes.append(
            (
                await asyncio.create_subprocess_exec(
                    str(script), "serve", env=env, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                ),
                port,
            )
        )  # fmt: skip
    try:
        for _, port in processes:
            await asyncio.to_thread(wait_for_port, port, 30)
        samples: list[tuple[float, int, float]] = []
        deadline = time.monotonic() + args.timeout
        while True:
            positions = await store.load_checkpoint(f"kafka:{group}")
            done = sum(int(v) for v in positions.values())
            samples.append((time.perf_counter(), done, await redis_cpu_s(client)))
            if done >= total:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {total} in {args.timeout} s")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            for _, port in processes:
                ready = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
                owned = ready["consumers"]["kafka"]["partitions"]
                sys.stderr.write(f"  replica :{port} ended owning {owned}\n")
    finally:
        for process, _ in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
        await client.aclose()
    low = next(s for s in samples if s[1] >= 0.2 * total)
    high = next(s for s in samples if s[1] >= 0.8 * total)
    seconds = high[0] - low[0]
    return (high[1] - low[1]) / seconds, (high[2] - low[2]) / seconds


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60_000, help="messages (~3 events each)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    workdir = tempfile.TemporaryDirectory()
    broker = TansuBroker(Path(workdir.name) / "tansu.log")
    redis = RedisServer(Path(workdir.name), appendfsync="everysec")
    broker.start()
    redis.start()
    try:
        # The load generator, as `ses-tracker loadgen --to kafka --rate 0` runs it.
        target = KafkaTarget(broker.bootstrap_servers, "scale-ses", args.partitions)
        report = await generate(target, rate=0, messages=args.messages, seed=2)
        total = report.events
        env_base = clean_environment()
        env_base.update(
            SES_TRACKER_REDIS_URL=redis.url,
            SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            SES_TRACKER_KAFKA_TOPICS="scale-ses",
            SES_TRACKER_LOG_LEVEL="warning",
        )
        rates = {}
        for replicas in (1, 2):
            rates[replicas], redis_busy = await run(replicas, args, total, env_base)
            sys.stdout.write(
                f"{replicas} replica(s): {rates[replicas]:>9,.0f} events/s"
                f"  (redis-server busy {redis_busy:.0%} of a core)\n"
            )
    finally:
        broker.stop()
        redis.stop()
        workdir.cleanup()
    sys.stdout.write(
        f"records {total:,}, partitions {args.partitions}, cores {os.cpu_count()}; "
        f"2 replicas / 1 = {rates[2] / rates[1]:.2f}\n"
    )


if __name__ == "__main__":
    asyncio.run(main())
