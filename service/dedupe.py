"""Recently seen ids (SNS MessageId, Firehose requestId), to skip retried deliveries.

For SNS this is also replay protection: a captured, genuinely signed message must
not be accepted again on any replica while its Timestamp is still fresh, so with
Redis the ids are shared (``<prefix>seen:<kind>:<digest>``, expiring with the
freshness window). Merging is idempotent, so a duplicate that slips through (two
copies in flight at once) costs work, never correctness.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable

from service.stores.redis.errors import unavailable
from service.stores.redis.keyspace import RedisKeyspace


class RecentIds:
    def __init__(
        self,
        *,
        max_ids: int = 100_000,
        ttl_s: float = 3_600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._max_ids = max_ids
        self._ttl_s = ttl_s
        self._clock = clock

    def seen(self, key: str) -> bool:
        expires = self._ids.get(key)
        return expires is not None and expires > self._clock()

    def add(self, key: str) -> None:
        now = self._clock()
        self._ids[key] = now + self._ttl_s
        self._ids.move_to_end(key)
        while self._ids:
            oldest, expires = next(iter(self._ids.items()))
            if expires > now and len(self._ids) <= self._max_ids:
                break
            del self._ids[oldest]


class SeenIds(ABC):
    """Ids remembered for a while; ``remember`` only once their effect is durable."""

    @abstractmethod
    async def seen(self, key: str) -> bool: ...

    @abstractmethod
    async def remember(self, key: str) -> None: ...


class MemorySeenIds(SeenIds):
    """One process's memory: enough without Redis, where there is one process."""

    def __init__(self, *, ttl_s: float, max_ids: int = 100_000) -> None:
        self.recent = RecentIds(ttl_s=ttl_s, max_ids=max_ids)

    async def seen(self, key: str) -> bool:
        return self.recent.seen(key)

    async def remember(self, key: str) -> None:
        self.recent.add(key)


class RedisSeenIds(SeenIds):
    """Shared by every replica; a key per id, expiring after ``ttl_s``."""

    def __init__(self, keyspace: RedisKeyspace, *, kind: str, ttl_s: float) -> None:
        self._client = keyspace.client
        self._keys = keyspace.keys
        self._kind = kind
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def _key(self, key: str) -> str:
        # Hashed: the id is whatever the sender wrote, so its length is not ours.
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return self._keys.seen(self._kind, digest)

    async def seen(self, key: str) -> bool:
        with unavailable("read"):
            return bool(await self._client.exists(self._key(key)))

    async def remember(self, key: str) -> None:
        with unavailable("write"):
            await self._client.set(self._key(key), b"1", px=self._ttl_ms)
