"""source -> parse -> merge -> store -> publish, for every ingestion path.

Sources hand raw payloads (or already-parsed events) to :class:`Pipeline`; it
encodes each batch once, merges it into the store in one call, and hands the
resulting status transitions to whoever listens. Counters per source feed
metrics and readiness.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from service.codec import encode_batch
from service.events import AccountEvent, ParseResult, SesEvent
from service.parser import DEFAULT_MAX_PAYLOAD_BYTES, parse_payload
from service.state import Transition
from service.stats import bucket_of
from service.stores.base import Checkpoint, Store

log = structlog.get_logger(__name__)

TransitionListener = Callable[[Sequence[Transition]], None]
AccountListener = Callable[[AccountEvent], None]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class SourceCounters:
    records: int = 0
    events: int = 0
    rejected: int = 0
    ignored: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)


class Pipeline:
    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock_ms: Callable[[], int] = wall_clock_ms,
        live_stats: bool = True,
    ) -> None:
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        # Replays of history must not land in the live windows (nor trip alerts).
        self.live_stats = live_stats
        self._clock_ms = clock_ms
        self._transition_listeners: list[TransitionListener] = []
        # Told how long each store merge took (seconds); metrics hook in here.
        self.merge_timers: list[Callable[[float], None]] = []
        self._account_listeners: list[AccountListener] = []
        self.counters: dict[str, SourceCounters] = {}
        self.account_events: deque[AccountEvent] = deque(maxlen=100)

    def on_transitions(self, listener: TransitionListener) -> None:
        self._transition_listeners.append(listener)

    def on_account_event(self, listener: AccountListener) -> None:
        self._account_listeners.append(listener)

    def parse(self, payload: bytes, source: str) -> ParseResult:
        """Parse and count one payload; report what was wrong with it."""
        result = parse_payload(payload, max_bytes=self.max_payload_bytes)
        counters = self.counters.setdefault(source, SourceCounters())
        counters.records += result.records
        counters.rejected += len(result.rejected)
        counters.ignored += len(result.ignored)
        for issue in result.rejected:
            counters.reasons[_reason_kind(issue.reason)] += 1
            log.warning("record_rejected", source=source, index=issue.index, reason=issue.reason)
        for issue in result.ignored:
            log.info("record_ignored", source=source, index=issue.index, reason=issue.reason)
        return result

    async def ingest(self, payload: bytes, source: str) -> ParseResult:
        """Parse one payload and make its events durable in the store."""
        result = self.parse(payload, source)
        await self.apply(result.events, source, account_events=result.account_events)
        return result

    async def apply(
        self,
        events: Sequence[SesEvent],
        source: str,
        *,
        account_events: Sequence[AccountEvent] = (),
        checkpoint: Checkpoint | None = None,
    ) -> list[Transition]:
        """Merge parsed events (and a checkpoint) in one store call, then publish."""
        counters = self.counters.setdefault(source, SourceCounters())
        transitions: list[Transition] = []
        if events or checkpoint is not None:
            now_ms = self._clock_ms()
            writes = encode_batch(list(events), now_ms)
            started = time.perf_counter()
            bucket = bucket_of(now_ms) if self.live_stats else None
            transitions = await self.store.merge(writes, checkpoint, bucket)
            elapsed = time.perf_counter() - started
            for timer in self.merge_timers:
                timer(elapsed)
            counters.events += len(events)
            counters.by_type.update(event.type.label for event in events)
        for account_event in account_events:
            self._publish_account_event(account_event, source)
        if transitions:
            for listener in self._transition_listeners:
                listener(transitions)
        return transitions

    def _publish_account_event(self, event: AccountEvent, source: str) -> None:
        self.account_events.append(event)
        level = log.error if event.sending_disabled else log.warning
        level(
            "ses_account_event", source=source, detail_type=event.detail_type, account=event.account
        )
        for listener in self._account_listeners:
            listener(event)


def _reason_kind(reason: str) -> str:
    """A low-cardinality label for a rejection reason (for counters and metrics)."""
    head = reason.split(":", 1)[0]
    if head.startswith("Records["):
        head = reason.split(":", 2)[1].strip() if reason.count(":") >= 2 else head
    if head.startswith("invalid JSON") or head.startswith("not UTF-8"):
        return "invalid_json"
    if head.startswith("payload is"):
        return "too_large"
    return head.split("[", 1)[0].strip() or "other"
