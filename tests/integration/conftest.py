from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as aioredis

from service.stores import RedisStore
from tests.support.redis import RedisTarget

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


@pytest.fixture
async def redis_client(redis_target: RedisTarget) -> AsyncIterator[aioredis.Redis]:
    client = redis_target.client()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_store(redis_target: RedisTarget) -> Callable[..., RedisStore]:
    """RedisStores on their own connections, under a prefix no other test uses (on a
    cluster, in slot groups as a cluster deployment is)."""
    prefix = f"t{next(_prefixes)}:"

    def make(**kwargs) -> RedisStore:
        return redis_target.store(prefix=prefix, **kwargs)

    return make
