"""WebSocket fan-out under load: ingest -> transitions frame, at a steady event rate.

    python -m bench.bench_live                      # 200 clients, 5,000 events/s, 20 s

Starts `ses-tracker serve` (memory store) as its own process, connects the clients
from this process (20 unfiltered; 180 filtered: half by recipient domain, half by
message id), then POSTs Send + Delivery events at a steady rate. Each message's
events are stamped when posted; each client notes when the matching transition
reaches it. Reports p50/p99/max of post -> frame latency over all deliveries, the
slowest client's p99, and whether any client was starved (received nothing it
should have) or dropped. Target (issue #4): p99 <= 200 ms, no client starved.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict

import httpx
import orjson
import websockets

from bench.serving import served
from tests.support import ses
from tests.support.servers import free_port

DOMAINS = [f"d{n}.example" for n in range(9)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] if ordered else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--unfiltered", type=int, default=20)
    parser.add_argument("--rate", type=int, default=5_000, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    admin_port = free_port()  # /metrics
    async with served({"SES_TRACKER_ADMIN_PORT": str(admin_port)}) as port:
        figures = await run(port, admin_port, args)
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return
    for name, value in figures.items():
        sys.stdout.write(f"{name:34} {value}\n")


async def run(port: int, admin_port: int, args: argparse.Namespace) -> dict:
    rng = random.Random(7)
    messages_per_s = args.rate // 2  # Send + Delivery per message
    total_messages = int(messages_per_s * args.seconds)
    message_ids = [f"live-bench-{n:07d}" for n in range(total_messages)]
    filtered = args.clients - args.unfiltered
    # Filtered clients: half by domain, half by a message id posted mid-run.
    plans: list[str] = [""] * args.unfiltered
    plans += [f"?domain={DOMAINS[n % len(DOMAINS)]}" for n in range(filtered // 2)]
    watched = rng.sample(
        message_ids[len(message_ids) // 4 : 3 * len(message_ids) // 4], filtered - filtered // 2
    )
    plans += [f"?message_id={m}" for m in watched]

    posted_at: dict[str, float] = {}
    latencies: dict[int, list[float]] = defaultdict(list)
    expected: dict[int, int] = {}
    connections = [
        await websockets.connect(f"ws://127.0.0.1:{port}/v1/live{plan}", max_size=None)
        for plan in plans
    ]

    async def listen(index: int, ws: websockets.ClientConnection) -> None:
        try:
            async for raw in ws:
                received = time.perf_counter()
                frame = orjson.loads(raw)
                if frame["type"] != "transitions":
                    continue
                for item in frame["items"]:
                    if item["to"] == "delivered" and item["message_id"] in posted_at:
                        latencies[index].append(received - posted_at[item["message_id"]])
        except websockets.ConnectionClosed:
            pass

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(connections)]
    tick = 0.05
    per_tick = max(1, int(messages_per_s * tick))
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as http:
        for first in range(0, total_messages, per_tick):
            batch = message_ids[first : first + per_tick]
            records = []
            for n, message_id in enumerate(batch):
                address = f"user{first + n}@{DOMAINS[(first + n) % len(DOMAINS)]}"
                records.append(ses.send(message_id, [address]))
                records.append(ses.delivery(message_id, [address], ses.SENT_AT + 1_000))
            now = time.perf_counter()
            for message_id in batch:
                posted_at[message_id] = now
            await http.post(f"http://127.0.0.1:{port}/v1/events", content=ses.dumps(*records))
            # Steady rate: sleep to the next tick whatever the post took.
            target = started + (first // per_tick + 1) * tick
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        achieved = 2 * total_messages / (time.perf_counter() - started)
        await asyncio.sleep(1.0)
        ready = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
        metrics = (await http.get(f"http://127.0.0.1:{admin_port}/metrics")).text
    for ws in connections:
        await ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)

    for index, plan in enumerate(plans):
        if plan == "":
            expected[index] = total_messages
        elif plan.startswith("?domain="):
            expected[index] = sum(
                1 for n in range(total_messages) if DOMAINS[n % len(DOMAINS)] == plan[8:]
            )
        else:
            expected[index] = 1
    everything = [value for values in latencies.values() for value in values]
    per_client_p99 = [percentile(v, 0.99) for v in latencies.values() if v]
    starved = sum(1 for i in range(len(plans)) if len(latencies[i]) < expected[i])
    dropped = next(
        (
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith("ses_tracker_websocket_dropped_total")
        ),
        "?",
    )
    return {
        "clients": len(plans),
        "events_per_s_target": args.rate,
        "events_per_s_achieved": round(achieved),
        "deliveries_measured": len(everything),
        "p50_ms": round(percentile(everything, 0.50) * 1000, 1),
        "p99_ms": round(percentile(everything, 0.99) * 1000, 1),
        "max_ms": round(max(everything) * 1000, 1) if everything else None,
        "slowest_client_p99_ms": round(max(per_client_p99) * 1000, 1) if per_client_p99 else None,
        "clients_starved": starved,
        "clients_dropped": dropped,
        "server_events": ready["sources"].get("http", {}).get("events"),
    }


if __name__ == "__main__":
    asyncio.run(main())
