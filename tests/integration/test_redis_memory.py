"""Each Redis master's memory, sampled for /metrics and the near-the-limit alert
(service.stores.redis.memory)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import structlog
from redis import asyncio as aioredis

from service.outages import OUTAGES, STORE
from service.stores.redis.keyspace import RedisKeyspace
from service.stores.redis.memory import RedisMemory
from tests.support.servers import RedisClusterServers, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_one_redis_reports_its_used_memory_and_limit(redis_server: RedisServer) -> None:
    keyspace = RedisKeyspace.connect(redis_server.url)
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("maxmemory", 512 * 1024 * 1024)
    try:
        memory = RedisMemory(keyspace)
        await memory.sample()
        [(node, (used, limit))] = memory.nodes.items()
        assert node == f"127.0.0.1:{redis_server.port}"
        assert used > 0 and limit == 512 * 1024 * 1024
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()
        await keyspace.close()


async def test_a_cluster_reports_each_master(redis_cluster: RedisClusterServers) -> None:
    keyspace = RedisKeyspace.connect(redis_cluster.url, cluster=True)
    try:
        memory = RedisMemory(keyspace)
        await memory.sample()
        assert len(memory.nodes) == 3
        assert all(used > 0 for used, _ in memory.nodes.values())
    finally:
        await keyspace.close()


async def test_a_user_refused_info_gets_one_warning_and_no_outage(
    redis_server: RedisServer,
) -> None:
    """INFO is in @dangerous: a least-privilege ACL user may not have it. The store
    still works, so no dependency_down, and no warning every 15 s."""
    admin = aioredis.Redis.from_url(redis_server.url)
    user, password = f"limited-{uuid.uuid4().hex[:8]}", "a-password-for-the-test"
    await admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"],
        commands=["+@all", "-@dangerous"],
    )  # fmt: skip
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    keyspace = RedisKeyspace.connect(url)
    try:
        memory = RedisMemory(keyspace)
        with structlog.testing.capture_logs() as logged:
            await asyncio.wait_for(memory.run(), 10)  # returns: asking again changes nothing
        assert [e["event"] for e in logged] == ["redis_memory_not_readable"]
        assert memory.nodes == {}
        assert OUTAGES.dependencies[STORE].up
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()
        await keyspace.close()
