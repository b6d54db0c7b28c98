"""#28.4: the rules and forwarding files reload without a rollout: polled for a
changed content, or on POST /-/reload (admin port); a file that fails leaves the
running configuration and says why with file and line. On main before this, the
files were read once at start-up: every test here failed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
import structlog

from service.settings import Settings
from tests.integration.test_forwarding import SECRET, delivered, messages, until
from tests.support import ses
from tests.support.receiver import Receiver
from tests.support.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RULES = """rules:
  - name: {name}
    kind: bounce_rate
    warn: 0.05
    window_s: 600
"""


def metric(text: str, line_start: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


async def write(path: Path, text: str) -> None:
    """The file swapped whole, as a ConfigMap's files are: a poll never reads it
    half-written (which would count a failed reload the test does not expect)."""
    edited = path.with_name(path.name + ".new")
    await asyncio.to_thread(edited.write_text, text)
    await asyncio.to_thread(os.replace, edited, path)


async def test_an_edited_rules_file_is_polled_in_and_a_bad_one_kept_out(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(name="bounces"))
    settings = Settings(_env_file=None, alert_rules=rules, config_poll_s=0.1)
    with structlog.testing.capture_logs() as logged:
        async with serving(settings) as server, httpx.AsyncClient(base_url=server.admin) as admin:
            alerting = server.runtime.alerting
            assert [rule.name for rule in alerting.rules.rules] == ["bounces"]
            await write(rules, RULES.format(name="bounces_tight"))
            await until(lambda: [r.name for r in alerting.rules.rules] == ["bounces_tight"], 5)
            scrape = (await admin.get("/metrics")).text
            assert metric(scrape, 'ses_tracker_config_reload_success{file="rules"}') == 1
            assert (
                metric(scrape, 'ses_tracker_config_reloads_total{file="rules",result="success"}')
                == 1
            )

            # Line 5 breaks a limit: the running rules stay; said once, not at every poll.
            await write(rules, RULES.format(name="broken").replace("600", "99999"))
            await until(lambda: any(e["event"] == "config_reload_failed" for e in logged), 5)
            await asyncio.sleep(0.5)  # five more polls of the same content
            failures = [e for e in logged if e["event"] == "config_reload_failed"]
            assert len(failures) == 1
            assert f"{rules}:5: rules[0].window_s" in failures[0]["error"]
            assert [rule.name for rule in alerting.rules.rules] == ["bounces_tight"]
            scrape = (await admin.get("/metrics")).text
            assert metric(scrape, 'ses_tracker_config_reload_success{file="rules"}') == 0

            # Asked to reload, it says why it refused, and keeps what runs.
            refused = await admin.post("/-/reload")
            assert refused.status_code == 422
            [outcome] = refused.json()["files"]
            assert outcome["file"] == "rules" and not outcome["ok"]
            assert f"{rules}:5:" in outcome["error"]

            await write(rules, RULES.format(name="bounces_fixed"))
            answer = await admin.post("/-/reload")
            assert answer.status_code == 200
            assert answer.json()["files"][0] | {"path": None} == {
                "file": "rules", "path": None, "ok": True, "changed": True, "error": None,
                "loaded": 1,
            }  # fmt: skip
            assert [rule.name for rule in alerting.rules.rules] == ["bounces_fixed"]
            scrape = (await admin.get("/metrics")).text
            assert metric(scrape, 'ses_tracker_config_reload_success{file="rules"}') == 1


async def test_subscriptions_added_edited_and_removed_by_editing_the_file(tmp_path: Path) -> None:
    forward_file = tmp_path / "forward.yaml"
    forward_file.write_text("subscriptions: []\n")
    settings = Settings(_env_file=None, forward_file=forward_file, config_poll_s=0.1)
    async with (
        Receiver() as receiver,
        serving(settings) as server,
        httpx.AsyncClient(base_url=server.base) as client,
    ):
        forwarder = server.runtime.forwarder
        assert forwarder is not None and forwarder.subscriptions == []
        entry = f"  - {{name: app, url: '{receiver.base}/hook', secret: {SECRET}"
        await write(forward_file, f"subscriptions:\n{entry}}}\n")
        await until(lambda: len(forwarder.subscriptions) == 1, 5)
        assert (await client.post("/v1/events", content=messages(2, "added"))).status_code == 202
        await until(lambda: {i["to"] for i in delivered(receiver)} == {"sent", "delivered"})

        # Edited: only bounces from now on (same name and URL: same place in the outbox).
        await write(forward_file, f"subscriptions:\n{entry}, statuses: [bounced]}}\n")
        await until(lambda: forwarder.subscriptions[0].statuses == ("bounced",), 5)
        before = len(delivered(receiver))
        assert (await client.post("/v1/events", content=messages(2, "edited"))).status_code == 202
        await asyncio.sleep(1.0)
        assert len(delivered(receiver)) == before

        # A bounce it takes, then removed: the next bounce is not posted.
        bounce = ses.dumps(ses.bounce("taken", ["b@x.com"], ses.SENT_AT + 1_000))
        assert (await client.post("/v1/events", content=bounce)).status_code == 202
        await until(lambda: [i["to"] for i in delivered(receiver)[before:]] == ["bounced"])
        await write(forward_file, "subscriptions: []\n")
        await until(lambda: forwarder.subscriptions == [], 5)
        bounce = ses.dumps(ses.bounce("not-taken", ["b2@x.com"], ses.SENT_AT + 1_000))
        assert (await client.post("/v1/events", content=bounce)).status_code == 202
        await asyncio.sleep(1.0)
        assert len(delivered(receiver)) == before + 1


def test_sighup_reloads_a_single_serve(tmp_path: Path) -> None:
    """systemd's ExecReload= sends SIGHUP: it re-reads the files, as POST /-/reload."""
    import signal
    import time

    from tests.support.process import running

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(name="bounces"))
    env = {"SES_TRACKER_ALERT_RULES": str(rules), "SES_TRACKER_CONFIG_POLL_S": "0"}
    with running("serve", env=env) as service:
        rules.write_text(RULES.format(name="bounces_after_hup"))
        service.process.send_signal(signal.SIGHUP)
        success = 'ses_tracker_config_reloads_total{file="rules",result="success"}'
        deadline = time.monotonic() + 10
        while success not in httpx.get(f"{service.admin}/metrics", timeout=5).text:
            assert time.monotonic() < deadline, service.logs()[-2000:]
            time.sleep(0.1)
        assert service.process.poll() is None  # reloaded, not stopped
        assert "config_reloaded" in service.logs()
        assert service.stop() == 0
