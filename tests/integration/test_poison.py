"""A merge the store refuses for what it holds is poison, not an outage: the batch is
split to find the message, everything else is kept, and the poison is parked (Kafka
dead-letter topic, SQS redrive, the HTTP answer). Redis refuses deterministically
here because the message's record key is made a hash (WRONGTYPE in the script)."""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest
from aiobotocore.session import get_session

from consumers.kafka import DLQ_SUFFIX, ERROR_HEADER, ORIGIN_HEADER
from consumers.sqs import SqsSource
from service.events import Reason
from service.pipeline import Pipeline
from service.settings import Settings
from service.stores import Checkpoint, RedisStore
from tests.support import ses
from tests.support.kafka import committed, create_topic, produce, read_all, wait_until
from tests.support.redis import RedisTarget
from tests.support.serving import serving
from tests.support.sources import RunningSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

T = ses.SENT_AT
_names = itertools.count()


async def poison(store: RedisStore, message_id: str) -> None:
    """Make every later merge of ``message_id`` fail inside the script."""
    await store.keyspace.client.hset(store.key(message_id), "not", "a record")


def batch(ids: list[str]) -> list:
    from tests.support.fold import events_of

    records = [ses.send(i, [f"{i}@example.com"]) for i in ids]
    records += [ses.delivery(i, [f"{i}@example.com"], T + 500) for i in ids]
    return list(events_of(records))


async def test_a_refused_message_is_parked_and_the_rest_of_its_batch_kept(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store()
    pipeline = Pipeline(store, clock_ms=ses.clock_from(T + 60_000))
    ids = [f"poison-batch-{n}" for n in range(40)]
    bad = {ids[7], ids[31]}
    parked: list[dict[str, str]] = []

    async def park(refused: dict[str, str]) -> None:
        # The checkpoint is not written before the source has parked the poison.
        assert await store.load_checkpoint("kafka:g") == {}
        parked.append(refused)

    try:
        for message_id in bad:
            await poison(store, message_id)
        checkpoint = Checkpoint("kafka:g", {"ses-events:0": "80"})
        transitions = await pipeline.apply(batch(ids), "kafka", checkpoint=checkpoint, park=park)
        assert [set(p) for p in parked] == [bad]
        assert all("WRONGTYPE" in reason for reason in parked[0].values())
        for message_id in ids:
            record = await store.get(message_id) if message_id not in bad else None
            assert message_id in bad or record.status() == "delivered"
        assert {t.message_id for t in transitions} == set(ids) - bad
        assert await store.load_checkpoint("kafka:g") == {"ses-events:0": "80"}
        counters = pipeline.counters["kafka"]
        assert counters.merge_refused == 2 and counters.events == 2 * 38
        assert {p.message_id for p in pipeline.parked} == bad
    finally:
        await store.close()


async def test_the_http_answer_lists_a_refused_record_as_merge_failed(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    settings = Settings(**redis_target.settings())
    async with serving(settings) as server:
        store = server.runtime.store.truth  # behind the read cache
        await poison(store, "http-bad")
        body = b"\n".join(
            [
                ses.dumps(ses.send("http-good", ["a@example.com"])),
                ses.dumps(ses.send("http-bad", ["b@example.com"])),
                ses.dumps(ses.send("http-good-2", ["c@example.com"])),
            ]
        )
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
            answer = await client.post("/v1/events", content=body)
            assert answer.status_code == 202, answer.text
            got = answer.json()
            assert got["accepted"] == 2 and got["rejected"] == 1
            assert [(e["index"], e["code"]) for e in got["errors"]] == [
                (1, Reason.MERGE_FAILED.value)
            ]
            assert got["error_codes"] == {"merge_failed": 1}
            only_bad = await client.post("/v1/events", content=body.split(b"\n")[1])
            assert only_bad.status_code == 400
            ready = (await client.get("/readyz")).json()
            assert ready["status"] == "ready"
            assert ready["sources"]["http"]["merge_refused"] == 2
            assert [p["message_id"] for p in ready["parked"]] == ["http-bad", "http-bad"]
            metrics = (await client.get(f"{server.admin}/metrics")).text
            assert 'ses_tracker_merges_refused_total{source="http"} 2.0' in metrics
        assert (await store.get("http-good-2")).status() == "sent"


async def test_kafka_dead_letters_a_refused_record_and_commits_past_it(
    kafka_broker, redis_target: RedisTarget
) -> None:
    from consumers.kafka import KafkaSource

    await redis_target.flush()
    store = redis_target.store()
    topic = f"poison-merge-{next(_names)}"
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
    await poison(store, "k-bad")
    items = [
        (b"k-good", ses.dumps(ses.send("k-good", ["a@example.com"]))),
        (b"k-bad", ses.dumps(ses.send("k-bad", ["b@example.com"]))),
        (b"k-good", ses.dumps(ses.delivery("k-good", ["a@example.com"], T + 900))),
    ]
    await produce(kafka_broker.bootstrap_servers, topic, items)
    source = KafkaSource(
        Pipeline(store, clock_ms=ses.clock_from(T + 60_000)),
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topics=[topic],
        group_id="g-merge-poison",
        max_records=100,
        session_timeout_ms=6_000,
    )
    running = RunningSource(source)
    try:
        parked = await read_all(kafka_broker.bootstrap_servers, topic + DLQ_SUFFIX, expected=1)
        headers = dict(parked[0].headers)
        assert headers[ORIGIN_HEADER].decode() == f"{topic}:0:1"
        assert headers[ERROR_HEADER].decode().startswith("merge_failed: ")
        assert parked[0].value == items[1][1]

        async def moved_on() -> bool:
            got = await committed(kafka_broker.bootstrap_servers, "g-merge-poison", topic, 1)
            return got == {0: 3}

        await wait_until(moved_on, 30)
    finally:
        await running.stop()
        await store.close()
    assert (await redis_target.store().get("k-good")).status() == "delivered"
    assert source.pipeline.counters["kafka"].merge_refused >= 1
    assert source.failure is None


async def test_sqs_leaves_a_refused_message_for_its_redrive_policy(
    moto_server, redis_target: RedisTarget
) -> None:
    await redis_target.flush()
    store = redis_target.store()
    await poison(store, "q-bad")
    async with get_session().create_client(
        "sqs", endpoint_url=moto_server.url, region_name="us-east-1"
    ) as sqs:
        name = f"poison-merge-{next(_names)}"
        dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        policy = orjson.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"}).decode()
        url = (
            await sqs.create_queue(
                QueueName=name, Attributes={"VisibilityTimeout": "1", "RedrivePolicy": policy}
            )
        )["QueueUrl"]
        for message_id in ("q-bad", "q-good"):
            body = ses.dumps(ses.send(message_id, ["a@example.com"])).decode()
            await sqs.send_message(QueueUrl=url, MessageBody=body)
        source = SqsSource(
            Pipeline(store, clock_ms=ses.clock_from(T + 60_000)),
            queue_urls=[url],
            endpoint_url=moto_server.url,
            pollers_per_queue=1,
            wait_time_s=1,
        )
        running = RunningSource(source)

        async def parked() -> bool:
            depth = await sqs.get_queue_attributes(
                QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
            )
            return depth["Attributes"]["ApproximateNumberOfMessages"] == "1"

        try:
            await wait_until(parked, 45)
        finally:
            await running.stop()
    assert (await store.get("q-good")).status() == "sent"
    assert source.left_for_redrive >= 2 and source.pipeline.counters["sqs"].merge_refused >= 2
    await store.close()


async def test_firehose_answers_200_for_a_refused_record_and_parks_it(
    redis_target: RedisTarget,
) -> None:
    """A non-2xx would make Firehose send the whole batch again, poison included."""
    import base64

    from tests.support.push import harness_for, open_settings

    await redis_target.flush()
    async for harness in harness_for(open_settings(**redis_target.settings())):
        await poison(harness.runtime.store.truth, "fh-bad")
        records = [
            ses.dumps(ses.send("fh-good", ["a@example.com"])),
            ses.dumps(ses.send("fh-bad", ["b@example.com"])),
        ]
        body = orjson.dumps(
            {
                "requestId": "req-poison",
                "timestamp": 1_700_000_000_000,
                "records": [{"data": base64.b64encode(r).decode()} for r in records],
            }
        )
        answer = await harness.client.post("/v1/ingest/firehose", content=body)
        assert answer.status_code == 200 and "errorMessage" not in answer.json()
        assert (await harness.runtime.store.get("fh-good")).status() == "sent"
        assert harness.runtime.pipeline.counters["firehose"].merge_refused == 1
        assert [p.message_id for p in harness.runtime.pipeline.parked] == ["fh-bad"]
