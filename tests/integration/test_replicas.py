"""Two replicas, one Redis: shared work, one truth, nothing lost when one dies.

Two `ses-tracker serve` processes consume one Kafka topic (4 partitions, one
consumer group) and one SQS queue, and take HTTP posts, all into one Redis. The
test holds them to a single pass over the same input (``fold``): every event is
applied once in effect, both replicas answer lookups alike, a websocket on one
sees what the other ingested, and after one is killed with SIGKILL mid-stream the
other takes over its partitions and the end state is still exact.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx
import orjson
import pytest
import websockets
from aiobotocore.session import get_session
from redis import asyncio as aioredis

from service.stores import RedisStore
from service.traffic.loadgen import SqsTarget
from tests.support import ses
from tests.support.fold import essence, fold
from tests.support.kafka import create_topic, keyed, produce, simulated_records
from tests.support.process import Service, running
from tests.support.servers import MotoServer, RedisServer, TansuBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def readiness(service: Service) -> dict:
    return httpx.get(f"{service.base}/readyz", timeout=5).json()


def kafka_events(service: Service) -> int:
    return readiness(service)["sources"].get("kafka", {}).get("events", 0)


def partitions_of(service: Service) -> set[str]:
    return set(readiness(service)["consumers"].get("kafka", {}).get("partitions", []))


async def until(check, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def views_agree(
    http: httpx.AsyncClient, services: list[Service], message_id: str, within_s: float
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        answers = [await http.get(f"{s.base}/v1/messages/{message_id}") for s in services]
        views = [a.json()["recipients"] if a.status_code == 200 else None for a in answers]
        if views[0] is not None and all(v == views[0] for v in views):
            return
        assert time.monotonic() < deadline, f"replicas disagree on {message_id}: {views}"
        await asyncio.sleep(0.2)


async def test_two_replicas_share_work_agree_and_survive_one_dying(
    kafka_broker: TansuBroker, moto_server: MotoServer, redis_server: RedisServer
) -> None:
    tag = uuid.uuid4().hex[:6]
    topic, group = f"replicas-{tag}", f"replicas-{tag}"
    bootstrap = kafka_broker.bootstrap_servers
    kafka_records = simulated_records(1200, seed=21)
    sqs_records = simulated_records(60, seed=22)
    http_ids = [f"0100018b-http-{tag}-{n:04d}" for n in range(20)]
    http_records = [
        record
        for message_id in http_ids
        for record in (
            ses.send(message_id, [f"h@{tag}.example"]),
            ses.delivery(message_id, [f"h@{tag}.example"], ses.SENT_AT + 700),
        )
    ]
    await create_topic(bootstrap, topic, partitions=4)
    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.flushdb()
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=moto_server.url, region_name="us-east-1"
    ) as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"replicas-{tag}"))["QueueUrl"]
    env = {
        "SES_TRACKER_REDIS_URL": redis_server.url,
        "SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SES_TRACKER_KAFKA_TOPICS": topic,
        "SES_TRACKER_KAFKA_GROUP_ID": group,
        "SES_TRACKER_KAFKA_MAX_RECORDS": "25",  # small batches: the kill lands mid-stream
        "SES_TRACKER_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SES_TRACKER_SQS_QUEUE_URLS": queue_url,
        "SES_TRACKER_AWS_ENDPOINT_URL": moto_server.url,
        "SES_TRACKER_SQS_WAIT_TIME_S": "1",
        "SES_TRACKER_CACHE_TTL_S": "0",
    }
    store = RedisStore(redis, prefix="st:")
    with running("serve", env=env) as a, running("serve", env=env) as b:
        # One group, four partitions: each replica ends up with some.
        await until(
            lambda: partitions_of(a) and partitions_of(b)
            and len(partitions_of(a) | partitions_of(b)) == 4,
            60, "the group never spread the partitions over both replicas",
        )  # fmt: skip
        async with websockets.connect(a.base.replace("http", "ws") + "/v1/live") as live_a:
            seen_on_a: set[str] = set()

            async def watch() -> None:
                async for raw in live_a:
                    frame = orjson.loads(raw)
                    if frame["type"] == "transitions":
                        seen_on_a.update(item["message_id"] for item in frame["items"])

            watcher = asyncio.create_task(watch())
            async with httpx.AsyncClient(base_url=b.base) as http_b:
                response = await http_b.post("/v1/events", content=ses.dumps(*http_records))
                assert response.status_code == 202
            to_sqs = SqsTarget(queue_url, moto_server.url, random.Random(3))
            await to_sqs.start()
            await to_sqs.send(sqs_records)  # in SNS/EventBridge envelopes, as SES sends
            await to_sqs.close()
            await produce(bootstrap, topic, keyed(kafka_records[:300]))

            # A websocket on A sees what B ingested over HTTP (via Redis's stream).
            await until(lambda: set(http_ids) <= seen_on_a, 20, "A never saw B's transitions")
            watcher.cancel()
        # Both replicas did Kafka work.
        await until(lambda: kafka_events(a) > 0 and kafka_events(b) > 0, 30, "one replica sat idle")
        # Any replica answers for any message, alike. Reads race writes still in flight
        # (an SQS message may be handled twice, and the earlier sighting wins later),
        # so the two must come to agree, not match on the first read.
        async with httpx.AsyncClient() as http:
            for message_id in [*http_ids[:5], sqs_records[0]["mail"]["messageId"]]:
                await views_agree(http, [a, b], message_id, within_s=20)

        # The second half flows; B dies with SIGKILL part-way through it.
        before = kafka_events(b)
        await produce(bootstrap, topic, keyed(kafka_records[300:]))
        await until(lambda: kafka_events(b) > before, 30, "B took none of the second half")
        b.kill()
        checkpoint_name = f"kafka:{group}"
        at_kill = await store.load_checkpoint(checkpoint_name)
        assert sum(int(v) for v in at_kill.values()) < len(kafka_records), "killed too late"

        async def all_committed() -> bool:
            positions = await store.load_checkpoint(checkpoint_name)
            return sum(int(v) for v in positions.values()) == len(kafka_records)

        deadline = time.monotonic() + 60
        while not await all_committed():
            assert time.monotonic() < deadline, "A did not take over B's partitions"
            await asyncio.sleep(0.2)
        assert len(partitions_of(a)) == 4  # A holds every partition now

        # SQS messages are all applied (B's in-flight ones come back after visibility).
        reference, _ = fold([kafka_records, sqs_records, http_records])

        async def sqs_done() -> bool:
            for record in sqs_records:
                stored = await store.get(record["mail"]["messageId"])
                expected = reference[record["mail"]["messageId"]]
                if stored is None or essence(stored) != essence(expected):
                    return False
            return True

        deadline = time.monotonic() + 60
        while not await sqs_done():
            assert time.monotonic() < deadline, "SQS messages were lost"
            await asyncio.sleep(0.5)
        assert a.stop() == 0

    # Every event applied once in effect: the stored records are a single pass's.
    for message_id, expected in reference.items():
        stored = await store.get(message_id)
        assert stored is not None and essence(stored) == essence(expected), message_id
    await redis.aclose()
