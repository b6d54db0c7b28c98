"""The embedded store: merged records in process memory, bounded by count and age."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from service import stats
from service.erasure import erase
from service.forward.items import Change, change_of
from service.search import Position, SearchHit, SearchPage, SearchQuery, message_handle
from service.state import (
    ChangeCounter,
    EventWrite,
    MessageRecord,
    MessageWrite,
    Transition,
    merge,
)
from service.stores.base import (
    PAST_RETENTION_HOLD_S,
    Checkpoint,
    MemoryFigures,
    Store,
    SuppressionCursor,
)
from service.stores.memory_index import MemoryIndex
from service.suppressions import DEFAULT_DAYS as DEFAULT_SUPPRESSION_DAYS
from service.suppressions import Suppression, kept, suppression_of

if TYPE_CHECKING:
    from service.forward.outbox import MemoryOutbox

_SCAN_SLICE = 10_000


# What a record costs beyond its strings (objects, dict slots, the LRU entry), as
# measured with tracemalloc by bench/bench_pipeline.py; an estimate, to bound memory.
_RECORD_OVERHEAD = 900
_SLOT_OVERHEAD = 100


def record_weight(record: MessageRecord) -> int:
    """Approximate bytes a record holds in memory."""
    return (
        _RECORD_OVERHEAD
        + len(record.header)
        + sum(len(blob) + _SLOT_OVERHEAD for blob in record.blobs.values())
        + sum(len(address) + _SLOT_OVERHEAD for address in record.recipients)
    )


class MemoryStore(Store):
    """Records kept in least-recently-updated order.

    A record lives ``retention_s`` after its last update; past ``max_messages``, or
    past ``max_bytes`` (estimated by :func:`record_weight`), the least recently
    updated one is evicted (and counted in ``evictions``). Nothing survives the
    process: use Redis for that.

    Search goes through small indexes (``memory_index``) for recipient, waiting
    and problem-status queries; a query with none of those (``delivered``, or no
    filter) scans every record, about 0.3 s per 100,000.
    """

    def __init__(
        self,
        *,
        max_messages: int = 500_000,
        max_bytes: int = 1024**3,
        retention_s: float = 1_209_600,
        clock: Callable[[], float] = time.monotonic,
        outbox: MemoryOutbox | None = None,
        suppression_days: int = DEFAULT_SUPPRESSION_DAYS,
    ) -> None:
        # message id -> (expires, record, send time as first seen, weight)
        self._records: OrderedDict[str, tuple[float, MessageRecord, int, int]] = OrderedDict()
        self._max_bytes = max_bytes
        self.bytes = 0
        self._checkpoints: dict[str, dict[str, str]] = {}
        self._stats: dict[int, stats.LiveBucket] = {}
        # hour -> its live buckets' admission (stats.admission_hour).
        self._admissions: dict[int, stats.Admission] = {}
        self._rollups: dict[tuple[str, int], stats.RollupCounters] = {}
        self._rollups_pruned_at = 0
        self._replayed: dict[str, float] = {}  # file digest -> expiry
        # bucket -> the revision that last changed it (Store.stats_revisions).
        self._revisions: dict[int, int] = {}
        self._revision = 0
        self._newest_bucket: int | None = None
        self._max_messages = max_messages
        self._retention_s = retention_s
        self._clock = clock
        self._index = MemoryIndex()
        # With an outbox, each merge appends what it changed, for forwarding.
        self.outbox = outbox
        self._suppression_days = suppression_days
        self._suppressions: dict[str, Suppression] = {}
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._records)

    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: stats.Counting | None = None,
    ) -> list[Transition]:
        return self.merge_now(writes, checkpoint, counting)

    def merge_now(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: stats.Counting | None = None,
    ) -> list[Transition]:
        """Synchronous merge: nothing here waits, so callers may skip the await."""
        now = self._clock()
        changes = None
        if counting is not None:
            changes = stats.Changes(counting, self._stats, self._rollups, self._admissions)
            self._prune_statistics(counting)
        observer = _Observer(changes, forwarding=self.outbox is not None)
        forwarded: list[Change] = []
        expires = now + self._retention_s
        # A replay holds messages sent before the retention briefly (PAST_RETENTION_HOLD_S).
        oldest_live_ms = -1
        if counting is not None and not counting.live:
            oldest_live_ms = counting.now_ms - int(self._retention_s * 1000)
        records = self._records
        transitions: list[Transition] = []
        for write in writes:
            message_id = write.message_id
            entry = records.pop(message_id, None)
            if entry is not None and entry[0] > now:
                record, sent_at = entry[1], entry[2]
                self.bytes -= entry[3]
            else:
                if entry is not None:
                    self.expirations += 1
                    self.bytes -= entry[3]
                    self._index.drop(message_id, entry[1])
                record, sent_at = MessageRecord(), write.sent_at
            evicted: list[str] = []
            changed = merge(record, write, observer, evicted)
            if observer.made:
                forwarded += [change_of(*made, record.header) for made in observer.made]
                observer.made.clear()
            if changed:
                added = [t.recipient for t in changed if t.from_status is None]
                self._index.update(message_id, record, added)
                transitions.extend(changed)
            for address in evicted:
                self._index.drop_recipient(message_id, address)
            weight = record_weight(record)
            self.bytes += weight
            # A held record expires before records ahead of it in the LRU order, so
            # _trim may reach it late; reads and searches check expiry themselves.
            held = now + PAST_RETENTION_HOLD_S if write.sent_at < oldest_live_ms else expires
            records[message_id] = (held, record, sent_at, weight)
        if checkpoint is not None:
            self._checkpoints.setdefault(checkpoint.name, {}).update(checkpoint.positions)
        if changes is not None and changes.touched:
            self._revision += 1
            for bucket in changes.touched:
                self._revisions[bucket] = self._revision
        if forwarded and self.outbox is not None:
            self.outbox.append(forwarded)
        if observer.suppressed and self._suppression_days:
            wall_ms = counting.now_ms if counting is not None else None
            for suppression in observer.suppressed:
                if self._still_kept(suppression, wall_ms):
                    address = suppression.address
                    self._suppressions[address] = kept(self._suppressions.get(address), suppression)
        self._trim(now)
        return transitions

    async def get(self, message_id: str) -> MessageRecord | None:
        entry = self._records.get(message_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._records[message_id]
            self.bytes -= entry[3]
            self._index.drop(message_id, entry[1])
            self.expirations += 1
            return None
        return entry[1]

    async def load_checkpoint(self, name: str) -> dict[str, str]:
        return dict(self._checkpoints.get(name, {}))

    async def search(self, query: SearchQuery) -> SearchPage:
        now = self._clock()
        after = query.after
        since = query.since_ms
        until = query.until_ms
        matching: list[tuple[int, str, MessageRecord]] = []
        candidates = self._index.candidates(query)
        if candidates is None:
            entries = list(self._records.items())
        else:
            entries = [(m, self._records[m]) for m in candidates if m in self._records]
        for count, (message_id, (expires, record, sent_at, _)) in enumerate(entries, 1):
            if count % _SCAN_SLICE == 0:
                # A full scan takes a while: let ingestion run between slices.
                await asyncio.sleep(0)
            if expires <= now:
                continue
            if since is not None and sent_at < since:
                continue
            if until is not None and sent_at >= until:
                continue
            if after is not None and (
                sent_at > after.sent_at
                or (sent_at == after.sent_at and message_handle(message_id) >= after.handle)
            ):
                continue
            if query.matches(record):
                matching.append((sent_at, message_id, record))
        # Handles are only needed to order messages sent in the same millisecond,
        # so they are computed for the newest few, not for every match.
        wanted = query.limit + 1
        newest = heapq.nlargest(wanted, matching, key=lambda m: m[0])
        if len(newest) == wanted:
            cutoff = newest[-1][0]
            newest = [m for m in matching if m[0] >= cutoff]
        hits = sorted(
            (
                SearchHit(message_id, Position(sent_at, message_handle(message_id)), record)
                for sent_at, message_id, record in newest
            ),
            key=lambda hit: hit.position,
            reverse=True,
        )
        if len(hits) > query.limit:
            hits = hits[: query.limit]
            return SearchPage(hits, hits[-1].position)
        return SearchPage(hits, None)

    async def memory(self) -> MemoryFigures:
        return MemoryFigures(self.bytes, self._max_bytes, self.evictions)

    async def read_stats(
        self, first_bucket: int, last_bucket: int, dimensions: Collection[str] | None = None
    ) -> Counter[str]:
        total: Counter[str] = Counter()
        for bucket, counters in self._stats.items():
            if first_bucket <= bucket <= last_bucket:
                total.update(counters.overall)
                for dimension, fields in counters.groups.items():
                    if dimensions is None or dimension in dimensions:
                        total.update(fields)
        return total

    async def read_buckets(
        self, buckets: Sequence[int], dimensions: Collection[str] | None = None
    ) -> list[Counter[str]]:
        found = [self._stats.get(bucket) for bucket in buckets]
        return [Counter() if bucket is None else bucket.fields(dimensions) for bucket in found]

    async def suppression(self, address: str) -> Suppression | None:
        found = self._suppressions.get(address)
        return found if found is not None and self._still_kept(found) else None

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        ordered = sorted(
            (
                s
                for s in self._suppressions.values()
                if self._still_kept(s)
                and (reason is None or s.reason == reason)
                and (since_ms is None or s.since_ms >= since_ms)
                and (after is None or (s.since_ms, s.address) < after)
            ),
            key=lambda s: (s.since_ms, s.address),
            reverse=True,
        )
        page = ordered[:limit]
        more = len(ordered) > limit
        return page, ((page[-1].since_ms, page[-1].address) if more and page else None)

    async def remove_suppression(self, address: str) -> bool:
        return self._suppressions.pop(address, None) is not None

    def _still_kept(self, suppression: Suppression, now_ms: int | None = None) -> bool:
        """Younger than SES_TRACKER_SUPPRESSION_DAYS (merge.lua: its key's expiry)."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        return suppression.since_ms > now_ms - self._suppression_days * 86_400_000

    async def erase_recipient(self, address: str) -> int:
        self._suppressions.pop(address, None)
        named = self._index.candidates(SearchQuery(recipient=address)) or ()
        erased = 0
        for message_id in list(named):
            entry = self._records.get(message_id)
            if entry is None:
                continue
            expires, record, sent_at, weight = entry
            if erase(record, address):
                erased += 1
                self._index.drop_recipient(message_id, address)
                new_weight = record_weight(record)
                self.bytes += new_weight - weight
                self._records[message_id] = (expires, record, sent_at, new_weight)
        return erased

    async def replayed(self, digest: str) -> bool:
        expires = self._replayed.get(digest)
        return expires is not None and expires > self._clock()

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        self._replayed[digest] = self._clock() + keep_s

    async def read_rollups(self, step: str, starts: Sequence[int]) -> list[Counter[str]]:
        return [Counter(self._rollups.get((step, start), ())) for start in starts]

    def _prune_statistics(self, counting: stats.Counting) -> None:
        live_bucket = counting.live_bucket
        if counting.live and live_bucket != self._newest_bucket:
            self._newest_bucket = live_bucket
            for old in [b for b in self._stats if b < live_bucket - stats.BUCKET_TTL_S]:
                del self._stats[old]
            oldest_hour = stats.admission_hour(live_bucket - stats.BUCKET_TTL_S)
            for hour in [h for h in self._admissions if h < oldest_hour]:
                del self._admissions[hour]
                self._revisions.pop(old, None)
        hour = stats.hour_of(counting.now_ms)
        if hour != self._rollups_pruned_at:
            self._rollups_pruned_at = hour
            gone = [key for key in self._rollups if counting.rollup_ttl_s(key[0], key[1]) <= 0]
            for key in gone:
                del self._rollups[key]

    async def stats_revisions(self) -> stats.Revisions:
        return stats.Revisions(self._revision, dict(self._revisions))

    def _trim(self, now: float) -> None:
        records = self._records
        # Front of the order = least recently updated = earliest expiry.
        while records:
            message_id, (expires, record, _, weight) = next(iter(records.items()))
            if expires <= now:
                self.expirations += 1
            elif len(records) > self._max_messages or self.bytes > self._max_bytes:
                self.evictions += 1
            else:
                return
            del records[message_id]
            self.bytes -= weight
            self._index.drop(message_id, record)


class _Observer:
    """Counts as ``inner`` does; keeps each change for the forwarding outbox (when
    ``forwarding``) and each address made unsafe to mail, for the suppressions."""

    __slots__ = ("forwarding", "inner", "made", "suppressed")

    def __init__(self, inner: ChangeCounter | None, *, forwarding: bool) -> None:
        self.inner = inner
        self.forwarding = forwarding
        self.made: list[tuple[MessageWrite, EventWrite | None, str, int | None, int]] = []
        self.suppressed: list[Suppression] = []

    def once(self, write: MessageWrite, event: EventWrite) -> None:
        if self.inner is not None:
            self.inner.once(write, event)

    def transition(
        self,
        write: MessageWrite,
        event: EventWrite | None,
        address: str,
        old: int | None,
        new: int,
    ) -> None:
        if self.inner is not None:
            self.inner.transition(write, event, address, old, new)
        if self.forwarding:
            self.made.append((write, event, address, old, new))

    def unsafe(self, write: MessageWrite, event: EventWrite, address: str, gained: int) -> None:
        self.suppressed.append(suppression_of(write, event, address, gained))
