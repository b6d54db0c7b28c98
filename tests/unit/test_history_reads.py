"""#26 point 4: history's bounds, field selection and cache of closed periods."""

from __future__ import annotations

from collections import Counter

import pytest

from service import history, stats
from service.stores.memory import MemoryStore
from service.stores.redis import rollup_cache

DAY_MS = 86_400_000


def test_the_period_cap_shrinks_with_the_slot_groups_but_never_below_the_pages_trend() -> None:
    assert history.max_periods("day", 1) == history.MAX_PERIODS["day"]
    assert history.max_periods("day", 16) == history.KEY_BUDGET // 16
    assert history.max_periods("day", 128) == 93  # the status page asks for 90 days
    assert history.max_periods("hour", 128) == 64
    assert history.max_periods("hour", 1_000) == 48
    until = 400 * DAY_MS
    assert len(history.periods("day", until - 93 * DAY_MS, until, groups=128)) == 93
    with pytest.raises(history.RangeError, match="at most 93 days"):
        history.periods("day", until - 94 * DAY_MS, until, groups=128)
    assert len(history.periods("day", 0, until, groups=16)) == 400


def test_only_periods_over_an_hour_past_their_end_are_closed() -> None:
    start = 1_000 * stats.DAY_S
    assert not rollup_cache.closed(stats.DAY_S, start, start + stats.DAY_S + 3_599)
    assert rollup_cache.closed(stats.DAY_S, start, start + stats.DAY_S + 3_600)


def test_the_cache_holds_its_bytes_least_recently_used_first_out() -> None:
    one = Counter({f"c:{n}": n for n in range(10)})
    size = rollup_cache.size_of(one)
    cache = rollup_cache.ClosedPeriods(max_bytes=3 * size)
    for start in range(3):
        cache.put(("day", start, ""), one, now_s=0)
    assert cache.get(("day", 0, ""), now_s=1) == one  # 0 is now the most recent
    cache.put(("day", 3, ""), one, now_s=1)
    assert len(cache) == 3 and cache.bytes <= 3 * size
    assert cache.get(("day", 1, ""), now_s=1) is None  # the least recently used went
    assert cache.get(("day", 0, ""), now_s=1) == one
    got = cache.get(("day", 0, ""), now_s=1)
    assert got is not None
    got["c:1"] = 99  # a copy: the cache keeps its own
    assert cache.get(("day", 0, ""), now_s=1) == one
    # Nothing lasts past its age, so what a replay adds to an old period shows.
    assert cache.get(("day", 0, ""), now_s=cache.max_age_s + 2) is None
    # An entry over the whole budget is not kept at all.
    cache.put(("day", 9, ""), Counter({f"c:{n}": 1 for n in range(1_000)}), now_s=1)
    assert cache.get(("day", 9, ""), now_s=1) is None and cache.bytes <= 3 * size


async def test_the_memory_store_answers_the_fields_asked_for() -> None:
    store = MemoryStore()
    rollup = stats.RollupCounters()
    rollup.update({"c:sent": 2, "g:domain=x.com|c:sent": 2, "g:provider=other|c:sent": 2})
    store._rollups["day", 0] = rollup
    [overall, missing] = await store.read_rollups("day", [0, 86_400], history.Fields(None))
    assert overall == {"c:sent": 2} and missing == {}
    [by_domain] = await store.read_rollups("day", [0], history.Fields("domain"))
    assert by_domain == {"c:sent": 2, "g:domain=x.com|c:sent": 2}


def test_the_route_scales_the_cap_by_the_groups_behind_any_cache() -> None:
    from redis import asyncio as aioredis

    from api.routes.stats import _slot_group_count
    from service.stores import RedisStore
    from service.stores.cached import CachedStore

    client = aioredis.Redis.from_url("redis://127.0.0.1:1")  # never connected
    clustered = RedisStore(client, slot_groups=128)
    assert _slot_group_count(clustered) == 128
    assert _slot_group_count(CachedStore(clustered, ttl_s=1)) == 128
    assert _slot_group_count(RedisStore(client)) == 1
    assert _slot_group_count(MemoryStore()) == 1
