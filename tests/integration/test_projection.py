"""The change log and its statistics projection, on one Redis and on a cluster.

The merge appends what it changed to the log; the projection applies runs of the
log with its own checkpoint, atomically. These tests hold the projection to the
counting the memory store does inside its merge (``tests.support.fold``), whoever
applies the log, however often, after whatever crash.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
import structlog

from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import Counting, bucket_of
from service.stores import RedisStore
from tests.support import ses
from tests.support.fold import SEEN_MS, changes, events_of, fold
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = ses.SENT_AT
COUNTING = Counting(SEEN_MS)
DIMENSIONS = Dimensions(tags=("team",))
_ids = itertools.count()


def traffic(count: int, tag: str) -> list[list[dict]]:
    """Three batches of ``count`` messages: sends, deliveries, a few bounces."""
    ids = [f"proj-{tag}-{n}" for n in range(count)]
    sends = [ses.send(i, [f"r{n}@d{n % 7}.example"]) for n, i in enumerate(ids)]
    deliveries = [
        ses.delivery(i, [f"r{n}@d{n % 7}.example"], T + 900 + n) for n, i in enumerate(ids)
    ]
    bounces = [
        ses.bounce(i, [f"r{n}@d{n % 7}.example"], T + 2_000)
        for n, i in enumerate(ids)
        if n % 5 == 0
    ]
    return [sends, deliveries[: count // 2] + bounces, deliveries[count // 2 :]]


def expected(batches: list[list[dict]]) -> tuple[dict, dict]:
    live: dict = {}
    rollups: dict = {}
    fold(batches, counters=changes(live, rollups), dimensions=DIMENSIONS)
    return (
        {b: _figures(c) for b, c in live.items() if c},
        {key: _figures(c) for key, c in rollups.items()},
    )


async def merge(store: RedisStore, batch: list[dict]) -> None:
    await store.merge(encode_batch(list(events_of(batch)), SEEN_MS, DIMENSIONS), counting=COUNTING)


def _figures(counters) -> dict:
    # Not admission bookkeeping (a:, n:): on a cluster each slot group admits its
    # own values, and a read sums the groups' fields.
    return {k: v for k, v in counters.items() if k[:2] not in ("a:", "n:")}


async def figures(store: RedisStore, rollup_keys) -> tuple[dict, dict]:
    buckets = sorted((await store.stats_revisions()).buckets)
    live = dict(zip(buckets, await store.read_buckets(buckets), strict=True))
    rollups = {}
    for step, start in rollup_keys:
        [found] = await store.read_rollups(step, [start])
        rollups[step, start] = _figures(found)
    return {b: _figures(c) for b, c in live.items() if c}, rollups


async def test_statistics_applied_later_by_another_process_equal_the_merges_own(
    redis_target: RedisTarget,
) -> None:
    """A process that merged and died before applying its log (kill -9 between the
    merge and the projection) loses nothing: another applies it, once."""
    batches = traffic(40, f"late{next(_ids)}")
    want_live, want_rollups = expected(batches)
    prefix = f"late{next(_ids)}:"
    merging = redis_target.store(prefix=prefix, project_inline=False)
    for batch in batches:
        await merge(merging, batch)
    # Nothing counted yet: the statistics wait in the log.
    assert await figures(merging, want_rollups) == ({}, {k: {} for k in want_rollups})
    await merging.close()

    survivor = redis_target.store(prefix=prefix, project_inline=False)
    assert await survivor.project() > 0
    assert await survivor.project() == 0  # applied once: nothing left, nothing twice
    assert await figures(survivor, want_rollups) == (want_live, want_rollups)
    await survivor.close()


async def test_a_run_applied_twice_or_by_two_replicas_at_once_counts_once(
    redis_target: RedisTarget,
) -> None:
    batches = traffic(30, f"race{next(_ids)}")
    want_live, want_rollups = expected(batches)
    prefix = f"race{next(_ids)}:"
    stores = [redis_target.store(prefix=prefix, project_inline=False) for _ in range(3)]
    for batch in batches:
        await merge(stores[0], batch)
    logs = [group.keys.changelog for group in stores[0].slot_groups]
    entries = sum([await stores[0].keyspace.client.xlen(key) for key in logs])
    # Three replicas race for the same runs; the checkpoint lets one apply each.
    await asyncio.gather(*(store.project() for store in stores))
    assert await figures(stores[1], want_rollups) == (want_live, want_rollups)
    assert sum(store.projection.applied_entries for store in stores) == entries
    for store in stores:
        await store.close()


async def test_only_the_lease_holder_sweeps(redis_target: RedisTarget) -> None:
    prefix = f"lease{next(_ids)}:"
    first = redis_target.store(prefix=prefix, project_inline=False)
    second = redis_target.store(prefix=prefix, project_inline=False)
    batches = traffic(10, f"lease{next(_ids)}")
    await first.projection.sweep()  # takes every group's lease
    for batch in batches:
        await merge(second, batch)
    await second.projection.sweep()  # held by the first: nothing applied here
    assert second.projection.applied_entries == 0
    await first.projection.sweep()
    assert first.projection.applied_entries > 0
    want_live, want_rollups = expected(batches)
    assert await figures(second, want_rollups) == (want_live, want_rollups)
    await first.close()
    await second.close()


async def test_the_log_is_trimmed_as_it_is_applied(redis_target: RedisTarget) -> None:
    store = redis_target.store(prefix=f"trim{next(_ids)}:", project_inline=False)
    for batch in traffic(20, f"trim{next(_ids)}"):
        await merge(store, batch)
    client = store.keyspace.client
    logs = [group.keys.changelog for group in store.slot_groups]
    assert sum([await client.xlen(key) for key in logs]) > 0
    await store.project()
    # Only each checkpoint's own entry stays (how a later run knows it fell behind).
    lengths = [await client.xlen(key) for key in logs]
    assert max(lengths) == 1, lengths
    await store.close()


@pytest.mark.single_redis
async def test_a_target_redis_refuses_is_passed_over_and_counted(
    redis_target: RedisTarget,
) -> None:
    """A statistics key of the wrong type (written by something else) cannot stop the
    projection: that target's counts are lost and counted, the rest apply, and the
    checkpoint moves on."""
    batches = traffic(10, f"poison{next(_ids)}")
    want_live, _ = expected(batches)
    store = redis_target.store(prefix=f"poison{next(_ids)}:", project_inline=False)
    keys = store.slot_groups[0].keys
    await store.keyspace.client.set(keys.rollup("day", (T // 86_400_000) * 86_400), "not a hash")
    for batch in batches:
        await merge(store, batch)
    assert await store.project() > 0
    assert store.projection.skipped >= 1
    assert await store.project() == 0  # not retried for ever
    live, _ = await figures(store, [])
    assert live == want_live
    await store.close()


@pytest.mark.single_redis
async def test_a_projection_further_behind_than_the_log_says_what_it_lost(
    redis_target: RedisTarget,
) -> None:
    store = redis_target.store(prefix=f"lost{next(_ids)}:", project_inline=False)
    keys = store.slot_groups[0].keys
    first, lost, last = (traffic(5, f"lost{next(_ids)}")[0] for _ in range(3))
    await merge(store, first)
    await store.project()  # applied; its entry stays in the log as the checkpoint's
    await merge(store, lost)
    await merge(store, last)
    # The merges' trim by age reaches past the checkpoint of a stalled projection.
    [(newest, _)] = await store.keyspace.client.xrevrange(keys.changelog, count=1)
    await store.keyspace.client.xtrim(keys.changelog, minid=newest, approximate=False)
    with structlog.testing.capture_logs() as logs:
        assert await store.project() == 1
    assert store.projection.lost == 1
    assert [entry["event"] for entry in logs].count("projection_fell_behind") == 1
    # What was trimmed unapplied is missing from the statistics, and only that.
    [sends] = await store.read_buckets([bucket_of(T)])
    assert sends["c:sent"] == 10
    await store.close()


async def test_serve_sees_statistics_within_a_second_of_the_merge(
    redis_target: RedisTarget,
) -> None:
    """With the projection beside the merges (as serve runs it), a merge's
    statistics are visible within a second (README: at most SWEEP_S plus a run)."""
    prefix = f"fresh{next(_ids)}:"
    store = redis_target.store(prefix=prefix, project_inline=False)
    running = asyncio.create_task(store.projection.run_forever())
    try:
        await merge(store, traffic(10, f"fresh{next(_ids)}")[0])
        merged = asyncio.get_running_loop().time()
        sends = bucket_of(T)
        while True:
            [bucket] = await store.read_buckets([sends])
            if bucket.get("c:sent") == 10:
                break
            assert asyncio.get_running_loop().time() - merged < 1.0, bucket
            await asyncio.sleep(0.02)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    await store.close()


async def test_the_log_names_domains_never_addresses(redis_target: RedisTarget) -> None:
    """Nothing an erasure would have to reach: the statistics count by domain."""
    store = redis_target.store(prefix=f"private{next(_ids)}:", project_inline=False)
    for batch in traffic(10, f"private{next(_ids)}"):
        await merge(store, batch)
    raw = b""
    for group in store.slot_groups:
        for _, fields in await store.keyspace.client.xrange(group.keys.changelog):
            raw += b"".join(fields.values())
    assert raw and b"d3.example" in raw
    assert b"@" not in raw
    await store.close()


@pytest.mark.single_redis
async def test_a_stale_checkpoint_is_read_again_not_taken_for_a_loss(
    redis_target: RedisTarget,
) -> None:
    """A process whose remembered checkpoint another process has moved past (its
    lease ran out in a long pause) finds that entry trimmed: not a loss."""
    prefix = f"stale{next(_ids)}:"
    paused = redis_target.store(prefix=prefix, project_inline=False)
    other = redis_target.store(prefix=prefix, project_inline=False)
    await merge(paused, traffic(5, f"stale{next(_ids)}")[0])
    await paused.project()  # remembers its checkpoint
    await merge(other, traffic(5, f"stale{next(_ids)}")[0])
    await other.project()  # moves it on, and trims the entry paused remembers
    await merge(other, traffic(5, f"stale{next(_ids)}")[0])
    with structlog.testing.capture_logs() as logs:
        assert await paused.project() == 1
    assert paused.projection.lost == 0
    assert "projection_fell_behind" not in [entry["event"] for entry in logs]
    [sends] = await paused.read_buckets([bucket_of(T)])
    assert sends["c:sent"] == 15
    for store in (paused, other):
        await store.close()
