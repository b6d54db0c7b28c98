"""Does a hung chat webhook slow ingestion? Ingest with no sink, then with a hung one.

    python -m bench.bench_alerts                  # 200 batches of 100 events per run

Runs `ses-tracker serve` (memory store) twice. The second run has a Slack sink
pointing at a local server that accepts connections and never answers, and a rule
that fires on the first event (a Reject), so its sender sits in a hung post (and
its retries) for the whole run. Each run POSTs the same batches (Send + Delivery)
one after another and reports events/s and the p50/p99/max POST time. Target
(issue #5): the hung sink changes neither beyond run-to-run noise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support import ses
from tests.support.process import clean_environment
from tests.support.servers import free_port, wait_for_port

RULES = """
timing: {group_wait_s: 0, group_interval_s: 1, evaluate_every_s: 0.2}
rules:
  - {name: rejects, kind: status_count, status: rejected}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


async def hung_server() -> tuple[asyncio.Server, list[int]]:
    """Accepts, reads, never answers; counts the posts it is holding."""
    held: list[int] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(1)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # the benchmark is over
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, held


async def run(args: argparse.Namespace, sink_url: str | None, workdir: Path) -> dict[str, float]:
    port = free_port()
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    env = clean_environment()
    env.update(
        SES_TRACKER_PORT=str(port),
        SES_TRACKER_LOG_LEVEL="warning",
        SES_TRACKER_ALERT_RULES=str(rules),
    )
    if sink_url:
        env["SES_TRACKER_ALERT_WEBHOOKS"] = f"slack={sink_url}"
    script = Path(sys.executable).parent / "ses-tracker"
    process = await asyncio.create_subprocess_exec(
        str(script), "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(wait_for_port, port, 20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await http.post("/v1/events", content=ses.dumps(ses.reject("bench-reject", ["r@x.io"])))
            await asyncio.sleep(1.0)  # the alert fires; a sink, if any, is now posting
            bodies = []
            for batch in range(args.batches):
                records = []
                for n in range(args.batch // 2):
                    message_id = f"b{batch}-{n}"
                    records.append(ses.send(message_id, [f"u{n}@d{n % 7}.io"]))
                    records.append(
                        ses.delivery(message_id, [f"u{n}@d{n % 7}.io"], ses.SENT_AT + 800)
                    )
                bodies.append(ses.dumps(*records))
            times = []
            started = time.perf_counter()
            for body in bodies:
                t0 = time.perf_counter()
                response = await http.post("/v1/events", content=body)
                times.append(time.perf_counter() - t0)
                response.raise_for_status()
            elapsed = time.perf_counter() - started
            alerts = (await http.get("/v1/alerts")).json()["firing"]
        return {
            "events_per_s": args.batches * args.batch / elapsed,
            "p50_ms": percentile(times, 0.5) * 1000,
            "p99_ms": percentile(times, 0.99) * 1000,
            "max_ms": max(times) * 1000,
            "alerts_firing": len(alerts),
        }
    finally:
        process.terminate()
        await process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100, help="events per POST")
    args = parser.parse_args()
    server, held = await hung_server()
    sink_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    with tempfile.TemporaryDirectory() as workdir:
        plain = await run(args, None, Path(workdir))
        hung = await run(args, sink_url, Path(workdir))
    server.close()
    for name, result in (("no sink", plain), ("hung sink", hung)):
        sys.stdout.write(
            f"{name:>9}: {result['events_per_s']:8.0f} events/s  POST p50 {result['p50_ms']:.1f} ms"
            f"  p99 {result['p99_ms']:.1f} ms  max {result['max_ms']:.1f} ms"
            f"  (alerts firing: {result['alerts_firing']})\n"
        )
    sys.stdout.write(f"posts held by the hung sink: {len(held)}\n")
    sys.stdout.write(
        f"throughput with a hung sink: {hung['events_per_s'] / plain['events_per_s']:.0%}\n"
    )


if __name__ == "__main__":
    asyncio.run(main())
