"""Realistic SES traffic at a chosen rate, to Kafka, SQS or HTTP: ``ses-tracker loadgen``.

The traffic is the demo simulator's (``service.traffic.model.TrafficModel``): the same
mix of deliveries, delays, bounces, complaints, rejects and duplicates, with the
same compressed time. What differs is where it goes:

* ``kafka``: one record per event, the raw SES JSON that Firehose delivers, keyed
  by message id, so a message's events share a partition (the scaling model);
* ``sqs``: one SQS message per event, as SES's SNS and EventBridge destinations
  deliver them (envelopes, with some raw records as with raw message delivery);
* ``http``: NDJSON batches POSTed to ``/v1/events``.

With ``rate`` messages per second, events are sent when they become visible (a
delivery a second or so after its send); with ``rate=0``, ``messages`` messages
are sent at once, as fast as the target takes them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from service.clock import wall_clock_ms
from service.traffic.model import TrafficModel, wrap
from service.traffic.schedule import Schedule

log = structlog.get_logger(__name__)

SQS_BATCH = 10  # SendMessageBatch's limit


class UsageError(ValueError):
    """Arguments that cannot make a run; raised before anything is sent."""


class Target(ABC):
    """Where generated records go; ``send`` returns once the target has them."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    name: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect."""

    @abstractmethod
    async def send(self, records: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""


class KafkaTarget(Target):
    name = "kafka"

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int | None = None) -> None:
        super().__init__()
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.partitions = partitions
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        if self.partitions:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            try:
                await admin.start()
                new = NewTopic(self.topic, num_partitions=self.partitions, replication_factor=1)
                await admin.create_topics([new])
            except TopicAlreadyExistsError:
                pass
            finally:
                await admin.close()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=5
        )
        await self._producer.start()
        if self.partitions:
            existing = await self._producer.partitions_for(self.topic)
            if existing and len(existing) != self.partitions:
                self.warnings.append(
                    f"topic {self.topic} already has {len(existing)} partitions, not "
                    f"{self.partitions}: it was left as it is"
                )

    async def send(self, records: list[dict[str, Any]]) -> None:
        futures = [
            await self._producer.send(
                self.topic, orjson.dumps(record), key=record["mail"]["messageId"].encode()
            )
            for record in records
        ]
        await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


class SqsTarget(Target):
    name = "sqs"

    def __init__(self, queue_url: str, endpoint_url: str | None, rng: random.Random) -> None:
        super().__init__()
        self.queue_url = queue_url
        self.endpoint_url = endpoint_url
        self._rng = rng
        self._exit: Any = None
        self._client: Any = None

    async def start(self) -> None:
        from aiobotocore.session import get_session

        from consumers.sqs import region_of

        context = get_session().create_client(
            "sqs", region_name=region_of(self.queue_url), endpoint_url=self.endpoint_url
        )
        self._client = await context.__aenter__()
        self._exit = context.__aexit__

    async def send(self, records: list[dict[str, Any]]) -> None:
        calls = []
        for start in range(0, len(records), SQS_BATCH):
            entries = [
                {"Id": str(n), "MessageBody": wrap(record, self._rng).decode()}
                for n, record in enumerate(records[start : start + SQS_BATCH])
            ]
            calls.append(self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries))
        for reply in await asyncio.gather(*calls):
            if reply.get("Failed"):
                raise RuntimeError(f"SQS refused {len(reply['Failed'])} messages")

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit(None, None, None)


class HttpTarget(Target):
    name = "http"

    def __init__(self, base_url: str, token: str | None = None) -> None:
        super().__init__()
        headers = {"content-type": "application/x-ndjson"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)

    async def send(self, records: list[dict[str, Any]]) -> None:
        body = b"\n".join(orjson.dumps(record) for record in records)
        response = await self._client.post("/v1/events", content=body)
        response.raise_for_status()

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class LoadReport:
    messages: int
    events: int
    seconds: float
    # Why the run did not go as asked (a slow target, a topic of another size).
    warnings: tuple[str, ...] = ()

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def messages_due(
    rate: float, elapsed_s: float, messages: int | None, duration_s: float | None
) -> int:
    """How many messages a run should have made ``elapsed_s`` into it.

    From the elapsed time, not counted per tick: when the target or the machine is
    slow, the next tick catches up, so the rate holds (an open-loop generator; a
    slow target must not lower the load it is given). Message ``i`` is due at
    ``i / rate``; a run of ``duration_s`` makes exactly ``ceil(rate * duration_s)``.
    """
    if rate <= 0:
        return messages or 0
    due = math.floor(rate * elapsed_s) + 1
    if duration_s is not None:
        due = min(due, math.ceil(rate * duration_s))
    if messages is not None:
        due = min(due, messages)
    return due


async def generate(
    target: Target,
    *,
    rate: float,
    messages: int | None = None,
    duration_s: float | None = None,
    seed: int | None = None,
    batch_size: int = 500,
    tick_s: float = 0.1,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> LoadReport:
    """Send traffic to ``target`` until ``messages`` were made or ``duration_s`` passed;
    events not yet visible then are sent at the end, so every message is complete."""
    if messages is None and duration_s is None:
        raise UsageError("give --messages, --duration or both")
    if rate <= 0 and messages is None:
        raise UsageError("--rate 0 needs --messages")
    rng = random.Random(seed)
    model = TrafficModel(rng)
    schedule = Schedule()
    made = sent = 0
    started = time.perf_counter()

    async def flush(due_by: int | None) -> None:
        nonlocal sent
        while batch := schedule.due(due_by, batch_size):
            await target.send(batch)
            sent += len(batch)

    try:
        # Inside the try: a target that fails to start is still closed.
        await target.start()
        while True:
            elapsed = time.perf_counter() - started
            now = clock_ms()
            for _ in range(made, messages_due(rate, elapsed, messages, duration_s)):
                schedule.add(model.message(now))
                made += 1
            if (messages is not None and made >= messages) or (
                duration_s is not None and elapsed >= duration_s
            ):
                break
            await flush(now)
            await asyncio.sleep(tick_s)
        await flush(None)
    finally:
        await target.close()
    seconds = time.perf_counter() - started
    warnings = list(target.warnings)
    # Open loop: a target slower than the rate makes the run last longer, not send
    # less; say so, or a low events/s reads as the service's figure.
    if duration_s is not None and rate > 0 and seconds > duration_s * 1.25 + 1:
        warnings.append(
            f"the target could not keep up: {duration_s:g} s of traffic took "
            f"{seconds:.1f} s to send ({sent / seconds:.0f} events/s)"
        )
    report = LoadReport(made, sent, seconds, tuple(warnings))
    for warning in warnings:
        log.warning("loadgen_warning", problem=warning)
    log.info(
        "load_generated",
        target=target.name,
        messages=report.messages,
        events=report.events,
        seconds=round(report.seconds, 2),
        events_per_s=round(report.events_per_s),
    )
    return report
