"""Which Redis a test runs against: one server, or a Redis Cluster (keys in slot groups)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores import RedisStore
from service.stores.redis.slots import DEFAULT_SLOT_GROUPS


@dataclass(frozen=True)
class RedisTarget:
    kind: str  # "single" or "cluster"
    url: str

    @classmethod
    def of(cls, kind: str, request: Any) -> RedisTarget:
        """``kind`` "cluster", or "redis"/"single" (one server), from the session's servers."""
        if kind == "cluster":
            return cls("cluster", request.getfixturevalue("redis_cluster").url)
        return cls("single", request.getfixturevalue("redis_server").url)

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    def client(self) -> aioredis.Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.url)
        return aioredis.Redis.from_url(self.url)

    def store(self, **kwargs: Any) -> RedisStore:
        """A store on its own connections, in slot groups as a cluster deployment is."""
        if self.cluster:
            kwargs.setdefault("slot_groups", DEFAULT_SLOT_GROUPS)
        return RedisStore(self.client(), **kwargs)

    @contextlib.asynccontextmanager
    async def emptied(self, **kwargs: Any) -> AsyncIterator[tuple[RedisStore, Any]]:
        """The server emptied, then a store (``kwargs`` as :meth:`store` takes them)
        and a client of its own, both closed after the block."""
        await self.flush()
        store, client = self.store(**kwargs), self.client()
        try:
            yield store, client
        finally:
            await store.close()
            await client.aclose()

    async def flush(self) -> None:
        """Empties the server (every master of a cluster)."""
        client = self.client()
        try:
            if isinstance(client, RedisCluster):
                await client.flushall(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.flushdb()
        finally:
            await client.aclose()

    def settings(self) -> dict[str, Any]:
        """Settings arguments that point the service at it."""
        return {"redis_url": self.url, "redis_cluster": self.cluster}

    def env(self) -> dict[str, str]:
        """The settings a ``serve`` process needs to use it."""
        return {
            "SES_TRACKER_REDIS_URL": self.url,
            "SES_TRACKER_REDIS_CLUSTER": "true" if self.cluster else "false",
        }


class Interleaved:
    """A client whose first XRANGE that finds entries runs ``meanwhile`` (another
    erasure) before answering: that erasure replaces the entries this page holds,
    after the page's end."""

    def __init__(self, client, meanwhile) -> None:
        self._client = client
        self._meanwhile = meanwhile

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    async def xrange(self, *args, **kwargs):
        rows = await self._client.xrange(*args, **kwargs)
        if rows and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return rows
