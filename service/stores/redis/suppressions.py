"""Suppressions as the merge leaves them (``merge.lua`` writes them, with the record
that made them): read one, many, a page of the listing; remove one.

Each slot group keeps its own entry for an address a message of it suppressed; a
read takes the earliest, as one Redis would have kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgpack

from service.stores.base import SuppressionCursor, Suppressions
from service.stores.redis.errors import unavailable
from service.stores.redis.groups import GroupedReads, SlotGroup
from service.stores.redis.slots import merge_pages
from service.suppressions import REASONS as SUPPRESSION_REASONS
from service.suppressions import Suppression

_SUPPRESSION_CHUNK = 500


class SuppressionReads(GroupedReads, Suppressions):
    """The store's suppressions (``RedisStore`` counts ``suppression_rows_read``)."""

    suppression_rows_read: int

    async def suppression(self, address: str) -> Suppression | None:
        keys = [group.keys.suppression(address) for group in self._groups]
        with unavailable("read"):
            raws = await self._get_many(keys)
        return earliest(address, raws)

    async def suppressions_of(self, addresses: Sequence[str]) -> dict[str, Suppression]:
        """One MGET (one pipeline on a cluster) for every address and slot group."""
        wanted = list(dict.fromkeys(addresses))
        width = len(self._groups)
        keys = [group.keys.suppression(a) for a in wanted for group in self._groups]
        with unavailable("read"):
            raws = await self._get_many(keys)
        found = {}
        for i, address in enumerate(wanted):
            entry = earliest(address, raws[i * width : (i + 1) * width])
            if entry is not None:
                found[address] = entry
        return found

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        with unavailable("read"):
            group_pages = [
                self._group_suppressions(group, reason, since_ms, limit, after)
                for group in self._groups
            ]
            pages = await asyncio.gather(*group_pages)
            found, cursor = merge_pages(pages, limit, lambda entry: (entry.since_ms, entry.address))
            if len(self._groups) > 1 and found:
                # Messages of several groups can suppress one address: each group
                # keeps its own entry, and only the earliest (as one Redis would
                # have kept) is listed.
                addresses = list(dict.fromkeys(entry.address for entry in found))
                raws = await self._get_many(
                    [group.keys.suppression(a) for a in addresses for group in self._groups]
                )
                width = len(self._groups)
                kept = {
                    a: earliest(a, raws[i * width : (i + 1) * width])
                    for i, a in enumerate(addresses)
                }
                found = [entry for entry in found if kept[entry.address] == entry]
        return found, cursor

    async def _group_suppressions(
        self,
        group: SlotGroup,
        reason: str | None,
        since_ms: int | None,
        limit: int,
        after: SuppressionCursor | None,
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        """A page of one group's listing (its reason's, with ``reason``), newest first,
        after ``after``. Each chunk resumes right after the last row read (found by
        its rank), so the work per page is the page, not its offset into the listing."""
        index = (
            group.keys.suppressions if reason is None else group.keys.suppressions_by_reason(reason)
        )
        low: str | int = "-inf" if since_ms is None else since_ms
        last: tuple[float, str] | None = None if after is None else (after[0], after[1])
        found: list[Suppression] = []
        while len(found) <= limit:
            # No further ahead than the page needs (the merge of groups takes `limit`).
            wanted = min(_SUPPRESSION_CHUNK, limit + 1 - len(found))
            rows = await self._listing_after(index, last, low, wanted)
            self.suppression_rows_read += len(rows)
            if not rows:
                return found, None
            last = (rows[-1][1], rows[-1][0].decode())
            members = [
                m.decode() for m, score in rows if after is None or (int(score), m.decode()) < after
            ]
            raws = await self._get_many([group.keys.suppression(m) for m in members])
            gone: list[str] = []
            for member, raw in zip(members, raws, strict=True):
                entry = None if raw is None else suppression_from(member, raw)
                if entry is None or (reason is not None and entry.reason != reason):
                    # Expired, or since suppressed for the other reason: out of this
                    # listing (but the row the next chunk resumes from, for now).
                    if member != last[1]:
                        gone.append(member)
                else:
                    found.append(entry)
            if gone:
                await self._client.zrem(index, *gone)
            if len(rows) < wanted:
                break
        if len(found) > limit:
            page = found[:limit]
            return page, (page[-1].since_ms, page[-1].address)
        return found, None

    async def _listing_after(
        self, index: str, last: tuple[float, str] | None, low: str | int, count: int
    ) -> list[tuple[bytes, float]]:
        """A chunk of a listing's rows (newest first) after ``last`` (score, member),
        down to score ``low``."""
        if last is None:
            return await self._client.zrevrangebyscore(
                index, "+inf", low, start=0, num=count, withscores=True
            )
        score, member = last
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrevrank(index, member)
            pipe.zscore(index, member)
            rank, stored = await pipe.execute()
        if rank is not None and stored == score:
            rows = await self._client.zrevrange(index, rank + 1, rank + count, withscores=True)
            return [row for row in rows if low == "-inf" or row[1] >= float(low)]
        # Not in this listing (another group's row, or removed meanwhile): from its
        # score, past the rows tied with it.
        offset = 0
        while True:
            rows = await self._client.zrevrangebyscore(
                index, score, low, start=offset, num=_SUPPRESSION_CHUNK, withscores=True
            )
            later = [row for row in rows if (row[1], row[0].decode()) < last]
            self.suppression_rows_read += len(rows) - len(later)  # the caller counts these
            if later or len(rows) < _SUPPRESSION_CHUNK:
                return later
            offset += len(rows)

    async def remove_suppression(self, address: str) -> bool:
        with unavailable("write"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.delete(group.keys.suppression(address))
                    pipe.zrem(group.keys.suppressions, address)
                    for reason in SUPPRESSION_REASONS:
                        pipe.zrem(group.keys.suppressions_by_reason(reason), address)
                replies = await pipe.execute()
        return any(replies[0 :: 2 + len(SUPPRESSION_REASONS)])


def earliest(address: str, raws: Sequence[bytes | None]) -> Suppression | None:
    """Of one address's entries in each group, the earliest (the first group's on a tie)."""
    entries = [suppression_from(address, raw) for raw in raws if raw is not None]
    return min(entries, key=lambda entry: entry.since_ms, default=None)


def suppression_from(address: str, raw: bytes) -> Suppression:
    reason, since_ms, message_id, subtype = msgpack.unpackb(raw, raw=False)  # layout.SUPPRESSION
    return Suppression(address, reason, int(since_ms), message_id, subtype or None)
