"""The embedded store: merged records in process memory, bounded by count and age."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from service import stats, tombstones
from service.erasure import erase
from service.forward.items import Change, change_of
from service.history import Fields
from service.search import SCAN_BUDGET, SearchHit, SearchPage, SearchQuery
from service.state import (
    EventWrite,
    MergeObserver,
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
from service.stores.memory_index import (
    MemoryIndex,
    key_bound,
    message_key,
    position_key,
    position_of,
)
from service.stores.memory_suppressions import MemorySuppressions
from service.suppressions import DEFAULT_DAYS as DEFAULT_SUPPRESSION_DAYS
from service.suppressions import Suppression, suppression_of

if TYPE_CHECKING:
    from service.forward.outbox import MemoryOutbox

# Send-time entries read at a time, and examined between yields to the event loop.
_CHUNK = 256
_SCAN_SLICE = 1_024
# Shares of max_bytes that suppressions and the forwarding outbox may take at most
# (past them their oldest go, counted): both count in the store's bytes, yet neither
# can crowd the messages out of more than half and an eighth of the bound.
SUPPRESSION_SHARE = 2
OUTBOX_SHARE = 8


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

    ``max_bytes`` bounds everything the store holds: records, suppressions (at most
    half of it, ``suppressions_dropped`` past that) and the forwarding outbox (at
    most an eighth, its ``lost`` past that); ``bytes`` is their sum.

    Search reads the narrowest index (``memory_index``): a recipient's, a problem
    status's or the waiting messages when they hold at most ``scan_budget`` ids,
    else every message by send time from the cursor on, examining at most
    ``scan_budget`` records a page (as the Redis store does).
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
        scan_budget: int = SCAN_BUDGET,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # message id -> (expires, record, send time as first seen, weight)
        self._records: OrderedDict[str, tuple[float, MessageRecord, int, int]] = OrderedDict()
        self._max_bytes = max_bytes
        self._record_bytes = 0
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
        if outbox is not None:
            outbox.max_bytes = max_bytes // OUTBOX_SHARE
        self._suppression_days = suppression_days
        self._suppressions = MemorySuppressions(suppression_days, max_bytes // SUPPRESSION_SHARE)
        self._scan_budget = scan_budget
        self._wall_clock = wall_clock
        self.evictions = 0
        self.expirations = 0
        # Erasures (service.erasure_job): tombstones under a key of this process's
        # own (nothing here outlives it), and the jobs, id -> (expires, state).
        self._tombstones = tombstones.Tombstones(tombstones.new_key(), {})
        self._erasures: dict[str, tuple[float, bytes]] = {}
        self._erasure_queue: dict[str, None] = {}

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        """Estimated bytes held: records, suppressions and the forwarding outbox."""
        outbox = self.outbox.bytes if self.outbox is not None else 0
        return self._record_bytes + self._suppressions.bytes + outbox

    @property
    def suppressions_held(self) -> int:
        return len(self._suppressions)

    @property
    def suppressions_dropped(self) -> int:
        """Suppressions let go before their days to keep within the byte bound."""
        return self._suppressions.dropped

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
        writes = self._tombstones.strip(writes)
        for write in writes:
            message_id = write.message_id
            entry = records.pop(message_id, None)
            if entry is not None and entry[0] > now:
                record, key = entry[1], entry[2]
                self._record_bytes -= entry[3]
            else:
                if entry is not None:
                    self.expirations += 1
                    self._record_bytes -= entry[3]
                    self._index.drop(message_id, entry[1], entry[2])
                record = MessageRecord()
                key = message_key(write.sent_at, message_id)
                self._index.file(key, message_id)
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
                # Still named by the events kept: an erasure must find the record.
                self._index.name_past_cap(message_id, address)
            weight = record_weight(record)
            self._record_bytes += weight
            # A held record expires before records ahead of it in the LRU order, so
            # _trim may reach it late; reads and searches check expiry themselves.
            held = now + PAST_RETENTION_HOLD_S if write.sent_at < oldest_live_ms else expires
            records[message_id] = (held, record, key, weight)
        if checkpoint is not None:
            self._checkpoints.setdefault(checkpoint.name, {}).update(checkpoint.positions)
        if changes is not None and changes.touched:
            self._revision += 1
            for bucket in changes.touched:
                self._revisions[bucket] = self._revision
        # History (nothing counted live) is not news: not forwarded.
        if forwarded and self.outbox is not None and (counting is None or counting.live):
            self.outbox.append(forwarded)
        if observer.suppressed and self._suppression_days:
            wall_ms = counting.now_ms if counting is not None else self._wall_ms()
            for suppression in observer.suppressed:
                self._suppressions.add(suppression, wall_ms)
        self._trim(now)
        return transitions

    async def get(self, message_id: str) -> MessageRecord | None:
        entry = self._records.get(message_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._forget(message_id, entry)
            return None
        return entry[1]

    def _forget(self, message_id: str, entry: tuple[float, MessageRecord, int, int]) -> None:
        """Let an expired record go (met by a read before _trim reached it)."""
        del self._records[message_id]
        self._record_bytes -= entry[3]
        self._index.drop(message_id, entry[1], entry[2])
        self.expirations += 1

    async def load_checkpoint(self, name: str) -> dict[str, str]:
        return dict(self._checkpoints.get(name, {}))

    async def search(self, query: SearchQuery) -> SearchPage:
        """Newest first by (send time, handle), as the Redis store answers: a page ends
        at ``limit`` hits or ``scan_budget`` records examined, and ``next_after`` is
        set only when more may follow."""
        candidates = self._index.candidates(query)
        if candidates is not None and len(candidates) <= self._scan_budget:
            return self._search_among(list(candidates), query)
        return await self._search_by_time(query, candidates)

    def _bounds(self, query: SearchQuery) -> tuple[int | None, int | None]:
        """The keys of a query's range: (least admitted, first excluded above)."""
        low = None if query.since_ms is None else position_key(query.since_ms, "")
        high = None if query.until_ms is None else position_key(query.until_ms, "")
        if query.after is not None:
            cursor = key_bound(query.after)
            high = cursor if high is None else min(high, cursor)
        return low, high

    def _search_among(self, candidates: list[str], query: SearchQuery) -> SearchPage:
        """A small index's messages: every one is checked, the newest kept."""
        now = self._clock()
        low, high = self._bounds(query)
        matching: list[tuple[int, str, MessageRecord]] = []
        records = self._records
        for message_id in candidates:
            entry = records.get(message_id)
            if entry is None:
                continue
            key = entry[2]
            if (low is not None and key < low) or (high is not None and key >= high):
                continue
            if entry[0] <= now:
                self._forget(message_id, entry)
                continue
            if query.matches(entry[1]):
                matching.append((key, message_id, entry[1]))
        matching.sort(key=lambda m: m[0], reverse=True)
        newest = matching[: query.limit]
        hits = [SearchHit(m, position_of(key), record) for key, m, record in newest]
        more = len(matching) > query.limit
        return SearchPage(hits, hits[-1].position if more else None)

    async def _search_by_time(
        self, query: SearchQuery, members: Collection[str] | None
    ) -> SearchPage:
        """Every message by send time, newest first from the cursor (those in
        ``members`` only, when given): a page reads what it returns and what it skips,
        never the rest, so paging through n messages costs O(n log n) in all."""
        low, high = self._bounds(query)
        hits: list[SearchHit] = []
        examined = 0
        records = self._records
        while True:
            chunk = self._index.by_time.below(high, _CHUNK)
            if not chunk:
                return SearchPage(hits, None)
            now = self._clock()
            for key, message_id in chunk:
                if low is not None and key < low:
                    return SearchPage(hits, None)
                examined += 1
                if members is None or message_id in members:
                    entry = records.get(message_id)
                    if entry is not None and entry[2] == key:
                        if entry[0] <= now:
                            self._forget(message_id, entry)
                        elif query.matches(entry[1]):
                            if len(hits) == query.limit:
                                # One more match: the page is full and more follow.
                                return SearchPage(hits, hits[-1].position)
                            hits.append(SearchHit(message_id, position_of(key), entry[1]))
                if examined >= self._scan_budget:
                    return SearchPage(hits, position_of(key))
                if examined % _SCAN_SLICE == 0:
                    # Let ingestion run; the walk resumes below the last key read, so
                    # writes made meanwhile cannot upset it.
                    high = key
                    await asyncio.sleep(0)
                    break
            else:
                high = chunk[-1][0]

    async def memory(self) -> MemoryFigures:
        # Suppressions let go to stay within the bound are a loss as evictions are.
        evicted = self.evictions + self._suppressions.dropped
        return MemoryFigures(self.bytes, self._max_bytes, evicted)

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
        return self._suppressions.get(address, self._wall_ms())

    async def suppressions_of(self, addresses: Sequence[str]) -> dict[str, Suppression]:
        now_ms = self._wall_ms()
        found = {}
        for address in dict.fromkeys(addresses):
            entry = self._suppressions.get(address, now_ms)
            if entry is not None:
                found[address] = entry
        return found

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        return self._suppressions.page(reason, since_ms, limit, after, self._wall_ms())

    async def remove_suppression(self, address: str) -> bool:
        return self._suppressions.remove(address)

    def _wall_ms(self) -> int:
        """Suppressions are kept by wall time (SES_TRACKER_SUPPRESSION_DAYS)."""
        return int(self._wall_clock() * 1000)

    async def tombstone(self, address: str, at_ms: int) -> int:
        erased_at = self._tombstones.erased_at
        assert isinstance(erased_at, dict)
        name = self._tombstones.digest(address)
        kept = erased_at[name] = max(at_ms, erased_at.get(name, at_ms))
        self._suppressions.remove(address)
        return kept

    def forgotten(self, address: str, sent_at: int) -> bool:
        return self._tombstones.forgotten(address, sent_at)

    @property
    def erasure_key(self) -> bytes:
        """The key of this process's tombstones' hashes (the audit log's too)."""
        return self._tombstones.key

    async def refresh_tombstones(self) -> None:
        """One process holds them all; only those past their keep go."""
        erased_at = self._tombstones.erased_at
        assert isinstance(erased_at, dict)
        kept = tombstones.live(erased_at, self._wall_ms())
        if len(kept) != len(erased_at):
            erased_at.clear()
            erased_at.update(kept)

    async def erase_record(self, candidate: str, address: str) -> bool:
        message_id = candidate
        self._index.drop_recipient(message_id, address)
        entry = self._records.get(message_id)
        if entry is None:
            return False
        expires, record, key, weight = entry
        if not erase(record, address):
            return False
        new_weight = record_weight(record)
        self._record_bytes += new_weight - weight
        self._records[message_id] = (expires, record, key, new_weight)
        return True

    async def erasure_candidates(self, address: str, before_ms: int, limit: int) -> list[str]:
        named = self._index.candidates(SearchQuery(recipient=address)) or ()
        found = []
        for message_id in list(named):
            entry = self._records.get(message_id)
            if entry is None or position_of(entry[2]).sent_at < before_ms:
                found.append(message_id)
                if len(found) >= limit:
                    break
        return found

    async def forget_recipient(self, address: str, before_ms: int) -> int:
        left = await self.erasure_candidates(address, before_ms, 1 << 62)
        for message_id in left:
            self._index.drop_recipient(message_id, address)
        return len(left)

    async def save_erasure(self, job_id: str, data: bytes, queued: bool, keep_s: int) -> None:
        self._erasures[job_id] = (self._wall_clock() + keep_s, data)
        if queued:
            self._erasure_queue.setdefault(job_id, None)
        else:
            self._erasure_queue.pop(job_id, None)
        now = self._wall_clock()
        for gone in [name for name, (until, _) in self._erasures.items() if until <= now]:
            del self._erasures[gone]

    async def load_erasure(self, job_id: str) -> bytes | None:
        held = self._erasures.get(job_id)
        return held[1] if held is not None and held[0] > self._wall_clock() else None

    async def queued_erasures(self, limit: int) -> list[str]:
        return list(self._erasure_queue)[:limit]

    async def hold_erasure_lease(self, owner: str, ttl_ms: int) -> bool:
        return True  # one process holds the memory store

    async def replayed(self, digest: str) -> bool:
        expires = self._replayed.get(digest)
        return expires is not None and expires > self._clock()

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        self._replayed[digest] = self._clock() + keep_s

    async def read_rollups(
        self, step: str, starts: Sequence[int], fields: Fields | None = None
    ) -> list[Counter[str]]:
        """Only the periods its dict holds are looked at; ``fields`` picks their fields."""
        answer = []
        for start in starts:
            rollup = self._rollups.get((step, start))
            if rollup is None:
                answer.append(Counter())
            elif fields is None:
                answer.append(Counter(rollup))
            else:
                answer.append(Counter({k: n for k, n in rollup.items() if fields.wants(k)}))
        return answer

    def _prune_statistics(self, counting: stats.Counting) -> None:
        live_bucket = counting.live_bucket
        if counting.live and live_bucket != self._newest_bucket:
            self._newest_bucket = live_bucket
            for old in [b for b in self._stats if b < live_bucket - stats.BUCKET_TTL_S]:
                del self._stats[old]
                self._revisions.pop(old, None)
            oldest_hour = stats.admission_hour(live_bucket - stats.BUCKET_TTL_S)
            for hour in [h for h in self._admissions if h < oldest_hour]:
                del self._admissions[hour]
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
            message_id, (expires, record, key, weight) = next(iter(records.items()))
            if expires <= now:
                self.expirations += 1
            elif len(records) > self._max_messages or self.bytes > self._max_bytes:
                self.evictions += 1
            else:
                return
            del records[message_id]
            self._record_bytes -= weight
            self._index.drop(message_id, record, key)


class _Observer:
    """Counts as ``inner`` does; keeps each change for the forwarding outbox (when
    ``forwarding``) and each address made unsafe to mail, for the suppressions."""

    __slots__ = ("forwarding", "inner", "made", "suppressed")

    def __init__(self, inner: MergeObserver | None, *, forwarding: bool) -> None:
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
