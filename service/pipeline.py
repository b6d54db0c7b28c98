"""source -> parse -> merge -> store -> publish, for every ingestion path.

Sources hand raw payloads (or already-parsed events) to :class:`Pipeline`; it
encodes each batch once, merges it into the store in one call, and hands the
resulting status transitions to whoever listens. Counters per source feed
metrics and readiness.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from service.clock import wall_clock_ms
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.events import AccountEvent, ParseResult, SesEvent
from service.lag import EventLag, newest_event_ms
from service.parser import DEFAULT_MAX_PAYLOAD_BYTES, parse_payload
from service.parsing import OFFLOAD_BYTES, ParsePool, processes_per_worker
from service.state import MessageWrite, Transition
from service.stats import DEFAULT_HISTORY_DAYS, DEFAULT_HOURLY_DAYS, Counting
from service.stores.base import Checkpoint, MergeRejected, Store

log = structlog.get_logger(__name__)

TransitionListener = Callable[[Sequence[Transition]], None]
ChangeListener = Callable[[Sequence[Transition], Sequence[MessageWrite]], None]
# Awaited before the batch is acknowledged: what it stores must be durable too.
# Answers False when it dropped the event (an account that does not count).
AccountListener = Callable[[AccountEvent], Awaitable[bool | None]]

DEFAULT_MAX_FUTURE_S = 86_400
# An HTTP source nothing was pushed to for this long is no longer behind.
PUSH_QUIET_S = 120.0
# Payloads larger than OFFLOAD_BYTES (imported from here by the consumers) are
# parsed in worker processes, behind a bounded admission: service.parsing.


# Told the messages whose merge the store refused (message id -> why), before the
# batch's checkpoint is written: the source parks what held them (a Kafka dead-letter
# topic; an SQS message left for its redrive policy; an HTTP answer's errors). It
# raises (StoreUnavailable) when it cannot, and the batch is tried again.
Park = Callable[[dict[str, str]], Awaitable[None]]
# Message ids and reasons quoted in logs and answers are cut to this.
MAX_REASON_CHARS = 300
# Refused messages kept for /readyz (the newest), every one counted.
PARKED_KEPT = 20


@dataclass(frozen=True, slots=True)
class Parked:
    """A message whose merge the store refused: poison, not an outage."""

    source: str
    message_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch encoded for the store, with what its merge counts, as of the moment
    it was encoded."""

    events: Sequence[SesEvent]
    writes: list[MessageWrite]
    counting: Counting


@dataclass(slots=True)
class SourceCounters:
    records: int = 0
    events: int = 0
    rejected: int = 0
    ignored: int = 0
    # Rejections by service.events.Reason code: a closed set, safe as a label.
    reasons: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    recipients_dropped: int = 0
    # Messages the store refused to merge (poison), parked by the source.
    merge_refused: int = 0
    # Recipients dropped from kept events by code (too_many, bad_address).
    dropped_reasons: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Source bytes to durable state: parse (in a process pool past a size), encode a
    write per message, merge into the store with the source's checkpoint, then tell
    the listeners the transitions it made (metrics, the in-process live feed).

    Every source, push endpoint and the demo go through one of these; a bad record
    is counted and parked, never stops the others; a store outage raises
    ``StoreUnavailable`` for the source to retry (nothing was acknowledged).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock_ms: Callable[[], int] = wall_clock_ms,
        live_stats: bool = True,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
        dimensions: Dimensions | None = None,
        history_days: int = DEFAULT_HISTORY_DAYS,
        hourly_days: int = DEFAULT_HOURLY_DAYS,
        parsing: ParsePool | None = None,
    ) -> None:
        self.store = store
        # Where payloads over OFFLOAD_BYTES are parsed (the runtime sizes it).
        self.parsing = parsing or ParsePool(processes_per_worker(1))
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = int(max_future_s * 1000)
        # Replays of history must not land in the live windows (nor trip alerts);
        # every change lands in the daily rollups of history_days and the hourly
        # ones of hourly_days.
        self.live_stats = live_stats
        self.history_days = history_days
        self.hourly_days = hourly_days
        self.dimensions = dimensions or Dimensions()
        # The wall clock every part of a runtime shares (tests set it near their events).
        self.clock_ms = clock_ms
        # Event-time lag of what arrives through ingest() (HTTP pushes), by source.
        self.pushed_lag = EventLag(clock_ms, forget_after_s=PUSH_QUIET_S)
        self._transition_listeners: list[TransitionListener] = []
        # Told each merge's transitions with the writes that made them (metrics
        # read the message's groups there).
        self._change_listeners: list[ChangeListener] = []
        # Told how long each store merge took (seconds); metrics hook in here.
        self.merge_timers: list[Callable[[float], None]] = []
        self._account_listeners: list[AccountListener] = []
        self.counters: dict[str, SourceCounters] = {}
        self.account_events: deque[AccountEvent] = deque(maxlen=100)
        self.parked: deque[Parked] = deque(maxlen=PARKED_KEPT)

    def on_transitions(self, listener: TransitionListener) -> None:
        self._transition_listeners.append(listener)

    def on_changes(self, listener: ChangeListener) -> None:
        self._change_listeners.append(listener)

    def on_account_event(self, listener: AccountListener) -> None:
        self._account_listeners.append(listener)

    def parse(self, payload: bytes, source: str) -> ParseResult:
        """Parse and count one payload here, on the caller's thread."""
        result = self._parser(payload)()
        self._count(result, source)
        return result

    async def parse_off_loop(
        self, payload: bytes, source: str, *, wait: bool = True
    ) -> ParseResult:
        """Parse one payload, in a parse process when it is large.

        With ``wait`` false (HTTP) a full parse pool raises ParseQueueFull (429);
        consumers wait for room instead (service.parsing).
        """
        if len(payload) <= OFFLOAD_BYTES:
            return self.parse(payload, source)
        result = await self.parsing.run(self._parser(payload), wait=wait)
        self._count(result, source)
        return result

    def _parser(self, payload: bytes) -> Callable[[], ParseResult]:
        """The parse of ``payload``, with the limits of this pipeline and this moment."""
        return functools.partial(
            parse_payload,
            payload,
            max_bytes=self.max_payload_bytes,
            latest_ms=self.clock_ms() + self.max_future_ms,
        )

    def _count(self, result: ParseResult, source: str) -> None:
        """Count what was wrong with a payload; log it once, not once per record."""
        counters = self.counters.setdefault(source, SourceCounters())
        counters.records += result.records
        counters.rejected += result.rejected_count
        counters.ignored += result.ignored_count
        counters.recipients_dropped += result.recipients_dropped
        counters.dropped_reasons.update({code.value: n for code, n in result.dropped.items()})
        if result.rejected_count:
            codes = {code.value: n for code, n in result.codes.items()}
            counters.reasons.update(codes)
            first = result.rejected[0]
            log.warning(
                "records_rejected",
                source=source,
                count=result.rejected_count,
                of_records=result.records,
                codes=codes,
                first_index=first.index,
                first_reason=first.reason,
            )
        if result.ignored_count:
            log.info(
                "records_ignored",
                source=source,
                count=result.ignored_count,
                first_reason=result.ignored[0].reason,
            )

    async def ingest(self, payload: bytes, source: str, *, wait: bool = True) -> ParseResult:
        """Parse one payload and make its events durable in the store."""
        result = await self.parse_off_loop(payload, source, wait=wait)
        refused: dict[str, str] = {}

        async def answer_with(found: dict[str, str]) -> None:
            refused.update(found)  # a push is parked in its answer (and counted)

        await self.apply(
            result.events, source, account_events=result.account_events, park=answer_with
        )
        if refused:
            result.refuse_merges(refused)
        if self.live_stats:
            # A push arrives whole: nothing waits behind it, so its lag is its age.
            self.pushed_lag.read(source, newest_event_ms(result.events), behind=False)
        return result

    async def apply(
        self,
        events: Sequence[SesEvent],
        source: str,
        *,
        account_events: Sequence[AccountEvent] = (),
        checkpoint: Checkpoint | None = None,
        park: Park | None = None,
    ) -> list[Transition]:
        """Merge parsed events (and a checkpoint) in one store call, then publish."""
        return await self.store_encoded(
            self.encode(events),
            source,
            account_events=account_events,
            checkpoint=checkpoint,
            park=park,
        )

    def encode(self, events: Sequence[SesEvent]) -> Encoded:
        """The CPU half of :meth:`apply`: a source may encode the next batch while
        the store merges the last one (``store_encoded``)."""
        now_ms = self.clock_ms()
        return Encoded(
            events,
            encode_batch(list(events), now_ms, self.dimensions) if events else [],
            Counting(now_ms, self.live_stats, self.history_days, self.hourly_days),
        )

    async def store_encoded(
        self,
        encoded: Encoded,
        source: str,
        *,
        account_events: Sequence[AccountEvent] = (),
        checkpoint: Checkpoint | None = None,
        park: Park | None = None,
    ) -> list[Transition]:
        """The store half of :meth:`apply`: durable when it returns, then published.

        A merge the store refuses for what it holds (``MergeRejected``) names the
        messages at fault, or is split until they are found: the rest is merged, the
        refused are counted, kept in :attr:`parked` and handed to ``park`` (the
        source's dead letter), and only then is the checkpoint written, so a source
        moves past poison only once it is parked. An outage (``StoreUnavailable``)
        is raised for a retry.
        """
        counters = self.counters.setdefault(source, SourceCounters())
        transitions: list[Transition] = []
        events = encoded.events
        refused: dict[str, str] = {}
        if events or checkpoint is not None:
            started = time.perf_counter()
            try:
                transitions = await self.store.merge(encoded.writes, checkpoint, encoded.counting)
            except MergeRejected as exc:
                if exc.refused:  # the store merged the rest and named the poison
                    refused.update(exc.refused)
                    transitions = exc.merged
                else:
                    transitions = await self._merge_apart(encoded.writes, encoded.counting, refused)
                # (Every part may go in alone: then nothing is parked.)
                if refused:
                    await self._park(refused, source, park)
                if checkpoint is not None:
                    await self.store.merge([], checkpoint, encoded.counting)
            elapsed = time.perf_counter() - started
            for timer in self.merge_timers:
                timer(elapsed)
            kept = [e for e in events if e.message_id not in refused] if refused else events
            counters.events += len(kept)
            counters.by_type.update(event.type.label for event in kept)
        for account_event in account_events:
            await self._publish_account_event(account_event, source)
        if transitions:
            for listener in self._transition_listeners:
                listener(transitions)
            writes = encoded.writes
            if refused:
                writes = [write for write in writes if write.message_id not in refused]
            for change_listener in self._change_listeners:
                change_listener(transitions, writes)
        return transitions

    async def _merge_apart(
        self, writes: Sequence[MessageWrite], counting: Counting, refused: dict[str, str]
    ) -> list[Transition]:
        """Merge ``writes`` in halves, and halves of a half the store refuses, down to
        the single messages it refuses (into ``refused``, with why). A merge is
        idempotent, so parts that went in before the refusal merge again to the same
        state and count nothing twice; k bad messages among n cost O(k log n) calls."""
        transitions: list[Transition] = []
        middle = len(writes) // 2
        for part in (writes[:middle], writes[middle:]):
            if not part:
                continue
            try:
                transitions.extend(await self.store.merge(part, None, counting))
            except MergeRejected as exc:
                if exc.refused:
                    refused.update(exc.refused)
                    transitions.extend(exc.merged)
                elif len(part) == 1:
                    refused[part[0].message_id] = str(exc)[:MAX_REASON_CHARS]
                else:
                    transitions.extend(await self._merge_apart(part, counting, refused))
        return transitions

    async def _park(self, refused: dict[str, str], source: str, park: Park | None) -> None:
        counters = self.counters.setdefault(source, SourceCounters())
        counters.merge_refused += len(refused)
        first_id, first_reason = next(iter(refused.items()))
        log.error(
            "merge_refused",
            source=source,
            messages=len(refused),
            first_message_id=first_id[:MAX_REASON_CHARS],
            first_reason=first_reason,
        )
        for message_id, reason in refused.items():
            self.parked.append(Parked(source, message_id[:MAX_REASON_CHARS], reason))
        if park is not None:
            await park(refused)

    async def _publish_account_event(self, event: AccountEvent, source: str) -> None:
        # Listeners store what they keep (raising StoreUnavailable when they cannot),
        # so the source acknowledges the event only once that is durable.
        kept = True
        for listener in self._account_listeners:
            kept = await listener(event) is not False and kept
        if not kept:  # counted (and logged, bounded) by the listener that dropped it
            return
        self.account_events.append(event)
        level = log.error if event.sending_disabled else log.warning
        level(
            "ses_account_event",
            source=source,
            detail_type=event.detail_type[:64],
            account=None if event.account is None else event.account[:16],
        )
