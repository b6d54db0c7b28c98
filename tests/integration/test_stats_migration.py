"""Format 1's live buckets migrate in place to format 2's split layout
(service.stores.redis.stats_migration), from what that release wrote
(tests/data/format1/live_buckets.json, by make_live_buckets.py beside it), on one
Redis and in slot groups."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import orjson
import pytest
from redis import asyncio as aioredis

from service.stores.redis.stats_migration import split_live_buckets
from service.stores.redis.store import FORMAT_VERSION, RedisStore
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DUMP = orjson.loads(
    (Path(__file__).parents[1] / "data" / "format1" / "live_buckets.json").read_bytes()
)
_runs = itertools.count()


async def restore(client: aioredis.Redis, old_prefix: str, prefix: str) -> dict[int, Counter]:
    """The dump's hashes under ``prefix``, expiring in an hour as live buckets do;
    returns what format 1 read from each bucket, bookkeeping (a:, n:) left out."""
    stored = DUMP["stores"][old_prefix]
    async with client.pipeline(transaction=False) as pipe:
        for key, fields in stored["hashes"].items():
            name = prefix + key.removeprefix(old_prefix)
            pipe.hset(name, mapping=fields)
            pipe.expire(name, 3_600)
        pipe.set(f"{prefix}format", 1)
        pipe.set(f"{prefix}slot-groups", stored["slot_groups"] or 0)
        await pipe.execute()
    return {
        int(bucket): Counter({f: v for f, v in fields.items() if f[:2] not in ("a:", "n:")})
        for bucket, fields in stored["read"].items()
    }


async def hashes(client: aioredis.Redis, prefix: str) -> dict[bytes, dict]:
    return {key: await client.hgetall(key) for key in await client.keys(f"{prefix}*stats*")}


@pytest.mark.parametrize("old_prefix", ["f1:", "f1g:"])
async def test_format_1_live_buckets_are_split_at_start_up(
    redis_server: RedisServer, old_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    prefix = f"mig{next(_runs)}{old_prefix}"
    store = RedisStore(client, prefix=prefix, slot_groups=DUMP["stores"][old_prefix]["slot_groups"])
    try:
        expected = await restore(client, old_prefix, prefix)
        buckets = sorted(expected)
        assert await store.claim_format() == 1
        assert int(await client.get(f"{prefix}format")) == FORMAT_VERSION
        # Every figure format 1 read, read back the same.
        assert await store.read_buckets(buckets) == [expected[b] for b in buckets]
        # The buckets' own hashes hold overall figures (and marks) only; the groups
        # sit in their dimensions' hashes, expiring with their buckets.
        for group in store.slot_groups:
            for bucket in buckets:
                own = await client.hgetall(group.keys.stats(bucket))
                assert own and not [f for f in own if f[:2] in (b"g:", b"a:", b"n:")]
                marked = sorted(f[2:].decode() for f in own if f.startswith(b"d:"))
                assert set(marked) <= {"configuration_set", "domain", "identity", "provider",
                                       "tag:team"}  # fmt: skip
                for dimension in marked:
                    key = group.keys.stats_groups(bucket, dimension)
                    assert 0 < await client.ttl(key) <= 3_600
        # A read of one dimension gets it, and no other.
        domain = await store.read_buckets(buckets, ("domain",))
        for bucket, got in zip(buckets, domain, strict=True):
            want = {f: n for f, n in expected[bucket].items()
                    if not f.startswith("g:") or f.startswith("g:domain=")}  # fmt: skip
            assert got == want
        # Again, as `ses-tracker migrate` does: nothing changes.
        before = await hashes(client, prefix)
        await split_live_buckets(store)
        await store.claim_format(rerun=True)
        assert await hashes(client, prefix) == before
    finally:
        await client.aclose()


async def test_groups_a_format_1_writer_adds_after_the_migration_still_count(
    redis_server: RedisServer,
) -> None:
    """During a rollout an older replica may still write a bucket's groups into its
    own hash: readers count them, and the next migration folds them in."""
    client = aioredis.Redis.from_url(redis_server.url)
    prefix = f"mig{next(_runs)}f1:"
    store = RedisStore(client, prefix=prefix)
    try:
        expected = await restore(client, "f1:", prefix)
        await store.claim_format()
        bucket = min(expected)
        late = {"c:sent": 1, "g:domain=late.example|c:sent": 1, "a:domain=late.example": 1}
        for field, n in late.items():
            await client.hincrby(store.slot_groups[0].keys.stats(bucket), field, n)
        want = expected[bucket] + Counter({"c:sent": 1, "g:domain=late.example|c:sent": 1})
        assert await store.read_buckets([bucket]) == [want]
        assert await store.read_buckets([bucket], ("domain",)) == [
            Counter(
                {
                    f: n
                    for f, n in want.items()
                    if not f.startswith("g:") or f.startswith("g:domain=")
                }
            )
        ]
        await split_live_buckets(store)
        assert await store.read_buckets([bucket]) == [want]
        own = await client.hgetall(store.slot_groups[0].keys.stats(bucket))
        assert not [f for f in own if f[:2] in (b"g:", b"a:")]
    finally:
        await client.aclose()
