"""Window sums of the stats counters, read incrementally for each evaluation.

An hour-long window is 360 buckets, each with a field per domain and latency bin;
reading and summing all of them every 10 s would cost the store and this process
more than the rest of alerting together. A bucket stops changing once its 10 s of
ingestion time are over (plus a margin for replicas' clocks and batches in
flight), so settled buckets are read once and kept in running sums, and only the
last few are read at each evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from service.stats import BUCKET_S, bucket_of, window_buckets
from service.stores.base import Store

# A bucket this old (seconds past its end) is taken as final.
SETTLE_S = 30


class WindowReader:
    def __init__(self, store: Store, windows: Iterable[int], settle_s: int = SETTLE_S) -> None:
        self._store = store
        self._windows = sorted(set(windows))
        self._settle_s = settle_s
        self._buckets: dict[int, Counter[str]] = {}
        # Per window: the sum of the settled buckets it holds, and which ones.
        self._sums: dict[int, Counter[str]] = {w: Counter() for w in self._windows}
        self._held: dict[int, set[int]] = {w: set() for w in self._windows}

    async def read(self, now_ms: int) -> dict[int, Counter[str]]:
        """Each window's summed counters, as ``Store.read_stats`` over it would give."""
        if not self._windows:
            return {}
        last = bucket_of(now_ms)
        settled = last - self._settle_s - BUCKET_S  # the newest bucket taken as final
        oldest = window_buckets(now_ms, self._windows[-1])[0]
        for bucket in range(oldest, settled + 1, BUCKET_S):
            if bucket not in self._buckets:
                self._buckets[bucket] = await self._store.read_stats(bucket, bucket)
        fresh = await self._store.read_stats(max(oldest, settled + BUCKET_S), last)
        result: dict[int, Counter[str]] = {}
        for window in self._windows:
            first = window_buckets(now_ms, window)[0]
            wanted = set(range(first, settled + 1, BUCKET_S))
            total, held = self._sums[window], self._held[window]
            for bucket in held - wanted:
                total.subtract(self._buckets[bucket])
            for bucket in wanted - held:
                total.update(self._buckets[bucket])
            self._held[window] = wanted
            self._sums[window] = total = +total  # drop fields that fell to zero
            result[window] = total + fresh
        for bucket in [b for b in self._buckets if b < oldest]:
            del self._buckets[bucket]
        return result
