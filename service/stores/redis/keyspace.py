"""One Redis (or Redis Cluster) and where the service's keys live in it.

Every Redis-backed part (the message store, the forwarding outbox, the MX cache,
delivery-id dedupe, alert state, session revocations, erasure) is given a
:class:`RedisKeyspace`, not a store to reach into for its connection: the client,
the plain prefix's keys (``service.stores.redis.keys``, every key family), each slot
group's keys on a cluster (``service.stores.redis.slots``), a named one-slot area for
state read and written together, and the one mapping of Redis errors
(``service.stores.redis.errors.unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores.redis import errors
from service.stores.redis.keys import DEFAULT_PREFIX, RedisKeys
from service.stores.redis.slots import DEFAULT_SLOT_GROUPS, group_prefixes

# Either client: redis-py's cluster client speaks the same commands per key.
Client = aioredis.Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class RedisKeyspace:
    client: Client
    keys: RedisKeys
    # Each slot group's keys (``service.stores.redis.slots``); one, the plain prefix's,
    # without slot groups.
    groups: tuple[RedisKeys, ...]
    slot_groups: int | None = None  # None: the plain layout (one Redis)

    # The one mapping of Redis errors to StoreUnavailable / MergeRejected.
    unavailable = staticmethod(errors.unavailable)

    @classmethod
    def of(
        cls, client: Client, *, prefix: str = DEFAULT_PREFIX, slot_groups: int | None = None
    ) -> RedisKeyspace:
        return cls(
            client,
            RedisKeys(prefix),
            tuple(RedisKeys(p) for p in group_prefixes(prefix, slot_groups)),
            slot_groups,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        cluster: bool = False,
        slot_groups: int | None = None,
        prefix: str = DEFAULT_PREFIX,
        connection: dict[str, Any] | None = None,
    ) -> RedisKeyspace:
        """``connection``: redis-py arguments beyond the URL (TLS CA, client cert).
        ``cluster``: the URL names a node of a Redis Cluster, split in ``slot_groups``."""
        client: Client
        if cluster:
            client = RedisCluster.from_url(url, health_check_interval=30, **(connection or {}))
            slot_groups = slot_groups or DEFAULT_SLOT_GROUPS
        else:
            client = aioredis.Redis.from_url(url, health_check_interval=30, **(connection or {}))
        return cls.of(client, prefix=prefix, slot_groups=slot_groups)

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def group_prefixes(self) -> list[str]:
        return [group.prefix for group in self.groups]

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def single_slot(self, name: str) -> RedisKeys:
        """Keys that share one slot on a cluster (state read and written together,
        such as alerting's): the plain prefix's on one Redis."""
        return RedisKeys(f"{self.prefix}{{{name}}}:") if self.cluster else self.keys

    async def close(self) -> None:
        await self.client.aclose()
