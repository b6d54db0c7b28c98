"""The SQS consumer against moto's server (real HTTP, via aiobotocore) and Redis."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiobotocore.session import get_session
from redis import asyncio as aioredis

from consumers.sqs import SqsSource, region_of
from service.pipeline import Pipeline
from service.stores import RedisStore
from tests.support import ses
from tests.support.fold import essence, fold
from tests.support.kafka import simulated_records, wait_until
from tests.support.servers import MotoServer, RedisServer
from tests.support.sources import RunningSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_names = itertools.count()
T = ses.SENT_AT


@pytest.fixture
async def sqs(moto_server: MotoServer) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", endpoint_url=moto_server.url, region_name="us-east-1"
    ) as client:
        yield client


async def make_queue(sqs: Any, *, visibility_s: int = 5, max_receives: int | None = None) -> str:
    # Short visibility: a receive whose answer is lost on a loaded machine comes back
    # in seconds, well inside the tests' deadlines.
    name = f"ses-events-{next(_names)}"
    attributes = {"VisibilityTimeout": str(visibility_s)}
    if max_receives is not None:
        dlq = await sqs.create_queue(QueueName=f"{name}-dlq")
        dlq_arn = (
            await sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = orjson.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
        ).decode()
    return (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]


async def queue_depth(sqs: Any, url: str) -> int:
    attributes = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return sum(int(v) for v in attributes["Attributes"].values())


async def drained(sqs: Any, url: str) -> bool:
    """Nothing left, visible or in flight.

    Counting deletes would not do: SQS delivers at least once, and moto's threaded
    server can hand one message to two concurrent pollers under load.
    """
    return await queue_depth(sqs, url) == 0


def source_for(moto: MotoServer, store: RedisStore, url: str) -> SqsSource:
    return SqsSource(
        Pipeline(store), queue_urls=[url], endpoint_url=moto.url, pollers_per_queue=2, wait_time_s=1
    )


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(aioredis.Redis.from_url(redis_server.url), prefix=f"sqs{next(_names)}:")
    try:
        yield store
    finally:
        await store.close()


def test_region_comes_from_the_queue_url_else_the_environment(monkeypatch) -> None:
    assert region_of("https://sqs.eu-west-3.amazonaws.com/123456789012/q") == "eu-west-3"
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert region_of("http://127.0.0.1:5000/123456789012/q") == "ap-south-1"
    monkeypatch.setenv("AWS_REGION", "sa-east-1")
    assert region_of("http://127.0.0.1:5000/123456789012/q") == "sa-east-1"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert region_of("http://127.0.0.1:5000/123456789012/q") == "us-east-1"


async def test_every_body_shape_reaches_the_store_and_is_deleted(moto_server, sqs, store) -> None:
    url = await make_queue(sqs)
    bodies = [
        ses.dumps(ses.bounce("q-raw", ["a@x.com"], T + 100)),
        orjson.dumps(ses.sns(ses.complaint("q-sns", ["a@x.com"], T + 100))),
        orjson.dumps(ses.eventbridge(ses.delay("q-eb", ["a@x.com"], T + 100))),
        orjson.dumps(
            [ses.send("q-batch", ["a@x.com"]), ses.delivery("q-batch", ["a@x.com"], T + 9)]
        ),
    ]
    for body in bodies:
        await sqs.send_message(QueueUrl=url, MessageBody=body.decode())
    running = RunningSource(source_for(moto_server, store, url))

    await wait_until(lambda: drained(sqs, url), 30)
    await running.stop()
    # How old the newest event read from the queue was, by the queue's name.
    [[position, lag_s]] = running.source.status()["event_lag_s"].items()
    assert position == url.rsplit("/", 1)[-1] and lag_s > 0
    statuses = {m: (await store.get(m)).status() for m in ("q-raw", "q-sns", "q-eb", "q-batch")}
    assert statuses == {
        "q-raw": "bounced",
        "q-sns": "complained",
        "q-eb": "delayed",
        "q-batch": "delivered",
    }


async def test_a_stream_of_traffic_ends_in_the_right_state(moto_server, sqs, store) -> None:
    url = await make_queue(sqs)
    records = simulated_records(60, seed=8)
    for start in range(0, len(records), 10):
        entries = [
            {"Id": str(i), "MessageBody": orjson.dumps(r).decode()}
            for i, r in enumerate(records[start : start + 10])
        ]
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)
    running = RunningSource(source_for(moto_server, store, url))

    await wait_until(lambda: drained(sqs, url), 45)
    await running.stop()
    reference, _ = fold([records])
    for message_id, expected in reference.items():
        assert essence(await store.get(message_id)) == essence(expected), message_id


async def test_poison_is_left_for_redrive_and_counted(moto_server, sqs, store) -> None:
    url = await make_queue(sqs, visibility_s=1, max_receives=2)
    await sqs.send_message(QueueUrl=url, MessageBody="{truncated")
    mixed = b"\n".join([ses.dumps(ses.send("q-mixed", ["a@x.com"])), b'{"eventType": "Zap"}'])
    await sqs.send_message(QueueUrl=url, MessageBody=mixed.decode())
    await sqs.send_message(
        QueueUrl=url, MessageBody=ses.dumps(ses.send("q-good", ["a@x.com"])).decode()
    )
    running = RunningSource(source_for(moto_server, store, url))
    dlq_url = url + "-dlq"

    async def parked() -> bool:
        return await queue_depth(sqs, dlq_url) == 2 and await queue_depth(sqs, url) == 0

    await wait_until(parked, 45)
    await running.stop()
    # The good events of a partly bad message are applied all the same.
    assert (await store.get("q-mixed")).status() == "sent"
    assert (await store.get("q-good")).status() == "sent"
    assert running.source.deleted >= 1  # q-good, perhaps delivered twice
    assert running.source.left_for_redrive >= 4  # each poison message, at least twice
    assert running.source.pipeline.counters["sqs"].rejected >= 4


async def test_messages_are_not_deleted_before_their_state_is_durable(
    moto_server, sqs, tmp_path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    store = RedisStore(aioredis.Redis.from_url(redis.url))
    try:
        url = await make_queue(sqs, visibility_s=2)
        redis.stop()
        await sqs.send_message(
            QueueUrl=url, MessageBody=ses.dumps(ses.send("q-d", ["a@x.com"])).decode()
        )
        running = RunningSource(source_for(moto_server, store, url))

        async def failing() -> bool:
            return running.source.failure is not None

        await wait_until(failing, 30)
        await asyncio.sleep(3)  # past the visibility timeout: kept invisible, not deleted
        assert running.source.deleted == 0
        assert await queue_depth(sqs, url) == 1
        redis.start()

        await wait_until(lambda: drained(sqs, url), 30)
        await running.stop()
        assert (await store.get("q-d")).status() == "sent"
    finally:
        await store.close()
        redis.stop()


async def test_serve_consumes_a_queue_configured_by_settings(
    moto_server, sqs, redis_server
) -> None:
    from tests.support.process import running

    url = await make_queue(sqs)
    env = {
        "SES_TRACKER_SQS_QUEUE_URLS": url,
        "SES_TRACKER_AWS_ENDPOINT_URL": moto_server.url,
        "SES_TRACKER_SQS_WAIT_TIME_S": "1",
        "SES_TRACKER_REDIS_URL": redis_server.url,
    }
    with running("serve", env=env) as service:
        bodies = [
            orjson.dumps(ses.sns(ses.send("q-proc", ["a@x.com", "b@y.com"]))),
            orjson.dumps(ses.eventbridge(ses.delivery("q-proc", ["a@x.com"], T + 700))),
            ses.dumps(ses.bounce("q-proc", ["b@y.com"], T + 900)),
        ]
        for body in bodies:
            await sqs.send_message(QueueUrl=url, MessageBody=body.decode())

        async def applied() -> bool:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{service.base}/v1/messages/q-proc")
                return response.status_code == 200 and response.json()["status"] == "bounced"

        await wait_until(applied, 30)
        async with httpx.AsyncClient() as client:
            message = (await client.get(f"{service.base}/v1/messages/q-proc")).json()
            ready = (await client.get(f"{service.base}/readyz")).json()
        assert {r["address"]: r["status"] for r in message["recipients"]} == {
            "a@x.com": "delivered",
            "b@y.com": "bounced",
        }
        assert ready["status"] == "ready" and ready["consumers"]["sqs"]["connected"]
        assert service.stop() == 0
    assert await queue_depth(sqs, url) == 0
