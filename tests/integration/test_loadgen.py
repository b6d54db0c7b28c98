"""`ses-tracker loadgen`: realistic traffic reaches Kafka, SQS and HTTP whole."""

from __future__ import annotations

import random
import subprocess
import uuid
from collections import defaultdict

import orjson
import pytest
from aiobotocore.session import get_session

from service.settings import Settings
from service.traffic.loadgen import HttpTarget, KafkaTarget, SqsTarget, generate
from tests.support.kafka import read_all
from tests.support.process import command
from tests.support.servers import MotoServer, TansuBroker
from tests.support.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_http_target_feeds_a_running_service() -> None:
    async with serving(Settings(_env_file=None)) as server:
        report = await generate(HttpTarget(server.base), rate=0, messages=60, seed=3)
        counters = server.runtime.pipeline.counters["http"]
        assert counters.records == report.events and counters.rejected == 0
        assert report.messages == 60 and report.events >= 60


async def test_kafka_target_keys_each_message_to_one_partition(kafka_broker: TansuBroker) -> None:
    topic = f"loadgen-{uuid.uuid4().hex[:6]}"
    bootstrap = kafka_broker.bootstrap_servers
    report = await generate(
        KafkaTarget(bootstrap, topic, partitions=3), rate=0, messages=80, seed=5
    )
    records = await read_all(bootstrap, topic, report.events)
    assert len(records) == report.events
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        assert orjson.loads(record.value)["mail"]["messageId"].encode() == record.key
        partitions[record.key].add(record.partition)
    assert len(partitions) == 80
    assert all(len(used) == 1 for used in partitions.values())
    assert len(set().union(*partitions.values())) == 3  # spread over the partitions


async def test_sqs_target_sends_every_event_in_ses_envelopes(moto_server: MotoServer) -> None:
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=moto_server.url, region_name="us-east-1"
    ) as sqs:
        url = (await sqs.create_queue(QueueName=f"loadgen-{uuid.uuid4().hex[:6]}"))["QueueUrl"]
        target = SqsTarget(url, moto_server.url, random.Random(1))
        report = await generate(target, rate=0, messages=25, seed=7)
        attributes = await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert int(attributes["Attributes"]["ApproximateNumberOfMessages"]) == report.events


async def test_rate_mode_paces_and_completes_every_message() -> None:
    async with serving(Settings(_env_file=None)) as server:
        report = await generate(HttpTarget(server.base), rate=50, duration_s=1.0, seed=9)
        # 50 messages in the second, each with all its events sent by the end.
        assert report.messages == 50
        assert server.runtime.pipeline.counters["http"].records == report.events


def test_the_command_reports_what_it_sent(kafka_broker: TansuBroker) -> None:
    topic = f"loadgen-cli-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        [*command(), "loadgen", "--to", "kafka", "--target", kafka_broker.bootstrap_servers,
         "--topic", topic, "--partitions", "2", "--rate", "0", "--messages", "30", "--seed", "1"],
        capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["messages"] == 30 and summary["events"] >= 30
    refused = subprocess.run(
        [*command(), "loadgen", "--to", "http", "--target", "http://127.0.0.1:9",
         "--rate", "0", "--duration", "5"],
        capture_output=True, timeout=30, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "--rate 0 needs --messages" in refused.stderr


async def test_asking_for_other_partitions_on_an_existing_topic_is_reported(
    kafka_broker: TansuBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    first = await generate(KafkaTarget(bootstrap, "lg-resize", 3), rate=0, messages=2, seed=1)
    assert first.warnings == ()
    again = await generate(KafkaTarget(bootstrap, "lg-resize", 8), rate=0, messages=2, seed=1)
    assert again.warnings == (
        "topic lg-resize already has 3 partitions, not 8: it was left as it is",
    )
