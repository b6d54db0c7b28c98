"""ses-tracker against the best Python peer, in one run, from one broker (issue #13).

    pip install -e '.[dev,bench]'
    python -m bench.bench_throughput     # starts its own Tansu broker and redis-server

Puts the same records on one topic of a private Kafka-protocol broker (Send +
Delivery per message, ~1.4 kB each, keyed by message id), then, one after the
other on this machine:

* raw: a plain aiokafka consumer group reads every record, doing nothing;
* peer: a Quix Streams app (``bench.peer_quix``) keeps a keyed status and the
  send-to-delivery latency in its RocksDB state, committing every 0.5 s;
* tracker: ``ses-tracker serve`` as deployed (statistics, transition stream,
  search indexes, alert evaluator, websocket broadcaster all on), with Redis, then
  with the in-memory store; with ``--workers 2`` too;
* tracker on a Redis Cluster of 3 masters on this machine (issue #16), 1 and 2
  workers: Redis CPU per event is summed over the masters and given per master, and
  the busiest master's share says what one more core per master would carry.

Every consumer starts in a fresh group from the earliest offset. Rates are read
from the group's committed offsets, polled every 50 ms: *steady* from the first
commit to the last (start-up and the group join not counted), and *with start-up*
from the process start. CPU per event is each process's CPU time between the first
and the last commit (the service's processes, and redis-server's from ``INFO
cpu``) divided by the events committed meanwhile.
Only ratios within one run mean anything: this machine's speed varies threefold
from day to day.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis import asyncio as aioredis

from bench.bench_kafka import produce
from tests.support import ses
from tests.support.process import clean_environment
from tests.support.servers import (
    RedisClusterServers,
    RedisServer,
    TansuBroker,
    free_port,
    wait_for_port,
)

_TICK = os.sysconf("SC_CLK_TCK")
TOPIC = "bench-ses"
# A signature-sized header brings a record to the ~1.4 kB SES publishes with headers.
DKIM = "v=1; a=rsa-sha256; c=relaxed/simple; d=shop.example; s=ses; h=From:To:Subject; b=" + (
    "Zm9vYmFyYmF6" * 33
)


def records(messages: int) -> list[tuple[bytes, bytes]]:
    """(key, value) for ``messages`` Send + Delivery pairs, ~1.4 kB each, as SES
    publishes them with original headers included."""
    # Recent, so that the live statistics count them as they would live traffic.
    start = int(time.time() * 1000) - 150_000
    out: list[tuple[bytes, bytes]] = []
    for n in range(messages):
        message_id = f"0100019a{n:08x}-5c1d4e2a-bench-4f0e-9a51-3d2b8f0c7e61-000000"
        address = [f"customer{n % 5000}@{('gmail.com', 'outlook.com', 'yahoo.com')[n % 3]}"]
        sent_at = start + n * 3
        send = ses.send(message_id, address, sent_at)
        delivery = ses.delivery(message_id, address, sent_at + 1_800, sent_at)
        for record in (send, delivery):
            record["mail"]["headers"] = [
                {"name": "Received", "value": "from mail.shop.example (10.0.3.17) by smtp"},
                {"name": "Content-Type", "value": "multipart/alternative; boundary=x"},
                {"name": "MIME-Version", "value": "1.0"},
                {"name": "X-Campaign", "value": f"spring-sale-{n % 7}"},
                {"name": "List-Unsubscribe", "value": "<https://shop.example/unsub?u=1234567>"},
                {"name": "DKIM-Signature", "value": DKIM},
            ]
            out.append((message_id.encode(), orjson.dumps(record)))
    return out


async def raw_rate(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"raw-{time.monotonic_ns()}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    seen, first = 0, 0.0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for items in batch.values():
                if not first and items:
                    first = time.perf_counter()
                seen += len(items)
    finally:
        last = time.perf_counter()
        await consumer.stop()
    return total / (last - first)


@dataclass
class Run:
    name: str
    steady: float  # events/s, first commit to last
    with_startup: float  # events/s, process start to last commit
    service_cpu_us: float  # per event, every process of the run
    redis_cpu_us: float | None = None  # per event, every Redis node together
    node_cpu_us: tuple[float, ...] = ()  # per event, each Redis node


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _TICK


async def redis_cpu(clients: list[aioredis.Redis]) -> list[float]:
    """CPU seconds each Redis node has used (a cluster: one client per master)."""
    used = []
    for client in clients:
        info = await client.info("cpu")
        used.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return used


async def measured(
    name: str,
    argv: list[str],
    env: dict[str, str],
    bootstrap: str,
    group: str,
    total: int,
    redis: list[aioredis.Redis],
    timeout_s: float,
    partition_count: int,
) -> Run:
    """Start ``argv``, follow ``group``'s committed offsets until all ``total`` are."""
    # Tansu answers OffsetFetch but not the admin's ListConsumerGroupOffsets: ask as a
    # member of the group that never joins it.
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await watcher.start()
    partitions = [TopicPartition(TOPIC, p) for p in range(partition_count)]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    # (time, offsets committed, service CPU, Redis CPU per node) at the first commit
    first: tuple[float, int, float, list[float]] | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            done = 0
            for tp in partitions:
                done += await watcher.committed(tp) or 0
            now = time.perf_counter()
            if done and first is None:
                first = (now, done, _family_cpu(process.pid), await redis_cpu(redis))
            if done >= total:
                break
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError(f"{name}: {done} of {total} committed in {timeout_s} s")
            await asyncio.sleep(0.05)
        # CPU of the steady part only: start-up (imports, the group join) is not
        # work per event.
        service_cpu = _family_cpu(process.pid)
        redis_used = await redis_cpu(redis)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        await watcher.stop()
    assert first is not None
    events = max(1, total - first[1])
    steady = events / max(1e-9, now - first[0])
    pairs = zip(redis_used, first[3], strict=True)
    nodes = tuple((after - before) / events * 1e6 for after, before in pairs)
    return Run(
        name,
        steady,
        total / (now - started),
        (service_cpu - first[2]) / events * 1e6,
        sum(nodes) if redis else None,
        nodes,
    )


def _family_cpu(pid: int) -> float:
    return sum(cpu_s(p) for p in {pid, *_children(pid)})


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = [int(k) for k in path.read_text().split()]
    except FileNotFoundError:
        return []
    return kids + [g for k in kids for g in _children(k)]


async def http_ingest_rate(env: dict[str, str], items: list[tuple[bytes, bytes]]) -> float:
    """POST /v1/events as NDJSON batches of 500, two clients, to `serve` on Redis."""
    port = free_port()
    script = Path(sys.executable).parent / "ses-tracker"
    process = await asyncio.create_subprocess_exec(
        str(script), "serve", env={**env, "SES_TRACKER_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port, 30)
        bodies = [
            b"\n".join(value for _, value in items[i : i + 500]) for i in range(0, len(items), 500)
        ]
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def client() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                while not queue.empty():
                    response = await http.post("/v1/events", content=queue.get_nowait())
                    response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(client(), client())
        return len(items) / (time.perf_counter() - started)
    finally:
        process.terminate()
        await process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=40_000, help="messages (2 records each)")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--skip",
        default="",
        help="runs to skip, comma-separated: peer,redis,memory,workers,cluster,http",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = tempfile.TemporaryDirectory()
    broker = TansuBroker(Path(workdir.name) / "tansu.log")
    redis_server = RedisServer(Path(workdir.name), appendfsync="everysec")
    cluster = RedisClusterServers(Path(workdir.name) / "cluster", masters=3)
    broker.start()
    redis_server.start()
    if "cluster" not in skip:
        cluster.start()
    redis = aioredis.Redis.from_url(redis_server.url)
    masters = [aioredis.Redis.from_url(url) for url in cluster.urls]
    runs: list[Run] = []
    try:
        items = records(args.messages)
        total = len(items)
        size = sum(len(v) for _, v in items) / total
        topic = TOPIC
        await produce(broker.bootstrap_servers, topic, args.partitions, items)
        raw = await raw_rate(broker.bootstrap_servers, topic, total)
        sys.stdout.write(f"raw aiokafka: {raw:,.0f} events/s\n")
        base_env = clean_environment()
        script = str(Path(sys.executable).parent / "ses-tracker")
        tracker_env = {
            **base_env,
            "SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "SES_TRACKER_KAFKA_TOPICS": topic,
            "SES_TRACKER_LOG_LEVEL": "warning",
            "SES_TRACKER_RATE_LIMIT_PER_S": "0",
        }
        plan: list[tuple[str, list[str], dict[str, str], list[aioredis.Redis]]] = []
        if "peer" not in skip:
            state = tempfile.mkdtemp(dir=workdir.name)
            peer_argv = [sys.executable, "-m", "bench.peer_quix", "--broker",
                         broker.bootstrap_servers, "--topic", topic, "--group", "{group}",
                         "--state-dir", state]  # fmt: skip
            plan.append(("peer (Quix Streams)", peer_argv, base_env, []))
        single = {"SES_TRACKER_REDIS_URL": redis_server.url}
        on_cluster = (
            {"SES_TRACKER_REDIS_URL": cluster.url, "SES_TRACKER_REDIS_CLUSTER": "true"}
            if "cluster" not in skip
            else {}
        )
        for key, label, extra, nodes in (
            ("redis", "tracker, Redis", single, [redis]),
            ("memory", "tracker, memory", {}, []),
            ("workers", "tracker, Redis, 2 workers",
             {**single, "SES_TRACKER_WORKERS": "2"}, [redis]),
            ("cluster", "tracker, cluster of 3", on_cluster, masters),
            ("cluster", "tracker, cluster of 3, 2 workers",
             {**on_cluster, "SES_TRACKER_WORKERS": "2"}, masters),
        ):  # fmt: skip
            if key not in skip:
                plan.append((label, [script, "serve"], {**tracker_env, **extra}, nodes))
        for label, argv, env, nodes in plan:
            group = f"g-{time.monotonic_ns()}"
            port = str(free_port())
            argv = [part.replace("{group}", group) for part in argv]
            env = {**env, "SES_TRACKER_KAFKA_GROUP_ID": group, "SES_TRACKER_PORT": port}
            for node in nodes:
                await node.flushall()
            run = await measured(
                label, argv, env, broker.bootstrap_servers, group, total,
                nodes, args.timeout, args.partitions,
            )  # fmt: skip
            runs.append(run)
            per_node = ""
            if len(run.node_cpu_us) > 1:
                per_node = " (" + " / ".join(f"{us:,.1f}" for us in run.node_cpu_us) + ")"
            sys.stdout.write(
                f"{label}: {run.steady:,.0f} events/s steady, {run.with_startup:,.0f} with"
                f" start-up; CPU {run.service_cpu_us:,.0f} us/event"
                + ("" if run.redis_cpu_us is None else f" + redis {run.redis_cpu_us:,.1f} us")
                + per_node
                + "\n"
            )
        if "http" not in skip:
            await redis.flushdb()
            http_env = {
                **base_env,
                "SES_TRACKER_REDIS_URL": redis_server.url,
                "SES_TRACKER_LOG_LEVEL": "warning",
                "SES_TRACKER_RATE_LIMIT_PER_S": "0",
            }
            rate = await http_ingest_rate(http_env, items)
            sys.stdout.write(f"POST /v1/events NDJSON (Redis): {rate:,.0f} events/s\n")
    finally:
        await redis.aclose()
        for master in masters:
            await master.aclose()
        broker.stop()
        redis_server.stop()
        cluster.stop()
        workdir.cleanup()
    peer = next((r for r in runs if r.name.startswith("peer")), None)
    sys.stdout.write(
        f"\nrecords {total:,} (~{size:,.0f} B), partitions {args.partitions}, cores "
        f"{os.cpu_count()}; raw aiokafka {raw:,.0f} events/s\n"
    )
    for run in runs:
        ratio = f"{run.steady / peer.steady:.2f}x peer" if peer and run is not peer else ""
        sys.stdout.write(f"  {run.name:<34} {run.steady:>9,.0f} /s  {ratio}\n")
    for run in runs:
        if run.node_cpu_us:
            # One Redis core carries 1e6 / (us per event) events/s; the busiest node
            # runs out first, so that is the ceiling of this layout given the cores.
            busiest = max(run.node_cpu_us)
            sys.stdout.write(
                f"  {run.name}: Redis {run.redis_cpu_us:,.1f} us/event, busiest node "
                f"{busiest:,.1f} us: Redis alone would saturate at ~{1e6 / busiest:,.0f} "
                "events/s with a core per node\n"
            )


if __name__ == "__main__":
    asyncio.run(main())
