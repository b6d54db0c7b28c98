"""How full each Redis master is, sampled in the background for ``/metrics``.

A store that reaches ``maxmemory`` under ``noeviction`` refuses every write: the
merges fail and ingestion stops. Operators alert on the fraction used before then
(``deploy/prometheus``), from figures the service reads itself, so no exporter is
needed. Collectors are synchronous, so the figures are read here every
``EVERY_S`` and the scrape shows the last ones; while Redis cannot be read they are
absent (the merges and ``ses_tracker_dependency_up`` say why: this sampler reports
no outage of its own, as a read of INFO says nothing of whether writes work). A
user whose ACL refuses INFO (it is in ``@dangerous``) gets one warning and no
figures: the store works without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.stores.redis.errors import REDIS_UNAVAILABLE
from service.stores.redis.keyspace import RedisKeyspace

log = structlog.get_logger(__name__)

EVERY_S = 15.0
# A timeout per read: a wedged node must not hold the sampler.
READ_TIMEOUT_S = 5.0


class RedisMemory:
    def __init__(self, keyspace: RedisKeyspace) -> None:
        self._keyspace = keyspace
        # node ("host:port") -> (used_memory, maxmemory; 0: no limit)
        self.nodes: dict[str, tuple[int, int]] = {}

    async def sample(self) -> None:
        client = self._keyspace.client
        found: dict[str, tuple[int, int]] = {}
        if isinstance(client, RedisCluster):
            await client.initialize()  # learns the masters once (a no-op after)
            for node in client.get_primaries():
                info = await client.info("memory", target_nodes=node)
                found[node.name] = _figures(info)
        else:
            info = await client.info("memory")
            kwargs = client.connection_pool.connection_kwargs
            name = f"{kwargs.get('host', kwargs.get('path', 'redis'))}:{kwargs.get('port', '')}"
            found[name.rstrip(":")] = _figures(info)
        self.nodes = found

    async def run(self, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        while True:
            try:
                await asyncio.wait_for(self.sample(), READ_TIMEOUT_S)
            except ResponseError as exc:
                # Refused, not unreachable (NOPERM: the ACL has no INFO): asking again
                # changes nothing.
                self.nodes = {}
                log.warning("redis_memory_not_readable", error=str(exc)[:200],
                            figures="ses_tracker_redis_memory_* absent")  # fmt: skip
                return
            except (TimeoutError, *REDIS_UNAVAILABLE):
                self.nodes = {}
            await sleep(EVERY_S)


def _figures(info: dict[str, Any]) -> tuple[int, int]:
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
