"""The memory store's suppressions: by address, and by reason in ``since`` order.

``merge.lua`` keeps them as a key per address (expiring after
``SES_TRACKER_SUPPRESSION_DAYS``) and a zset scored by ``since``; here the same is a
dict and one sorted index per reason, so a page of the listing, filtered by reason
or not, reads from its cursor onwards: O(log n + page), not a sort of every entry.

Bounded two ways, with no timer: entries past their days go (a bounded number on
each write and each listing, oldest first, and any one met on a lookup), and their
bytes (estimated by :func:`suppression_weight`) stay under ``max_bytes``: past it
the oldest entry goes, counted in ``dropped``. Pure: the caller passes the wall
clock.
"""

from __future__ import annotations

from service.stores.sorted_index import SortedIndex
from service.suppressions import REASONS, Suppression, kept

# Per entry beyond its strings' characters: the dataclass, its ``since`` int, the
# strings' headers, the dict slot, the (since, address) key tuple and its index
# slots: ~435 bytes an entry in all, measured with tracemalloc
# (tests/unit/stores/test_memory_bounds.py holds the estimate to it).
_ENTRY_OVERHEAD = 360
# Expired entries let go per write or listing: each call's work stays bounded.
PRUNE_BATCH = 256
_DAY_MS = 86_400_000

Key = tuple[int, str]  # (since_ms, address)


def suppression_weight(suppression: Suppression) -> int:
    """Approximate bytes one suppression holds in memory."""
    return (
        _ENTRY_OVERHEAD
        + len(suppression.address)
        + len(suppression.message_id)
        + len(suppression.subtype or "")
    )


class MemorySuppressions:
    def __init__(self, days: int, max_bytes: int) -> None:
        self._days = days
        self.max_bytes = max_bytes
        self._by_address: dict[str, Suppression] = {}
        self._by_reason: dict[str, SortedIndex[Key, Suppression]] = {
            reason: SortedIndex() for reason in REASONS
        }
        self.bytes = 0
        self.dropped = 0  # let go before their days, to stay within max_bytes
        self.expired = 0

    def __len__(self) -> int:
        return len(self._by_address)

    def horizon(self, now_ms: int) -> int:
        """Entries since this or earlier are past their days (merge.lua: the key's TTL)."""
        return now_ms - self._days * _DAY_MS

    def add(self, suppression: Suppression, now_ms: int) -> None:
        """A merge made an address unsafe: keep the earliest reason (``kept``)."""
        if suppression.since_ms <= self.horizon(now_ms):
            return
        current = self._by_address.get(suppression.address)
        chosen = kept(current, suppression)
        if chosen is current:
            return
        if current is not None:
            self._forget(current)
        self._by_address[chosen.address] = chosen
        self._index(chosen.reason).add((chosen.since_ms, chosen.address), chosen)
        self.bytes += suppression_weight(chosen)
        self.prune(now_ms)
        while self.bytes > self.max_bytes and self._by_address:
            self._forget(self._oldest())
            self.dropped += 1

    def get(self, address: str, now_ms: int) -> Suppression | None:
        found = self._by_address.get(address)
        if found is not None and found.since_ms <= self.horizon(now_ms):
            self._forget(found)
            self.expired += 1
            return None
        return found

    def remove(self, address: str) -> bool:
        found = self._by_address.get(address)
        if found is None:
            return False
        self._forget(found)
        return True

    def page(
        self,
        reason: str | None,
        since_ms: int | None,
        limit: int,
        after: Key | None,
        now_ms: int,
    ) -> tuple[list[Suppression], Key | None]:
        """Newest first by (since, address), strictly after ``after``: the Redis
        store's order and cursor."""
        self.prune(now_ms)
        low = self.horizon(now_ms) + 1
        if since_ms is not None:
            low = max(low, since_ms)
        if reason is None:
            indexes = list(self._by_reason.values())
        else:
            # A reason nobody has (the caller's text) finds nothing, and files nothing.
            wanted = self._by_reason.get(reason)
            indexes = [] if wanted is None else [wanted]
        # Each index gives its newest ``limit + 1`` below the cursor; the newest of those
        # are the page (and the one past it says whether more follow).
        rows = sorted(
            (row for index in indexes for row in index.below(after, limit + 1)),
            key=lambda row: row[0],
            reverse=True,
        )
        found = [suppression for key, suppression in rows[: limit + 1] if key[0] >= low]
        page = found[:limit]
        more = len(found) > limit
        return page, ((page[-1].since_ms, page[-1].address) if more and page else None)

    def prune(self, now_ms: int, budget: int = PRUNE_BATCH) -> int:
        """Let go of up to ``budget`` entries past their days, oldest first."""
        horizon = self.horizon(now_ms)
        gone = 0
        for index in self._by_reason.values():
            for key, suppression in index.lowest(budget - gone):
                if key[0] > horizon:
                    break
                self._forget(suppression)
                gone += 1
        self.expired += gone
        return gone

    def _index(self, reason: str) -> SortedIndex[Key, Suppression]:
        index = self._by_reason.get(reason)
        if index is None:
            index = self._by_reason[reason] = SortedIndex()
        return index

    def _oldest(self) -> Suppression:
        firsts = [index.lowest(1) for index in self._by_reason.values()]
        return min((row[0] for row in firsts if row), key=lambda row: row[0])[1]

    def _forget(self, suppression: Suppression) -> None:
        del self._by_address[suppression.address]
        self._index(suppression.reason).remove(
            (suppression.since_ms, suppression.address), suppression
        )
        self.bytes -= suppression_weight(suppression)
