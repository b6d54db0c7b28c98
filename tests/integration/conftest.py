from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as aioredis

from service.stores import RedisStore
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_store(redis_server: RedisServer) -> Callable[..., RedisStore]:
    """RedisStores on their own connections, under a prefix no other test uses."""
    prefix = f"t{next(_prefixes)}:"

    def make(**kwargs) -> RedisStore:
        return RedisStore(aioredis.Redis.from_url(redis_server.url), prefix=prefix, **kwargs)

    return make
