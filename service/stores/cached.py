"""A short-lived read cache in front of the store that holds the truth."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from service.state import MessageRecord, MessageWrite, Transition
from service.stats import Counting
from service.stores.base import Checkpoint, Store


class CachedStore:
    """Serves repeated lookups (``get``) from memory for ``ttl_s``; everything else is
    the truth's. A ``Store`` (registered as one) that wraps only what it caches.

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

    async def erase_record(self, candidate: str, address: str) -> bool:
        erased = await self.truth.erase_record(candidate, address)
        if erased:
            # A candidate is the store's own id for a record, not always the
            # message's; erasures are rare, so the whole cache goes.
            self._entries.clear()
        return erased

    def __getattr__(self, name: str) -> Any:
        # Everything it does not cache is the truth's own (searches, statistics,
        # suppressions, checkpoints, admin): no pass-through to keep in step.
        return getattr(self.truth, name)

    def describe(self) -> str:
        return f"{self.truth.describe()} (cached {self._ttl_s:g}s)"


Store.register(CachedStore)
