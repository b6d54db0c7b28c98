"""The Kafka consumer's overlap: a batch prepared before a rebalance is not merged."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from consumers.kafka import KafkaSource
from service.pipeline import Pipeline
from service.stores import MemoryStore
from tests.support import ses

TP = TopicPartition("ses-events", 0)


@dataclass
class Record:
    offset: int
    value: bytes
    key: bytes | None = None


class Consumer:
    """What _prepare and _finish ask of aiokafka's consumer."""

    def __init__(self) -> None:
        self.commits: list[dict] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def commit(self, positions: dict) -> None:
        self.commits.append(dict(positions))


def source_on(store: MemoryStore) -> KafkaSource:
    near = ses.clock_from(ses.SENT_AT + 60_000)
    return KafkaSource(
        Pipeline(store, clock_ms=near), bootstrap_servers="unused:9092", topics=["ses-events"],
        group_id="g",
    )  # fmt: skip


async def test_a_batch_prepared_before_a_rebalance_is_dropped_and_the_next_is_merged() -> None:
    store, consumer = MemoryStore(), Consumer()
    source = source_on(store)
    batch = {TP: [Record(4, ses.dumps(ses.send("m-old", ["a@x.com"])))]}
    prepared = await source._prepare(consumer, None, batch)  # type: ignore[arg-type]
    assert prepared is not None and len(store) == 0  # parsed and encoded, not merged
    source._generation += 1  # partitions moved meanwhile (the listener bumps it)
    await source._finish(consumer, None, prepared)  # type: ignore[arg-type]
    await source.commits_done()
    assert len(store) == 0 and consumer.commits == []
    assert await store.load_checkpoint("kafka:g") == {}

    batch = {TP: [Record(4, ses.dumps(ses.send("m-new", ["a@x.com"])))]}
    prepared = await source._prepare(consumer, None, batch)  # type: ignore[arg-type]
    await source._finish(consumer, None, prepared)  # type: ignore[arg-type]
    assert (await store.get("m-new")) is not None
    await source.commits_done()
    assert consumer.commits == [{TP: 5}]
    assert await store.load_checkpoint("kafka:g") == {"ses-events:0": "5"}
