"""At least once, proven: a consumer killed mid-stream loses nothing.

`ses-tracker serve` consumes a Kafka topic into Redis; it is killed with SIGKILL
part-way through, started again, and must end with exactly the state a single
uninterrupted pass over the stream gives. On one Redis and on a Redis Cluster, where
each batch's slot groups commit independently and the checkpoint follows them all.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.fold import essence, fold
from tests.support.kafka import create_topic, keyed, produce, simulated_records
from tests.support.process import running
from tests.support.redis import RedisTarget
from tests.support.servers import TansuBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def kafka_events(base: str) -> int:
    counters = httpx.get(f"{base}/readyz", timeout=5).json()["sources"]
    return counters.get("kafka", {}).get("events", 0)


async def test_sigkill_mid_stream_then_restart_applies_everything(
    kafka_broker: TansuBroker, redis_target: RedisTarget
) -> None:
    topic, group, prefix = f"crash-{redis_target.kind}", "crash-group", "st:"
    records = simulated_records(700, seed=11)
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=3)
    await produce(kafka_broker.bootstrap_servers, topic, keyed(records))
    await redis_target.flush()
    env = {
        **redis_target.env(),
        "SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "SES_TRACKER_KAFKA_TOPICS": topic,
        "SES_TRACKER_KAFKA_GROUP_ID": group,
        "SES_TRACKER_KAFKA_MAX_RECORDS": "25",  # many small batches: a kill lands mid-stream
        "SES_TRACKER_KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    with running("serve", env=env) as first:
        deadline = time.monotonic() + 60
        while kafka_events(first.base) < len(records) // 4:
            assert time.monotonic() < deadline, "the first consumer made no progress"
            await asyncio.sleep(0.05)
        first.kill()
    store = redis_target.store(prefix=prefix)
    done_before = sum(int(v) for v in (await store.load_checkpoint(f"kafka:{group}")).values())
    assert 0 < done_before < len(records), done_before

    with running("serve", env=env) as second:
        deadline = time.monotonic() + 90
        while True:
            checkpoint = await store.load_checkpoint(f"kafka:{group}")
            if sum(int(v) for v in checkpoint.values()) == len(records):
                break
            assert time.monotonic() < deadline, checkpoint
            await asyncio.sleep(0.2)
        reference, _ = fold([records])
        # What users see: every message's status, per recipient, over HTTP.
        async with httpx.AsyncClient(base_url=second.base) as http:
            for message_id, expected in reference.items():
                view = (await http.get(f"/v1/messages/{message_id}")).json()
                statuses = {r["address"]: r["status"] for r in view["recipients"]}
                assert statuses == {a: expected.recipient_status(a) for a in expected.recipients}
        assert second.stop() == 0

    # And the stored records, event for event.
    for message_id, expected in reference.items():
        stored = await store.get(message_id)
        assert stored is not None and essence(stored) == essence(expected), message_id
    await store.close()
