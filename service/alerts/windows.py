"""Window sums of the stats counters, read incrementally for each evaluation.

An hour-long window is 360 buckets, each with a field per group and latency bin;
reading and summing all of them every 10 s would cost the store and this process
more than the rest of alerting together. So each bucket is read once and kept in
running sums, and read again only when the store's revisions (``Store.
stats_revisions``, one small hash) say a merge changed it since. Buckets are of
event time, so a late event, or a consumer catching up on a backlog, changes old
buckets as well as the newest: no bucket is ever taken as final by its age.

Only the dimensions the rules judge are read (a bucket keeps each dimension's
groups apart: ``service.stats.LiveBucket``), and the sums are worked out in a
worker thread, so a flood of groups never holds the event loop (``/healthz``,
ingestion) while they are added up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Iterable

from service.stats import BUCKET_S, window_buckets
from service.stores.base import Statistics


class WindowReader:
    """``dimensions``: the groups read besides the overall figures (None: every
    dimension's)."""

    def __init__(
        self, store: Statistics, windows: Iterable[int], dimensions: Collection[str] | None = None
    ) -> None:
        self._store = store
        self._windows = sorted(set(windows))
        self._dimensions = None if dimensions is None else tuple(sorted(set(dimensions)))
        # bucket -> (revision read, its counters)
        self._buckets: dict[int, tuple[int, Counter[str]]] = {}
        self._sequence = 0
        # Per window: the sum of the buckets it holds, and which ones.
        self._sums: dict[int, Counter[str]] = {w: Counter() for w in self._windows}
        self._held: dict[int, set[int]] = {w: set() for w in self._windows}
        self.bucket_reads = 0  # for tests and the curious: buckets fetched so far

    async def read(self, now_ms: int) -> dict[int, Counter[str]]:
        """Each window's summed counters, as ``Store.read_stats`` over it would give."""
        if not self._windows:
            return {}
        revisions = await self._store.stats_revisions()
        if revisions.sequence < self._sequence:
            self._forget()  # the store lost its data: every sum is stale
        self._sequence = revisions.sequence
        oldest, last = window_buckets(now_ms, self._windows[-1])
        stale = [
            bucket
            for bucket in range(oldest, last + 1, BUCKET_S)
            if bucket not in self._buckets
            or self._buckets[bucket][0] != revisions.buckets.get(bucket, 0)
        ]
        to_read = [bucket for bucket in stale if bucket in revisions.buckets]
        read = await self._store.read_buckets(to_read, self._dimensions)
        fresh = dict(zip(to_read, read, strict=True))
        self.bucket_reads += len(to_read)
        # Only this reader touches its sums, and one read runs at a time (the engine
        # evaluates in turn), so the thread has them to itself.
        return await asyncio.to_thread(
            self._add_up, now_ms, last, oldest, stale, fresh, revisions.buckets
        )

    def _add_up(
        self,
        now_ms: int,
        last: int,
        oldest: int,
        stale: list[int],
        fresh: dict[int, Counter[str]],
        revisions: dict[int, int],
    ) -> dict[int, Counter[str]]:
        changed: dict[int, Counter[str]] = {}  # bucket -> what the sums held of it
        for bucket in stale:
            if bucket in self._buckets:
                changed[bucket] = self._buckets[bucket][1]
            self._buckets[bucket] = (revisions.get(bucket, 0), fresh.get(bucket, Counter()))
        result: dict[int, Counter[str]] = {}
        for window in self._windows:
            first = window_buckets(now_ms, window)[0]
            wanted = set(range(first, last + 1, BUCKET_S))
            total, held = self._sums[window], self._held[window]
            for bucket, before in changed.items():
                if bucket in held and bucket in wanted:
                    total.subtract(before)
                    total.update(self._buckets[bucket][1])
            for bucket in held - wanted:
                total.subtract(changed.get(bucket, self._buckets[bucket][1]))
            for bucket in wanted - held:
                total.update(self._buckets[bucket][1])
            self._held[window] = wanted
            self._sums[window] = result[window] = +total  # drop fields that fell to zero
        for bucket in [b for b in self._buckets if b < oldest]:
            del self._buckets[bucket]
        return result

    def _forget(self) -> None:
        self._buckets.clear()
        self._sums = {w: Counter() for w in self._windows}
        self._held = {w: set() for w in self._windows}
