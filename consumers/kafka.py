"""Kafka source (aiokafka): SES events that Firehose (or anything) wrote to topics.

Semantics, at least once:

* records are fetched in batches (``getmany``); one batch is one store merge;
* the merge also records, per partition, the next offset to read (a checkpoint in
  the store, atomically with the state). On assignment the consumer seeks to that
  checkpoint, so a Redis that lost its last second of writes (AOF ``everysec``)
  simply has that second replayed;
* offsets are then committed to Kafka too, so the usual lag tools see the group;
* a record that cannot be parsed is produced to ``<topic>.dlq`` with the reason in
  the ``ses-tracker-error`` header (and its origin in ``ses-tracker-origin``)
  before its offset is committed, and counted; the consumer moves on. A record the
  dead-letter topic will not take whole (too large) is parked cut to
  ``DLQ_TRUNCATED_BYTES`` with its original size in ``ses-tracker-truncated``. When
  even that fails (topic missing, broker refusing), only that partition stops: it
  is sought back to the batch's start and paused with backoff (1 s doubling to
  60 s; ``dlq_blocked`` in ``/readyz`` and metrics) while the others go on. The
  consumer never leaves the group over it, so it cannot start a rebalance loop;
* a message the store refuses to merge for what it holds (poison: a script error,
  not an outage; ``service.pipeline``) sends the records that held it to the
  dead-letter topic the same way, with ``merge_failed: <why>`` in the error header,
  before the checkpoint moves past them; the rest of the batch is kept. When the
  dead-letter topic refuses them, the whole batch is tried again with backoff;
* before partitions are revoked, the batch in flight finishes and commits. aiokafka
  does not call the rebalance listener on ``stop()``, so shutdown commits
  explicitly first;
* a stored checkpoint outside the partition's log (a broker that lost its data, a
  topic recreated) is not trusted: it is logged and counted
  (``checkpoints_reset``), and the partition starts from the group's committed
  offset when that is inside the log, else from the log's start;
* a partition whose position has not moved for ``STALL_AFTER_S`` while the broker
  holds newer records is listed as ``stalled`` in ``/readyz`` and metrics;
* how far behind real time each partition reads, by the events' own time, is
  ``event_lag_s`` (``service.lag``), beside the lag in records.

A record may hold one event or a Firehose-style batch of several.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers.base import Source, Stopped
from service.events import AccountEvent, SesEvent
from service.lag import EventLag, newest_event_ms
from service.pipeline import OFFLOAD_BYTES, Encoded, Pipeline
from service.stores import Checkpoint, StoreUnavailable

log = structlog.get_logger(__name__)

ERROR_HEADER = "ses-tracker-error"
ORIGIN_HEADER = "ses-tracker-origin"
TRUNCATED_HEADER = "ses-tracker-truncated"
DLQ_SUFFIX = ".dlq"
DLQ_TRUNCATED_BYTES = 64 * 1024
DLQ_BACKOFF_S = (1.0, 60.0)

ProducerFactory = Callable[..., AIOKafkaProducer]
STALL_AFTER_S = 60.0
# Records parsed between yields to the event loop while a merge is in flight.
YIELD_EVERY = 64


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A fetched batch, parsed and encoded, waiting for its turn to be merged."""

    generation: int
    positions: dict[TopicPartition, int]
    parsed: dict[TopicPartition, tuple[list[SesEvent], list[AccountEvent]]]
    encoded: Encoded
    account_events: list[AccountEvent]
    # Each record that gave events, with the messages it holds: a message the store
    # refuses (poison) sends its records to the dead-letter topic.
    holds: list[tuple[TopicPartition, Any, frozenset[str]]]


def position_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class KafkaSource(Source):
    """A consumer group member reading SES events (Firehose's records) from Kafka.

    Offsets are committed only after their records are durable in the store, with
    the store's own checkpoint as the truth on a rebalance; a poison record goes to
    the dead-letter topic and the partition moves on; an outage is retried.
    """

    name = "kafka"

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        bootstrap_servers: str,
        topics: list[str],
        group_id: str,
        max_records: int = 2_000,
        session_timeout_ms: int = 10_000,
        client_id: str = "ses-tracker",
        producer_factory: ProducerFactory = AIOKafkaProducer,
        security: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.group_id = group_id
        self.max_records = max_records
        self.session_timeout_ms = session_timeout_ms
        self.client_id = client_id
        self.checkpoint_name = f"kafka:{group_id}"
        # Held while a batch is processed and committed, never across getmany(): the
        # rebalance listener takes it to wait for the batch in flight.
        self._batch_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.producer_factory = producer_factory
        # TLS and SASL arguments, the same for the consumer and the DLQ producer.
        self.security = security or {}
        self.lag: dict[str, int] = {}
        self.event_lag = EventLag(pipeline.clock_ms)
        self.dead_lettered = 0
        self.dead_letter_truncated = 0
        self.dead_letter_failures = 0
        self.batches = 0
        # Partitions paused because their dead letters could not be parked:
        # partition -> (monotonic time to resume, current backoff).
        self.dlq_blocked: dict[TopicPartition, tuple[float, float]] = {}
        self.checkpoints_reset = 0
        # partition -> (position, monotonic time it last moved)
        self._progress: dict[TopicPartition, tuple[int, float]] = {}
        # Bumped by every rebalance: a batch prepared before one is not merged.
        self._generation = 0
        # The Kafka commit of the last merged batch, running beside the next merge.
        self._committing: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            # What this replica owns now (rebalances move them between replicas).
            "partitions": sorted(
                position_key(tp) for tp in (self._consumer.assignment() if self._consumer else ())
            ),
            "lag": dict(self.lag),
            "event_lag_s": self.event_lag.seconds(),
            "dead_lettered": self.dead_lettered,
            "dead_letter_truncated": self.dead_letter_truncated,
            "dlq_blocked": sorted(position_key(tp) for tp in self.dlq_blocked),
            "stalled": self.stalled(),
            "checkpoints_reset": self.checkpoints_reset,
            "batches": self.batches,
        }

    def stalled(self, now: float | None = None) -> list[str]:
        """Partitions behind the broker whose position has not moved for a while."""
        consumer = self._consumer
        if consumer is None:
            return []
        now = time.monotonic() if now is None else now
        stuck = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None or tp not in self._progress:
                continue
            position, since = self._progress[tp]
            if highwater > position and now - since > STALL_AFTER_S:
                stuck.append(position_key(tp))
        return sorted(stuck)

    def _moved(self, tp: TopicPartition, position: int) -> None:
        previous = self._progress.get(tp)
        if previous is None or previous[0] != position:
            self._progress[tp] = (position, time.monotonic())

    async def run(self) -> None:
        delay = 0.5
        while not self.stopping:
            try:
                await self._consume()
                return
            except (KafkaError, OSError) as exc:
                self.connected = False
                self.state = "retrying"
                self.failure = f"kafka: {type(exc).__name__}: {exc}"
                log.warning("kafka_unavailable_retrying", error=self.failure, retry_s=delay)
                await self.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(1_000, self.session_timeout_ms // 3),
            **self.security,
        )
        producer = self.producer_factory(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-dlq",
            acks="all",
            **self.security,
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self, consumer))
        self._consumer = consumer
        try:
            # Inside the try: a broker that is down fails start(), and both clients
            # must still be closed, or every retry leaks two of them.
            self.state = "connecting"
            await producer.start()
            await consumer.start()
            self.state = "joining group"
            self.connected = True
            self.failure = None
            log.info("kafka_consumer_started", topics=self.topics, group=self.group_id)
            # Batch N+1 is fetched, parsed and encoded while batch N is merged
            # (in_flight) and N-1 committed: the store and this process work at once. A
            # partition's batches still merge in order, each committed only once
            # durable; a batch prepared across a rebalance is dropped (the seeks
            # of the new assignment read it again).
            in_flight: asyncio.Task[None] | None = None
            try:
                while not self.stopping:
                    self._resume_due(consumer)
                    batch = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
                    prepared = await self._prepare(consumer, producer, batch) if batch else None
                    if in_flight is not None:
                        task, in_flight = in_flight, None
                        await task
                    if prepared is not None:
                        in_flight = asyncio.create_task(self._finish(consumer, producer, prepared))
                        # Let it send its merge now: a fetch that finds records
                        # buffered does not yield, and the next parse would run
                        # before the store had anything to do.
                        await asyncio.sleep(0)
            except Stopped:
                pass
            finally:
                if in_flight is not None:
                    with contextlib.suppress(Stopped):
                        await in_flight
                await self.commits_done()
        finally:
            self.connected = False
            self.state = "stopped"
            await consumer.stop()
            await producer.stop()
            self._consumer = None
            log.info("kafka_consumer_stopped", group=self.group_id)

    async def _prepare(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        batch: dict[TopicPartition, list[Any]],
    ) -> _Prepared | None:
        """Parse a fetched batch, park its dead letters, encode it for the store."""
        generation = self._generation
        assignment = consumer.assignment()
        seen = 0
        parsed: dict[TopicPartition, tuple[list[SesEvent], list[AccountEvent]]] = {}
        dead: list[tuple[TopicPartition, Any, str]] = []
        holds: list[tuple[TopicPartition, Any, frozenset[str]]] = []
        positions: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            if tp not in assignment:  # revoked since the fetch: its new owner reads it
                continue
            events: list[SesEvent] = []
            account_events: list[AccountEvent] = []
            for record in records:
                seen += 1
                if seen % YIELD_EVERY == 0:
                    # Let the loop flush the merge in flight to Redis: a large
                    # command is written as the socket takes it, and Redis cannot
                    # start on it while this parse holds the loop.
                    await asyncio.sleep(0)
                value = record.value or b""
                if len(value) > OFFLOAD_BYTES:
                    result = await self.pipeline.parse_off_loop(value, "kafka")
                else:
                    result = self.pipeline.parse(value, "kafka")
                events.extend(result.events)
                account_events.extend(result.account_events)
                if result.events:
                    holds.append((tp, record, frozenset(e.message_id for e in result.events)))
                if result.rejected_count:
                    reasons = "; ".join(f"[{i.index}] {i.reason}" for i in result.rejected[:5])
                    dead.append((tp, record, reasons))
            parsed[tp] = (events, account_events)
            positions[tp] = records[-1].offset + 1
        if not positions:
            return None
        if dead:
            for tp in await self._dead_letter(producer, dead):
                # Not parked, so not past it: read this partition's batch again later.
                self._block(consumer, tp, batch[tp][0].offset)
                del positions[tp]
                del parsed[tp]
            if not positions:
                return None
        events = [event for tp_events, _ in parsed.values() for event in tp_events]
        return _Prepared(
            generation,
            positions,
            parsed,
            self.pipeline.encode(events),
            [event for _, tp_events in parsed.values() for event in tp_events],
            [hold for hold in holds if hold[0] in positions],
        )

    async def _finish(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, prepared: _Prepared
    ) -> None:
        """Make a prepared batch durable with its checkpoint, then commit it."""
        async with self._batch_lock:
            if prepared.generation != self._generation:
                return  # a rebalance came between: the new assignment reads it again
            positions = prepared.positions
            checkpoint = Checkpoint(
                self.checkpoint_name,
                {position_key(tp): str(offset) for tp, offset in positions.items()},
            )

            async def dead_letter(refused: dict[str, str]) -> None:
                # Before the checkpoint moves past them: parked, or the batch again.
                first = next(iter(refused.values()))
                dead = [
                    (tp, record, f"merge_failed: {first}")
                    for tp, record, held in prepared.holds
                    if not held.isdisjoint(refused)
                ]
                if await self._dead_letter(producer, dead):
                    raise StoreUnavailable("poison records not parked: dead-letter topic refused")

            await self.durably(
                lambda: self.pipeline.store_encoded(
                    prepared.encoded,
                    "kafka",
                    account_events=prepared.account_events,
                    checkpoint=checkpoint,
                    park=dead_letter,
                ),
                what="kafka batch",
            )
            # Durable: commit to Kafka beside the next merge, after the last commit.
            previous = self._committing
            self._committing = asyncio.create_task(self._commit_after(previous, consumer, prepared))

    async def _commit_after(
        self, previous: asyncio.Task[None] | None, consumer: AIOKafkaConsumer, prepared: _Prepared
    ) -> None:
        if previous is not None:
            await previous
        await self._commit(consumer, prepared.positions)
        self.batches += 1
        self._update_lag(consumer, prepared.positions, prepared.parsed)

    async def commits_done(self) -> None:
        """Wait for the offsets of every merged batch to be committed to Kafka."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _dead_letter(
        self, producer: AIOKafkaProducer, dead: list[tuple[TopicPartition, Any, str]]
    ) -> set[TopicPartition]:
        """Park each record (cut down if it must be); the partitions that could not."""
        outcomes = await asyncio.gather(
            *(self._park(producer, tp, record, reason) for tp, record, reason in dead),
            return_exceptions=True,
        )
        blocked: set[TopicPartition] = set()
        parked = 0
        for (tp, record, _), outcome in zip(dead, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, KafkaError | OSError):
                    raise outcome
                blocked.add(tp)
                self.dead_letter_failures += 1
                log.error(
                    "kafka_dead_letter_failed",
                    origin=f"{tp.topic}:{tp.partition}:{record.offset}",
                    error=type(outcome).__name__,
                )
            else:
                parked += 1
                self.dlq_blocked.pop(tp, None)
        self.dead_lettered += parked
        if parked:
            log.warning("kafka_records_dead_lettered", count=parked)
        return blocked

    async def _park(
        self, producer: AIOKafkaProducer, tp: TopicPartition, record: Any, reason: str
    ) -> None:
        headers = [
            (ERROR_HEADER, reason.encode()[:4_000]),
            (ORIGIN_HEADER, f"{tp.topic}:{tp.partition}:{record.offset}".encode()),
        ]
        topic = tp.topic + DLQ_SUFFIX
        value = record.value or b""
        try:
            await (await producer.send(topic, value=value, key=record.key, headers=headers))
            return
        except KafkaError as exc:
            if len(value) <= DLQ_TRUNCATED_BYTES:
                raise
            log.warning("kafka_dead_letter_cut", size=len(value), error=type(exc).__name__)
        headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
        key = record.key[:1024] if record.key else record.key
        await (
            await producer.send(topic, value=value[:DLQ_TRUNCATED_BYTES], key=key, headers=headers)
        )
        self.dead_letter_truncated += 1

    def _block(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        _, previous = self.dlq_blocked.get(tp, (0.0, 0.0))
        low, high = DLQ_BACKOFF_S
        backoff = min(high, max(low, previous * 2))
        self.dlq_blocked[tp] = (time.monotonic() + backoff, backoff)
        consumer.seek(tp, offset)
        consumer.pause(tp)
        log.error(
            "kafka_partition_paused", partition=position_key(tp), offset=offset, retry_s=backoff
        )

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        assigned = consumer.assignment()
        for tp, (until, _) in list(self.dlq_blocked.items()):
            if tp not in assigned:
                del self.dlq_blocked[tp]
            elif until <= now and tp in consumer.paused():
                consumer.resume(tp)

    async def _commit(
        self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]
    ) -> None:
        try:
            await consumer.commit(positions)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions; the store's checkpoint already says
            # where their durable state ends, so the new owner loses nothing.
            log.warning("kafka_commit_failed", error=str(exc))

    def _update_lag(
        self,
        consumer: AIOKafkaConsumer,
        positions: dict[TopicPartition, int],
        parsed: dict[TopicPartition, tuple[list[SesEvent], list[AccountEvent]]],
    ) -> None:
        for tp, offset in positions.items():
            self._moved(tp, offset)
            highwater = consumer.highwater(tp)
            key = position_key(tp)
            if highwater is not None:
                self.lag[key] = max(0, highwater - offset)
            behind = highwater is not None and highwater > offset
            self.event_lag.read(key, newest_event_ms(parsed[tp][0]), behind)

    async def seek_to_checkpoints(
        self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]
    ) -> None:
        try:
            checkpoint = await self.pipeline.store.load_checkpoint(self.checkpoint_name)
        except StoreUnavailable as exc:
            log.warning("kafka_checkpoint_unavailable", error=str(exc))
            return  # Kafka's committed offsets are the fallback
        stored = {tp: int(checkpoint[position_key(tp)]) for tp in assigned
                  if position_key(tp) in checkpoint}  # fmt: skip
        sought: dict[TopicPartition, int] = {}
        if stored:
            starts = await consumer.beginning_offsets(list(stored))
            ends = await consumer.end_offsets(list(stored))
            for tp, offset in stored.items():
                if starts[tp] <= offset <= ends[tp]:
                    consumer.seek(tp, offset)
                    sought[tp] = offset
                else:
                    sought[tp] = await self._reset_checkpoint(
                        consumer, tp, offset, starts[tp], ends[tp]
                    )
        now = time.monotonic()
        for tp in assigned:
            self._progress.pop(tp, None)
            if tp in sought:
                self._progress[tp] = (sought[tp], now)
        self.state = "consuming"
        log.info(
            "kafka_partitions_assigned", partitions=sorted(position_key(tp) for tp in assigned)
        )

    async def _reset_checkpoint(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, start: int, end: int
    ) -> int:
        """A checkpoint outside the log: the group's offset if inside, else the start."""
        self.checkpoints_reset += 1
        committed = await consumer.committed(tp)
        resumed = committed if committed is not None and start <= committed <= end else start
        consumer.seek(tp, resumed)
        log.warning(
            "kafka_checkpoint_outside_log",
            partition=position_key(tp),
            checkpoint=offset,
            log_start=start,
            log_end=end,
            resumed_at=resumed,
        )
        return resumed


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer) -> None:
        self.source = source
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Only eager assignors exist: keep this short. Waiting for the lock lets the
        # batch in flight finish and commit before the partitions move.
        async with self.source._batch_lock:
            # The Redis checkpoint already says where durable state ends; a commit
            # that fails here only leaves Kafka's view of the group behind.
            with contextlib.suppress(KafkaError, OSError):
                await self.source.commits_done()
            self.source._generation += 1
            for tp in revoked:
                self.source.lag.pop(position_key(tp), None)
                self.source.event_lag.forget(position_key(tp))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.source._generation += 1
        await self.source.seek_to_checkpoints(self.consumer, set(assigned))
