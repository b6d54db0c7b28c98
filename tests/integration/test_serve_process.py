"""`ses-tracker serve`, `demo` and `lookup` as a user runs them: real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import ses
from tests.support.servers import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MID = "0100018b-proc-0000-0000-000000000000-000000"
T = ses.SENT_AT


def command() -> list[str]:
    script = Path(sys.executable).parent / "ses-tracker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


@contextmanager
def running(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SES_TRACKER_")}
    environment.update(env or {}, SES_TRACKER_PORT=str(port))
    process = subprocess.Popen(
        [*command(), *args], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"service did not start: {process.stderr.read().decode()[-2000:]}"
                )
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=15)
    return code, process.stderr.read().decode()


def test_serve_ingests_and_answers_then_stops_cleanly_on_sigterm() -> None:
    with running("serve") as (base, process):
        body = ses.dumps(ses.send(MID, ["a@x.com"]), ses.delivery(MID, ["a@x.com"], T + 800))
        posted = httpx.post(f"{base}/v1/events", content=body, timeout=5)
        assert posted.status_code == 202 and posted.json()["accepted"] == 2
        message = httpx.get(f"{base}/v1/messages/{MID}", timeout=5).json()
        assert message["status"] == "delivered"
        assert message["recipients"][0]["latency_ms"]["send_to_delivery"] == 800

        lookup = subprocess.run(
            [*command(), "lookup", MID, "--url", base], capture_output=True, timeout=30, text=True
        )
        assert lookup.returncode == 0, lookup.stderr
        assert '"status": "delivered"' in lookup.stdout
        missing = subprocess.run(
            [*command(), "lookup", "nope", "--url", base],
            capture_output=True,
            timeout=30,
            text=True,
        )
        assert missing.returncode == 1 and "404" in missing.stderr

        code, logs = stop(process)
    assert code == 0
    lines = [line for line in logs.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), lines  # JSON logs only
    assert any('"service_stopped"' in line for line in lines)


def test_redis_state_survives_a_killed_process(redis_server: RedisServer) -> None:
    env = {"SES_TRACKER_REDIS_URL": redis_server.url}
    with running("serve", env=env) as (base, process):
        body = ses.dumps(
            ses.send(MID + "k", ["a@x.com"]), ses.bounce(MID + "k", ["a@x.com"], T + 9)
        )
        assert httpx.post(f"{base}/v1/events", content=body, timeout=5).status_code == 202
        process.kill()  # 202 means durable: nothing may depend on a clean shutdown
        process.wait(timeout=10)
    with running("serve", env=env) as (base, process):
        message = httpx.get(f"{base}/v1/messages/{MID}k", timeout=5).json()
        assert message["status"] == "bounced"
        assert stop(process)[0] == 0


def test_demo_runs_realistic_traffic_with_no_setup() -> None:
    with running("demo", "--rate", "50", "--seed", "3") as (base, process):
        deadline = time.monotonic() + 15
        simulator: dict = {}
        while time.monotonic() < deadline:
            simulator = (
                httpx.get(f"{base}/readyz", timeout=5).json()["sources"].get("simulator", {})
            )
            if simulator.get("events", 0) > 100:
                break
            time.sleep(0.3)
        assert simulator.get("events", 0) > 100, simulator
        assert simulator["rejected"] == 0
        assert stop(process)[0] == 0


def test_bad_configuration_fails_fast_with_a_clear_error() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SES_TRACKER_")}
    environment["SES_TRACKER_PORT"] = "not-a-port"
    result = subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, timeout=30, text=True
    )
    assert result.returncode != 0
    assert "port" in result.stderr.lower()
