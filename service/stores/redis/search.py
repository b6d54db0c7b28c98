"""Reads the search indexes that ``merge.lua`` keeps, one page at a time.

Which index answers a query (the narrowest one that holds every match):

* ``recipient=`` : the recipient's zset, ``r:<address>``;
* ``status=`` bounced and above: that status's zset, ``x:s:<status>``;
* ``status=sent|delayed``, or waiting (overdue) messages: the pending zset,
  ``x:pending``;
* otherwise (``delivered``, or no filter): every message by send time, from the
  per-minute ``t:<bucket>`` strings listed in ``x:buckets``.

Candidates come newest first; their records are fetched in chunks (one MGET each)
and checked against the whole query, since an index says where to look, not what
is true now. Index entries whose record has expired are dropped as they are met.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence

from redis import asyncio as aioredis

from service.search import (
    SCAN_BUDGET,
    IndexKind,
    Position,
    SearchHit,
    SearchPage,
    SearchQuery,
)
from service.stores.redis.keys import RedisKeys
from service.stores.redis.record import record_from_bytes
from service.stores.redis.slots import merge_pages

# One minute per send-time bucket: at 1M messages a day a bucket holds ~700
# messages (15 kB), and a 14-day walk over empty time touches ~20,000 buckets at most.
SEND_TIME_BUCKET_MS = 60_000
_ENTRY_BYTES = 6 + 16  # send time, handle
_ZSET_CHUNK = 200
_BUCKETS_PER_READ = 32


class IndexReader:
    """One slot group's indexes (``service.stores.redis.slots``); ``budget``: candidates one page
    may examine (a search of several groups shares SCAN_BUDGET between them)."""

    def __init__(self, client: aioredis.Redis, prefix: str, budget: int = SCAN_BUDGET) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._budget = budget

    def record_key(self, handle: str) -> str:
        return self._keys.record(handle)

    def index_key(self, query: SearchQuery) -> str | None:
        """The zset that answers ``query``; None for the send-time buckets."""
        kind, name = query.index()
        if kind == IndexKind.RECIPIENT:
            return self._keys.recipient(name or "")
        if kind == IndexKind.STATUS:
            return self._keys.status(name or "")
        if kind == IndexKind.PENDING:
            return self._keys.pending
        return None

    async def search(self, query: SearchQuery) -> SearchPage:
        key = self.index_key(query)
        dead: list[str] = []
        page = await self._scan(query, key, dead)
        # Dropped after the scan, whose zset reads go by offset. Bucket strings are
        # not edited in place: they expire whole.
        if key is not None and dead:
            await self._client.zrem(key, *dead)
        return page

    async def _scan(self, query: SearchQuery, key: str | None, dead: list[str]) -> SearchPage:
        chunks = self._zset(key, query) if key is not None else self._buckets(query)
        hits: list[SearchHit] = []
        examined = 0
        async for chunk in chunks:
            raws = await self._client.mget([self.record_key(p.handle) for p in chunk])
            for position, raw in zip(chunk, raws, strict=True):
                examined += 1
                if raw is None:
                    dead.append(position.handle)
                    continue
                message_id, record = record_from_bytes(raw)
                if query.matches(record):
                    hits.append(SearchHit(message_id, position, record))
                if len(hits) == query.limit or examined >= self._budget:
                    return SearchPage(hits, position)
        return SearchPage(hits, None)

    async def _zset(self, key: str, query: SearchQuery) -> AsyncIterator[list[Position]]:
        after = query.after
        low: float | str = "-inf" if query.since_ms is None else query.since_ms
        high: float | str = "+inf" if query.until_ms is None else f"({query.until_ms}"
        if after is not None:
            if query.admits(Position(after.sent_at, "")):
                # Messages sent in the cursor's millisecond, after it in order.
                ties = await self._client.zrangebyscore(key, after.sent_at, after.sent_at)
                same_ms = sorted(
                    (h.decode() for h in ties if h.decode() < after.handle), reverse=True
                )
                if same_ms:
                    yield [Position(after.sent_at, handle) for handle in same_ms]
            if query.until_ms is None or after.sent_at < query.until_ms:
                high = f"({after.sent_at}"
        offset = 0
        while True:
            rows = await self._client.zrevrangebyscore(
                key, high, low, start=offset, num=_ZSET_CHUNK, withscores=True
            )
            if not rows:
                return
            yield [Position(int(score), member.decode()) for member, score in rows]
            if len(rows) < _ZSET_CHUNK:
                return
            offset += len(rows)

    async def _buckets(self, query: SearchQuery) -> AsyncIterator[list[Position]]:
        buckets_key = self._keys.buckets
        newest_ms = math.inf if query.until_ms is None else query.until_ms - 1
        if query.after is not None:
            newest_ms = min(newest_ms, query.after.sent_at)
        high = "+inf" if newest_ms == math.inf else int(newest_ms) // SEND_TIME_BUCKET_MS
        low = "-inf" if query.since_ms is None else query.since_ms // SEND_TIME_BUCKET_MS
        offset = 0
        while True:
            buckets = await self._client.zrevrangebyscore(
                buckets_key, high, low, start=offset, num=_BUCKETS_PER_READ
            )
            if not buckets:
                return
            offset += len(buckets)
            async with self._client.pipeline(transaction=False) as pipe:
                for bucket in buckets:
                    pipe.get(self._keys.send_time_bucket(bucket.decode()))
                contents = await pipe.execute()
            gone = [b for b, content in zip(buckets, contents, strict=True) if content is None]
            if gone:
                await self._client.zrem(buckets_key, *gone)
                offset -= len(gone)
            for content in contents:
                if content:
                    positions = sorted(
                        {p for p in _bucket_positions(content) if query.admits(p)}, reverse=True
                    )
                    for start in range(0, len(positions), _ZSET_CHUNK):
                        yield positions[start : start + _ZSET_CHUNK]
            if len(buckets) < _BUCKETS_PER_READ:
                return


async def search_groups(readers: Sequence[IndexReader], query: SearchQuery) -> SearchPage:
    """One page across every slot group's indexes: each slot group is searched for a page at
    once, and the pages merged (``slots.merge_pages``)."""
    if len(readers) == 1:
        return await readers[0].search(query)
    pages = await asyncio.gather(*(reader.search(query) for reader in readers))
    hits, cursor = merge_pages(
        [(page.hits, page.next_after) for page in pages],
        query.limit,
        lambda hit: hit.position,
    )
    return SearchPage(hits, cursor)


def _bucket_positions(content: bytes) -> list[Position]:
    return [
        Position(
            int.from_bytes(content[i : i + 6], "big"),
            content[i + 6 : i + _ENTRY_BYTES].decode(),
        )
        for i in range(0, len(content) - _ENTRY_BYTES + 1, _ENTRY_BYTES)
    ]
