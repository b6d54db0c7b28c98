"""`ses-tracker serve --workers 2`: two processes on one port, one host's cores.

Each worker is a whole replica: a member of the Kafka group (the partitions split
between them), a websocket server following every worker's transitions through
Redis, and a candidate for the one alert lease.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from redis import asyncio as aioredis

from service.clock import wall_clock_ms
from tests.support import ses
from tests.support.kafka import create_topic, keyed, produce, simulated_records, wait_until
from tests.support.process import command, running
from tests.support.servers import RedisServer, TansuBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_more_than_one_worker_needs_redis() -> None:
    refused = subprocess.run(
        [*command(), "serve", "--workers", "2"], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2
    assert "SES_TRACKER_WORKERS > 1 needs SES_TRACKER_REDIS_URL" in refused.stderr


async def test_two_workers_split_the_partitions_and_act_as_one_service(
    redis_server: RedisServer, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.flushdb()  # the service's own prefix: start from nothing
    topic = f"workers-{time.monotonic_ns()}"
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=2)
    records = simulated_records(400, seed=31)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(warn=0.05))
    env = {
        "SES_TRACKER_REDIS_URL": redis_server.url,
        "SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "SES_TRACKER_KAFKA_TOPICS": topic,
        "SES_TRACKER_KAFKA_GROUP_ID": f"g-{topic}",
        "SES_TRACKER_ALERT_RULES": str(rules),
        "SES_TRACKER_CONFIG_POLL_S": "0",  # this test reloads by asking
    }
    before = socket_dirs()
    try:
        with running("serve", "--workers", "2", env=env) as service:
            await produce(kafka_broker.bootstrap_servers, topic, keyed(records))

            async def both_consumed() -> bool:
                healths = await redis.hgetall("st:al:health")
                owned = [
                    source.get("partitions", [])
                    for raw in healths.values()
                    for source in orjson.loads(raw)["sources"]
                ]
                checkpoint = await redis.hgetall(f"st:ckpt:kafka:g-{topic}")
                done = sum(int(v) for v in checkpoint.values())
                return (
                    len(healths) == 2 and sorted(map(len, owned)) == [1, 1] and done == len(records)
                )

            await wait_until(both_consumed, within_s=60)
            await one_truth_on_the_admin_port(service.admin, len(records), rules)
            # SIGHUP reloads every worker's files, and restarts none.
            async with httpx.AsyncClient(base_url=str(service.admin), timeout=10) as admin:
                before_hup = set((await admin.get("/readyz")).json()["workers"])
                service.process.send_signal(signal.SIGHUP)
                await wait_until(lambda: _said(service, "workers_reloaded"), within_s=20)
                assert set((await admin.get("/readyz")).json()["workers"]) == before_hup
            [line] = [x for x in service.logs().splitlines() if "workers_reloaded" in x]
            assert sorted(orjson.loads(line)["outcomes"].values()) == ["reloaded", "reloaded"]
            # The workers' admin sockets: in one private directory, one each.
            [made] = socket_dirs() - before
            assert made.stat().st_mode & 0o777 == 0o700
            assert len(list(made.glob("*.sock"))) == 2
            # One evaluator for the service, as across replicas.
            assert await redis.get("st:al:lease") in {k for k in await redis.hkeys("st:al:health")}

            # A websocket on whichever worker sees a change ingested by either.
            async with websockets.connect(service.base.replace("http", "ws") + "/v1/live") as ws:
                message_id = f"w-{time.monotonic_ns()}"
                async with httpx.AsyncClient(base_url=service.base) as http:
                    for n in range(4):  # the kernel spreads connections over both
                        body = ses.dumps(
                            ses.send(f"{message_id}-{n}", ["a@x.com"], wall_clock_ms())
                        )
                        async with httpx.AsyncClient(base_url=service.base) as fresh:
                            assert (await fresh.post("/v1/events", content=body)).status_code == 202
                    seen: set[str] = set()
                    async with asyncio.timeout(15):
                        while len(seen) < 4:
                            frame = orjson.loads(await ws.recv())
                            if frame["type"] == "transitions":
                                seen |= {
                                    i["message_id"]
                                    for i in frame["items"]
                                    if i["message_id"].startswith(message_id)
                                }
                    found = await http.get(f"/v1/messages/{records[0]['mail']['messageId']}")
                    assert found.status_code == 200
            assert service.stop() == 0
        assert socket_dirs() == before  # removed at exit
    finally:
        await redis.aclose()


RULES = """rules:
  - name: bounces
    kind: bounce_rate
    warn: {warn}
    window_s: 600
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def one_truth_on_the_admin_port(admin: str | None, records: int, rules: Path) -> None:
    """#28.3 and #28.4: the parent answers for both workers. On main before this,
    /metrics answered from whichever worker took the connection (770, 770, 770, 755;
    the alert leader 0, 0, 0, 1) and there was no reload."""
    assert admin is not None
    async with httpx.AsyncClient(base_url=admin, timeout=10) as http:
        for _ in range(4):
            found = samples((await http.get("/metrics")).text)
            read = sum(v for (name, _), v in found.items() if name == "ses_tracker_records_total")
            assert read == records
            assert found[("ses_tracker_alert_leader", ())] == 1
            assert found[("ses_tracker_workers_answering", ())] == 2
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready" and len(ready["workers"]) == 2
        # The parent's admin port refuses browsers too.
        browser = await http.get("/readyz", headers={"Origin": "https://evil.example"})
        assert browser.status_code == 403
        partitions = [
            consumer["partitions"]
            for worker in ready["workers"].values()
            for consumer in worker["consumers"].values()
        ]
        assert sorted(map(len, partitions)) == [1, 1]
        # A reload reaches both workers; a bad file leaves both running as they were.
        await asyncio.to_thread(rules.write_text, RULES.format(warn=0.05) + "    window_s: 9999\n")
        refused = await http.post("/-/reload")
        assert refused.status_code == 422
        for answer in refused.json()["workers"].values():
            [rules_file] = answer["files"]
            assert not rules_file["ok"] and f"{rules}:" in rules_file["error"]
        found = samples((await http.get("/metrics")).text)
        assert found[("ses_tracker_config_reload_success", (("file", "rules"),))] == 0
        await asyncio.to_thread(rules.write_text, RULES.format(warn=0.04))
        reloaded = await http.post("/-/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert len(reloaded.json()["workers"]) == 2
        found = samples((await http.get("/metrics")).text)
        assert found[("ses_tracker_config_reload_success", (("file", "rules"),))] == 1


def socket_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("ses-tracker-*"))


async def _said(service, event: str) -> bool:
    return f'"event":"{event}"' in service.logs() or f'"event": "{event}"' in service.logs()
