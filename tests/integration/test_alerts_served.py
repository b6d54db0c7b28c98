"""Alerting inside the served app and across processes: real uvicorn, real Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson
import pytest
from redis import asyncio as aioredis

from service.settings import Settings
from tests.support import ses
from tests.support.chat import checker
from tests.support.process import running
from tests.support.receiver import Answer, Receiver
from tests.support.servers import RedisServer
from tests.support.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "0123456789abcdef-secret"
FAST_REJECTS = """
timing: {group_wait_s: 0, group_interval_s: 1, evaluate_every_s: 0.2}
rules:
  - {name: rejects, kind: status_count, status: rejected, window_s: 60}
"""


async def eventually(probe, timeout_s: float = 10.0, every_s: float = 0.05):
    """Poll the async ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(every_s)


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


async def test_a_hung_sink_does_not_delay_event_processing(tmp_path: Path) -> None:
    async with Receiver(checker(SECRET.encode())) as receiver:
        receiver.script = [Answer(hang_s=20)]
        settings = Settings(
            _env_file=None,
            alert_rules=rules_file(tmp_path, FAST_REJECTS),
            alert_webhooks=f"slack={receiver.base}/slack",
        )
        near = ses.clock_from(ses.SENT_AT + 1_000)
        async with (
            serving(settings, clock_ms=near) as server,
            httpx.AsyncClient(base_url=server.base) as http,
        ):
            reject = ses.reject("hang-reject", ["r@x.com"])
            assert (await http.post("/v1/events", content=ses.dumps(reject))).status_code == 202

            async def posted():
                return receiver.received

            await eventually(posted)  # the sender is now stuck on the hung receiver

            async def backlog():
                metrics = (await http.get(f"{server.admin}/metrics")).text
                return (
                    f'ses_tracker_alert_outbox{{sink="slack:127.0.0.1:{receiver.port}"}} 1.0'
                    in metrics
                )

            await eventually(backlog)  # the stuck notice shows as waiting
            hung_at = time.monotonic()
            timings = []
            for batch in range(30):
                records = []
                for n in range(50):
                    message_id = f"hang-{batch}-{n}"
                    records.append(ses.send(message_id, [f"a{n}@y.com"]))
                    records.append(ses.delivery(message_id, [f"a{n}@y.com"], ses.SENT_AT + 900))
                started = time.perf_counter()
                response = await http.post("/v1/events", content=ses.dumps(*records))
                timings.append(time.perf_counter() - started)
                assert response.status_code == 202
            view = (await http.get("/v1/messages/hang-29-49")).json()
            assert view["status"] == "delivered"
            # All of it happened while the one post still hung.
            assert len(receiver.received) == 1 and time.monotonic() - hung_at < 20
            timings.sort()
            # The hang is 20 s; ingestion went on at its usual pace (tens of ms).
            assert timings[-1] < 2.0, timings


async def test_alerts_api_lists_fired_and_resolved_newest_first(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        alert_rules=rules_file(tmp_path, FAST_REJECTS),
        api_token="t" * 24,
    )
    headers = {"authorization": "Bearer " + "t" * 24}
    near = ses.clock_from(ses.SENT_AT + 1_000)
    async with (
        serving(settings, clock_ms=near) as server,
        httpx.AsyncClient(base_url=server.base) as http,
    ):
        assert (await http.get("/v1/alerts")).status_code == 401
        reject = ses.reject("api-reject", ["r@x.com"])
        await http.post("/v1/events", content=ses.dumps(reject), headers=headers)

        async def firing():
            body = (await http.get("/v1/alerts", headers=headers)).json()
            return body if body["firing"] else None

        body = await firing() or await eventually(firing)
        [alert] = body["firing"]
        assert alert["key"] == "rejects" and alert["severity"] == "critical"
        assert alert["examples"][0]["message_id"] == "api-reject"
        assert body["items"][0]["state"] == "firing"
        metrics = (await http.get(f"{server.admin}/metrics")).text
        assert "ses_tracker_alert_leader 1.0" in metrics
        bad = await http.get("/v1/alerts", params={"state": "sideways"}, headers=headers)
        assert bad.status_code == 422


async def test_overdue_fires_once_across_two_processes_and_a_late_delivery_resolves_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    flusher = aioredis.Redis.from_url(redis_server.url)
    await flusher.flushdb()
    await flusher.aclose()
    rules = rules_file(
        tmp_path,
        "timing: {group_wait_s: 0, group_interval_s: 1, evaluate_every_s: 0.3}\n"
        "rules:\n  - {name: overdue, kind: overdue}\n",
    )
    async with Receiver(checker(SECRET.encode())) as receiver:
        env = {
            "SES_TRACKER_REDIS_URL": redis_server.url,
            "SES_TRACKER_OVERDUE_AFTER_S": "2",
            "SES_TRACKER_ALERT_RULES": str(rules),
            "SES_TRACKER_ALERT_WEBHOOKS": f"webhook={receiver.base}/webhook",
            "SES_TRACKER_ALERT_WEBHOOK_SECRET": SECRET,
        }
        with running("serve", env=env) as a, running("serve", env=env) as b:
            async with httpx.AsyncClient() as http:
                now_ms = time.time_ns() // 1_000_000
                send = ses.send("late-one", ["slow@z.com"], sent_at=now_ms)
                assert (await http.post(f"{a.base}/v1/events", content=ses.dumps(send))).is_success

                async def notices():
                    return [r.json() for r in receiver.received]

                [fired] = await eventually(notices)
                assert fired["key"] == "overdue" and fired["state"] == "firing"
                assert fired["examples"][0]["message_id"] == "late-one"
                view = (await http.get(f"{b.base}/v1/messages/late-one")).json()
                assert view["overdue"] is True
                await asyncio.sleep(1.5)  # several evaluations by both processes
                assert len(receiver.received) == 1

                delivery = ses.delivery("late-one", ["slow@z.com"], now_ms + 4000, sent_at=now_ms)
                await http.post(f"{b.base}/v1/events", content=ses.dumps(delivery))

                async def resolved():
                    return [n for n in await notices() if n["state"] == "resolved"]

                await eventually(resolved)
                await asyncio.sleep(1.0)
                states = [n["state"] for n in await notices()]
                assert states == ["firing", "resolved"]
                view = (await http.get(f"{a.base}/v1/messages/late-one")).json()
                assert view["overdue"] is False and view["status"] == "delivered"
                # Both replicas serve the same alert history.
                listed = [
                    [
                        (i["key"], i["state"])
                        for i in (await http.get(f"{s.base}/v1/alerts")).json()["items"]
                    ]
                    for s in (a, b)
                ]
                assert listed[0] == listed[1] == [("overdue", "resolved"), ("overdue", "firing")]
            for service in (a, b):
                assert service.stop() == 0
                logs = service.logs()
                assert SECRET not in logs and receiver.base not in logs
                for line in logs.splitlines():
                    orjson.loads(line)  # JSON logs only


# --- #23.8: account events from known accounts --------------------------------------------

PAUSED = """
timing: {group_wait_s: 0, group_interval_s: 1, evaluate_every_s: 0.2}
rules:
  - {name: paused, kind: sending_disabled}
"""
GENUINE = "123456789012"


def account_events(accounts: list[str], at: int) -> bytes:
    return orjson.dumps(
        [ses.eventbridge_account("Sending Status Disabled", at, account) for account in accounts]
    )


async def test_a_flood_of_forged_accounts_gives_a_small_alerts_answer(tmp_path: Path) -> None:
    """Unset SES_TRACKER_ACCOUNT_IDS: 2,000 accounts paused, 20 kept, 5 named."""
    settings = Settings(_env_file=None, alert_rules=rules_file(tmp_path, PAUSED))
    async with (
        serving(settings) as server,
        httpx.AsyncClient(base_url=server.base) as http,
    ):
        now_ms = time.time_ns() // 1_000_000
        flood = [f"{900_000_000_000 + n}" for n in range(2_000)]
        response = await http.post("/v1/events", content=account_events(flood, now_ms))
        assert response.status_code == 202 and response.json()["accepted"] == 2_000

        async def firing():
            answer = await http.get("/v1/alerts")
            return answer if answer.json()["firing"] else None

        answer = await eventually(firing)
        [alert] = answer.json()["firing"]
        assert alert["title"].startswith("SES sending is paused for 20 accounts: ")
        assert alert["title"].endswith(" and 15 more")
        assert len(answer.content) < 10_000


async def test_account_events_of_accounts_not_listed_are_counted_and_dropped(
    tmp_path: Path,
) -> None:
    settings = Settings(
        _env_file=None, alert_rules=rules_file(tmp_path, PAUSED), account_ids=GENUINE
    )
    async with (
        serving(settings) as server,
        httpx.AsyncClient(base_url=server.base) as http,
    ):
        now_ms = time.time_ns() // 1_000_000
        forged = [f"{900_000_000_000 + n}" for n in range(500)]
        response = await http.post("/v1/events", content=account_events(forged, now_ms))
        assert response.status_code == 202
        await http.post("/v1/events", content=account_events([GENUINE], now_ms))

        async def firing():
            answer = (await http.get("/v1/alerts")).json()
            return answer["firing"]

        [alert] = await eventually(firing)
        assert alert["title"] == f"SES sending is paused for account {GENUINE}"
        assert "900000000000" not in str(alert)
        metrics = (await http.get(f"{server.admin}/metrics")).text
        assert 'ses_tracker_account_events_dropped_total{reason="not_listed"} 500.0' in metrics
        assert "900000000000" not in metrics  # never an account as a label
