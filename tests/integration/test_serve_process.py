"""`ses-tracker serve`, `demo`, `lookup` and `export` as a user runs them: real processes."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import orjson
import pytest

from service.search import message_handle
from service.state import STATUSES
from tests.support import ses
from tests.support.process import clean_environment, command, running
from tests.support.servers import RedisClusterServers, RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MID = "0100018b-proc-0000-0000-000000000000-000000"
T = ses.SENT_AT


def test_serve_ingests_and_answers_then_stops_cleanly_on_sigterm() -> None:
    with running("serve") as service:
        base = service.base
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

        # Export, as a user runs it: filters passed on, every match written.
        exported = subprocess.run(
            [*command(), "export", "--url", base, "--configuration-set", "transactional",
             "--status", "delivered"],
            capture_output=True, timeout=30, text=True,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        rows = exported.stdout.splitlines()
        assert rows[0].startswith("message_id,sent_at,status,recipient")
        assert len(rows) == 2 and rows[1].startswith(MID + ",")
        assert "2 rows" in exported.stderr
        none = subprocess.run(
            [*command(), "export", "--url", base, "--format", "ndjson", "--provider", "gmail"],
            capture_output=True, timeout=30, text=True,
        )  # fmt: skip
        assert none.returncode == 0 and none.stdout == ""
        wrong = subprocess.run(
            [*command(), "export", "--url", base, "--provider", "aol"],
            capture_output=True, timeout=30, text=True,
        )  # fmt: skip
        assert wrong.returncode == 1 and "422" in wrong.stderr

        assert service.stop() == 0
        logs = service.logs()
    lines = [line for line in logs.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), lines  # JSON logs only
    assert any('"service_stopped"' in line for line in lines)


def test_redis_state_survives_a_killed_process(redis_server: RedisServer) -> None:
    env = {"SES_TRACKER_REDIS_URL": redis_server.url}
    with running("serve", env=env) as service:
        body = ses.dumps(
            ses.send(MID + "k", ["a@x.com"]), ses.bounce(MID + "k", ["a@x.com"], T + 9)
        )
        posted = httpx.post(f"{service.base}/v1/events", content=body, timeout=5)
        assert posted.status_code == 202
        service.kill()  # 202 means durable: nothing may depend on a clean shutdown
    with running("serve", env=env) as service:
        message = httpx.get(f"{service.base}/v1/messages/{MID}k", timeout=5).json()
        assert message["status"] == "bounced"
        assert service.stop() == 0


def test_demo_runs_realistic_traffic_with_no_setup() -> None:
    with running("demo", "--rate", "50", "--seed", "3") as service:
        deadline = time.monotonic() + 15
        simulator: dict = {}
        while time.monotonic() < deadline:
            ready = httpx.get(f"{service.base}/readyz", timeout=5).json()
            simulator = ready["sources"].get("simulator", {})
            if simulator.get("events", 0) > 100:
                break
            time.sleep(0.3)
        assert simulator.get("events", 0) > 100, simulator
        assert simulator["rejected"] == 0
        # The demo logs sample message ids; each can be looked up a moment later.
        sampled = [
            orjson.loads(line)["message_id"]
            for line in service.logs().splitlines()
            if '"simulated_message"' in line
        ]
        assert sampled
        time.sleep(1.0)  # the Send becomes visible within a second or so
        message = httpx.get(f"{service.base}/v1/messages/{sampled[0]}", timeout=5)
        assert message.status_code == 200
        assert message.json()["status"] in STATUSES
        assert service.stop() == 0


def test_bad_configuration_fails_fast_with_a_clear_error() -> None:
    environment = clean_environment()
    environment["SES_TRACKER_PORT"] = "not-a-port"
    result = subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, timeout=30, text=True
    )
    assert result.returncode != 0
    assert "port" in result.stderr.lower()


def test_bad_alert_rules_and_webhooks_stop_start_up_naming_line_and_entry(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: bounces\n    kind: bounce_rate\n    warn: 0.02\n    window_s: 7200\n"
    )
    environment = clean_environment()
    environment["SES_TRACKER_ALERT_RULES"] = str(rules)
    environment["SES_TRACKER_ALERT_WEBHOOKS"] = (
        "slack=https://hooks.slack.com/services/x,discord=http://discord.com/api/webhooks/1/t"
    )
    result = subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, timeout=30, text=True
    )
    assert result.returncode == 2
    assert f"{rules}:5: rules[0].window_s: Input should be less than or equal to 3600" in (
        result.stderr
    )
    assert "SES_TRACKER_ALERT_WEBHOOKS entry 2" in result.stderr
    assert "services/x" not in result.stderr  # webhook URLs are credentials


def test_check_rules_prints_the_rules_as_they_will_run(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: paused, kind: sending_disabled}\n")
    result = subprocess.run(
        [*command(), "check-rules", str(rules)], capture_output=True, timeout=30, text=True
    )
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["rules"] == [{"name": "paused", "kind": "sending_disabled"}]
    assert shown["timing"]["group_wait_s"] == 30


def test_replay_command_writes_to_redis_and_summarises(redis_server: RedisServer, tmp_path) -> None:
    saved = tmp_path / "saved.ndjson"
    saved.write_bytes(
        b"\n".join(
            [
                ses.dumps(ses.send(MID + "r", ["a@x.com"])),
                b'{"eventType": "Zap", "mail": {}}',
                ses.dumps(ses.delivery(MID + "r", ["a@x.com"], T + 5)),
            ]
        )
    )
    result = subprocess.run(
        [*command(), "replay", str(saved), "--redis-url", redis_server.url],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 1  # one record was rejected
    assert "accepted events" in result.stdout and "rejected: unknown_type" in result.stdout
    again = subprocess.run(
        [*command(), "replay", str(saved), "--redis-url", redis_server.url],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert again.returncode == 0 and "skipped 1 file(s) replayed before" in again.stderr
    with running("serve", env={"SES_TRACKER_REDIS_URL": redis_server.url}) as service:
        message = httpx.get(f"{service.base}/v1/messages/{MID}r", timeout=5).json()
        assert message["status"] == "delivered"
        assert service.stop() == 0
    missing = subprocess.run(
        [*command(), "replay", str(saved)], capture_output=True, timeout=60, text=True
    )
    assert missing.returncode == 2 and "--dry-run" in missing.stderr


def test_replay_says_when_the_store_is_down_with_its_own_exit_code(tmp_path) -> None:
    saved = tmp_path / "saved.ndjson"
    saved.write_bytes(ses.dumps(ses.send(MID + "down", ["a@x.com"])))
    result = subprocess.run(
        [*command(), "replay", str(saved), "--redis-url", f"redis://127.0.0.1:{free_port()}/0"],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 3
    assert "store is unavailable" in result.stderr and "Traceback" not in result.stderr


def test_a_newer_data_format_in_redis_stops_an_older_version(redis_server: RedisServer) -> None:
    """A rollback past a format change must not write into the newer data."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("st:format", 99)
    try:
        result = subprocess.run(
            [*command(), "serve"],
            env={
                **clean_environment(),
                "SES_TRACKER_REDIS_URL": redis_server.url,
                "SES_TRACKER_PORT": str(free_port()),
            },
            capture_output=True,
            timeout=30,
            text=True,
        )
        assert result.returncode != 0
        assert "data format 99" in result.stderr
    finally:
        client.set("st:format", 1)
        client.close()


def test_serve_refuses_a_cluster_written_in_another_number_of_slot_groups(
    redis_cluster: RedisClusterServers,
) -> None:
    """A message's group is its handle modulo the count: another count would look in
    the wrong places, so serve stops and says why."""
    env = {
        **clean_environment(),
        "SES_TRACKER_REDIS_URL": redis_cluster.url,
        "SES_TRACKER_REDIS_CLUSTER": "true",
    }
    redis_cluster.flush()
    with running("serve", env=env) as first:
        assert httpx.get(f"{first.base}/readyz", timeout=5).status_code == 200
        assert first.stop() == 0
    result = subprocess.run(
        [*command(), "serve"],
        env={**env, "SES_TRACKER_REDIS_SLOT_GROUPS": "8", "SES_TRACKER_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        text=True,
    )
    assert result.returncode != 0
    assert "store_layout_mismatch" in result.stderr and "16 slot groups" in result.stderr


def test_a_replay_forwards_nothing(redis_server: RedisServer, tmp_path) -> None:
    """#15: a backfill is history, not news: it never reaches forwarding subscriptions."""
    import redis

    forward = tmp_path / "forward.yaml"
    forward.write_text(
        "subscriptions:\n  - {name: app, url: 'https://app.example/h', secret: a-long-secret-1}\n"
    )
    saved = tmp_path / "saved.ndjson"
    saved.write_bytes(ses.dumps(ses.send(MID + "fw", ["a@x.com"])))
    client = redis.Redis.from_url(redis_server.url)
    client.delete("st:fwd")
    result = subprocess.run(
        [*command(), "replay", str(saved), "--redis-url", redis_server.url],
        capture_output=True,
        timeout=60,
        text=True,
        env={**os.environ, "SES_TRACKER_FORWARD_FILE": str(forward)},
    )
    assert result.returncode == 0, result.stderr
    assert client.get(f"st:m:{{{message_handle(MID + 'fw')}}}") is not None
    assert not client.exists("st:fwd")
    client.close()
