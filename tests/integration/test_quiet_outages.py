"""#28: an unreachable Redis is one line with its cause, one when it is back, a
counter meanwhile; no traceback. (Before: `store_unreachable` without a cause, then
a ~3 KB `alert_evaluation_crashed` traceback every evaluation.)"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.process import running
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def log_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            lines.append({"event": "(not json)", "text": line})
    return lines


def test_a_redis_outage_is_said_once_with_its_cause_and_its_end(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # not started yet: its port refuses connections
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "timing:\n  evaluate_every_s: 1\nrules:\n"
        "  - name: bounce-rate\n    kind: bounce_rate\n    window_s: 3600\n"
        "    warn: 0.02\n    critical: 0.04\n    min_sent: 200\n"
    )
    env = {"SES_TRACKER_REDIS_URL": redis.url, "SES_TRACKER_ALERT_RULES": str(rules)}
    with running("serve", env=env) as service:
        time.sleep(4)  # a few evaluations, sweeps and erasure polls against nothing
        down = log_lines(service.logs())
        metrics = httpx.get(f"{service.admin}/metrics", timeout=5).text
        redis.start()
        try:
            deadline = time.monotonic() + 20
            while not any(line["event"] == "dependency_back" for line in log_lines(service.logs())):
                assert time.monotonic() < deadline, service.logs()[-3000:]
                time.sleep(0.2)
        finally:
            service.stop()
            redis.stop()
        logs = service.logs()
    assert "Traceback" not in logs and "crashed" not in logs
    events = [line["event"] for line in down]
    assert events.count("dependency_down") == 1, events
    [first] = [line for line in down if line["event"] == "dependency_down"]
    assert first["cause"] == "connection refused" and first["dependency"] == "store"
    [unreachable] = [line for line in down if line["event"] == "store_unreachable"]
    assert unreachable["cause"] == "connection refused"
    assert 'ses_tracker_dependency_up{dependency="store"} 0.0' in metrics
    failures = next(
        line for line in metrics.splitlines()
        if line.startswith('ses_tracker_dependency_failures_total{dependency="store"}')
    )  # fmt: skip
    assert float(failures.split()[-1]) > 3  # counted meanwhile, said once
    assert [line["event"] for line in log_lines(logs)].count("dependency_back") == 1
