"""A short-lived read cache in front of the store that holds the truth."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Sequence

from service.history import Fields
from service.search import SearchPage, SearchQuery
from service.state import MessageRecord, MessageWrite, Transition
from service.stats import Counting, Revisions
from service.stores.base import Checkpoint, MemoryFigures, Store, SuppressionCursor
from service.suppressions import Suppression


class CachedStore(Store):
    """Serves repeated lookups from memory for ``ttl_s``; writes go straight through.

    Why a TTL rather than invalidation: other replicas merge into the same Redis
    and cannot reach this cache, so a cached record may be up to ``ttl_s`` behind
    theirs. This process's own merges drop the records they touch at once.
    """

    def __init__(
        self,
        truth: Store,
        *,
        ttl_s: float = 1.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.truth = truth
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, MessageRecord | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: Counting | None = None,
    ) -> list[Transition]:
        try:
            return await self.truth.merge(writes, checkpoint, counting)
        finally:
            # Also when it raised: a refused batch (MergeRejected) merged the rest,
            # and a failed one may have merged some of it.
            for write in writes:
                self._entries.pop(write.message_id, None)

    async def get(self, message_id: str) -> MessageRecord | None:
        now = self._clock()
        entry = self._entries.get(message_id)
        if entry is not None and entry[0] > now:
            self.hits += 1
            return entry[1]
        self.misses += 1
        record = await self.truth.get(message_id)
        self._entries[message_id] = (now + self._ttl_s, record)
        self._entries.move_to_end(message_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return record

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self.truth.search(query)

    async def load_checkpoint(self, name: str) -> dict[str, str]:
        return await self.truth.load_checkpoint(name)

    async def read_buckets(
        self, buckets: Sequence[int], dimensions: Collection[str] | None = None
    ) -> list[Counter[str]]:
        return await self.truth.read_buckets(buckets, dimensions)

    async def read_rollups(
        self, step: str, starts: Sequence[int], fields: Fields | None = None
    ) -> list[Counter[str]]:
        return await self.truth.read_rollups(step, starts, fields)

    async def suppression(self, address: str) -> Suppression | None:
        return await self.truth.suppression(address)

    async def suppressions_of(self, addresses: Sequence[str]) -> dict[str, Suppression]:
        return await self.truth.suppressions_of(addresses)

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        return await self.truth.suppressions(reason, since_ms, limit, after)

    async def remove_suppression(self, address: str) -> bool:
        return await self.truth.remove_suppression(address)

    async def erase_recipient(self, address: str) -> int:
        erased = await self.truth.erase_recipient(address)
        self._entries.clear()  # cached records may still name the address
        return erased

    async def replayed(self, digest: str) -> bool:
        return await self.truth.replayed(digest)

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        await self.truth.mark_replayed(digest, keep_s)

    async def stats_revisions(self) -> Revisions:
        return await self.truth.stats_revisions()

    async def ping(self) -> bool:
        return await self.truth.ping()

    async def memory(self) -> MemoryFigures | None:
        return await self.truth.memory()

    async def close(self) -> None:
        await self.truth.close()

    def describe(self) -> str:
        return f"{self.truth.describe()} (cached {self._ttl_s:g}s)"
