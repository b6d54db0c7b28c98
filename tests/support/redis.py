"""Which Redis a test runs against: one server, or a Redis Cluster (sharded keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores import RedisStore
from service.stores.shards import DEFAULT_CLUSTER_SHARDS


@dataclass(frozen=True)
class RedisTarget:
    kind: str  # "single" or "cluster"
    url: str

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    def client(self) -> aioredis.Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.url)
        return aioredis.Redis.from_url(self.url)

    def store(self, **kwargs: Any) -> RedisStore:
        """A store on its own connections, sharded as a cluster deployment is."""
        if self.cluster:
            kwargs.setdefault("shards", DEFAULT_CLUSTER_SHARDS)
        return RedisStore(self.client(), **kwargs)

    def env(self) -> dict[str, str]:
        """The settings a ``serve`` process needs to use it."""
        return {
            "SES_TRACKER_REDIS_URL": self.url,
            "SES_TRACKER_REDIS_CLUSTER": "true" if self.cluster else "false",
        }
