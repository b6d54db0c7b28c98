"""merge.lua's twin of the bounded live windows (service.stats): the buckets of an
hour share their admission, and a bucket's overall figures are read apart from its
groups."""

from __future__ import annotations

import itertools

import pytest
from redis import asyncio as aioredis

from service import state, stats
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import Counting, bucket_of
from service.stores import RedisStore
from tests.support import ses
from tests.support.fold import events_of
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = 1_800_001_234_000
DIMENSIONS = Dimensions(tags=("team",))
_runs = itertools.count()


def sends(first: int, count: int, at: int) -> list[dict]:
    """Messages with values ``first``.. of configuration set and recipient domain."""
    records = []
    for n in range(first, first + count):
        send = ses.send(f"w{n}-{at}", [f"a@d{n}.example", "b@gmail.com"], sent_at=at)
        send["mail"]["tags"]["ses:configuration-set"] = [f"cs{n}"]
        records.append(send)
    return records


# Three merges over two buckets of one hour and one of the hour before: the cap is
# reached in the first, so the later bucket admits only values already admitted.
BATCHES = [
    sends(0, 150, NOW - 600_000),
    sends(100, 120, NOW - 300_000) + sends(0, 5, NOW - 300_000),
    sends(500, 30, NOW - 1_300_000),
]


def python_twin() -> tuple[dict, dict]:
    live: dict = {}
    admissions: dict = {}
    records: dict = {}
    for batch in BATCHES:
        writes = encode_batch(list(events_of(batch)), NOW, DIMENSIONS)
        # A new Changes per merge, as a store makes: admission outlives it.
        changes = stats.Changes(Counting(NOW, history_days=0), live, {}, admissions)
        for write in writes:
            state.merge(records.setdefault(write.message_id, state.MessageRecord()), write, changes)
    return live, admissions


@pytest.mark.parametrize("groups", [None, 3])
async def test_redis_shares_admission_across_an_hours_buckets_as_python_does(
    redis_server: RedisServer, groups: int | None
) -> None:
    live, admissions = python_twin()
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix=f"win{next(_runs)}:", slot_groups=groups)
    try:
        for batch in BATCHES:
            writes = encode_batch(list(events_of(batch)), NOW, DIMENSIONS)
            await store.merge(writes, counting=Counting(NOW, history_days=0))
        buckets = sorted(live)
        assert len({stats.admission_hour(b) for b in buckets}) == 2
        got = await store.read_buckets(buckets)
        if groups is None:
            assert got == [live[b].fields() for b in buckets]
            for hour, admission in admissions.items():
                raw = await client.hgetall(store.slot_groups[0].keys.stats_admission(hour))
                assert {f.decode(): int(v) for f, v in raw.items()} == admission
            later = live[bucket_of(NOW - 300_000)]
            # 150 admitted first, 50 more fill the cap, 20 values (2 recipients each) over.
            assert later["g:configuration_set=(other)|c:sent"] == 40
        else:
            # Each slot group admits its own (README, Redis Cluster): the same totals.
            for bucket, counters in zip(buckets, got, strict=True):
                assert counters["c:sent"] == live[bucket]["c:sent"]
                by_domain = sum(n for f, n in counters.items() if f.startswith("g:domain="))
                assert by_domain == live[bucket]["c:sent"]
        # Any dimension subset reads as the same figures, cut to those groups.
        for dimensions in [(), ("domain",), ("provider", "tag:team")]:
            cut = await store.read_buckets(buckets, dimensions)
            for whole, part in zip(got, cut, strict=True):
                assert part == {
                    f: n
                    for f, n in whole.items()
                    if not f.startswith("g:") or f[2:].partition("=")[0] in dimensions
                }
    finally:
        await client.aclose()


async def test_a_read_that_needs_no_dimension_touches_only_the_overall_hashes(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix=f"win{next(_runs)}:")
    keys = store.slot_groups[0].keys
    try:
        at = NOW - 5_000
        writes = encode_batch(list(events_of(sends(0, 400, at))), NOW, DIMENSIONS)
        await store.merge(writes, counting=Counting(NOW))
        bucket = bucket_of(at)
        assert await client.hlen(keys.stats_groups(bucket, "domain")) > 200

        async def hits() -> int:
            return int((await client.info("stats"))["keyspace_hits"])

        before = await hits()
        [overall] = await store.read_buckets([bucket], ())
        # One key looked up (the INFO calls look up none), a few fields in it.
        assert await hits() - before == 1
        assert overall["c:sent"] == 800 and not [f for f in overall if f.startswith("g:")]
        assert await client.hlen(keys.stats(bucket)) < 20
        before = await hits()
        await store.read_stats(bucket - 3_590, bucket, ("domain",))
        assert await hits() - before == 2  # the one bucket's overall and domain hashes
    finally:
        await client.aclose()
