"""The slot groups a Redis store's data is split into, and the reads every read
side of the store makes across them.

One Redis is one group; a Redis Cluster holds ``slot_groups`` of them, each under a
hash-tagged prefix (``service.stores.redis.slots``), so every read side asks each
group and adds up (search pages, statistics, suppressions, the transitions stream).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster

from service.stores.redis.errors import unavailable
from service.stores.redis.keys import RedisKeys
from service.stores.redis.keyspace import Client
from service.stores.redis.search import IndexReader


@dataclass(frozen=True, slots=True)
class SlotGroup:
    """One group's keys and index reader (``service.stores.redis.slots``)."""

    number: int
    keys: RedisKeys
    index: IndexReader


class GroupedReads:
    """Reads across the slot groups, for the store's read sides (``suppressions``,
    ``erasures``, ``statistics``, ``transitions``): each is a part of
    :class:`~service.stores.redis.store.RedisStore`, which gives them ``_client``
    and ``_groups``."""

    _client: Client
    _groups: list[SlotGroup]

    @property
    def cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    async def _read_summed(
        self, key_sets: list[list[str]], heads: tuple[bytes, ...] | None = None
    ) -> list[Counter[str]]:
        """One Counter per set of keys: the sum of those hashes (one per group), only
        their fields starting with one of ``heads`` (None: every field)."""
        return summed(key_sets, await self._hgetall([k for keys in key_sets for k in keys]), heads)

    async def _hgetall(self, keys: list[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each key, pipelined."""
        if not keys:
            return []
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                return await pipe.execute()

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """GET of keys in any slots (MGET needs one slot on a cluster)."""
        if not keys:
            return []
        if not self.cluster:
            return await self._client.mget(keys)
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return await pipe.execute()


def summed(
    key_sets: list[list[str]], replies: list[dict[bytes, bytes]], heads: tuple[bytes, ...] | None
) -> list[Counter[str]]:
    """``replies`` (HGETALLs of every key of ``key_sets``, in order) summed per set."""
    sums: list[Counter[str]] = []
    position = 0
    for keys in key_sets:
        total: Counter[str] = Counter()
        for reply in replies[position : position + len(keys)]:
            for field, count in reply.items():
                if heads is None or field[:2] in heads:
                    total[field.decode()] += int(count)
        position += len(keys)
        sums.append(total)
    return sums
