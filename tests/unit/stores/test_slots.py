"""Slot groups: where a message's keys live on a cluster, and how group pages merge."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from service.search import message_handle
from service.stores.redis.keys import RedisKeys
from service.stores.redis.slots import group_of, group_prefixes, group_tags, merge_pages


@pytest.mark.parametrize("count", [1, 3, 16, 100])
def test_each_group_hashes_into_its_own_equal_share_of_the_slots(count: int) -> None:
    tags = group_tags(count)
    assert len(set(tags)) == count
    for index, tag in enumerate(tags):
        assert key_slot(tag.encode()) * count // REDIS_CLUSTER_HASH_SLOTS == index


def test_every_key_of_a_group_is_in_one_slot_and_one_redis_keeps_the_plain_layout() -> None:
    assert group_prefixes("st:", None) == ("st:",)
    for prefix in group_prefixes("st:", 16):
        keys = RedisKeys(prefix)
        names = [keys.record("abcdefghijklmnop"), keys.recipient("a@x.com"), keys.stats(7),
                 keys.rollup("day", 0), keys.transitions, keys.forward, keys.suppressions,
                 keys.suppression("a@x.com"), keys.pending, keys.stats_revisions]  # fmt: skip
        assert len({key_slot(name.encode()) for name in names}) == 1


def test_messages_spread_evenly_over_the_groups_and_never_move() -> None:
    groups = Counter(group_of(message_handle(f"m-{n}"), 16) for n in range(16_000))
    assert set(groups) == set(range(16))
    assert max(groups.values()) < 1.15 * min(groups.values())
    assert group_of(message_handle("m-1"), 16) == group_of(message_handle("m-1"), 16)
    assert group_of(message_handle("m-1"), 1) == 0


def paged(items: list[int], budget: int):
    """A group's reader: items newest first after a cursor, ``budget`` examined a page."""

    def read(after: int | None, limit: int) -> tuple[list[int], int | None]:
        rest = [i for i in sorted(items, reverse=True) if after is None or i < after]
        examined = rest[:budget]
        page = examined[:limit]
        if len(page) == limit:
            return page, page[-1] if len(rest) > limit else None
        return page, examined[-1] if len(rest) > budget else None

    return read


@given(
    st.lists(st.integers(0, 10_000), unique=True, max_size=120),
    st.integers(1, 6),
    st.integers(1, 15),
    st.integers(1, 20),
)
def test_merged_pages_walk_every_item_once_newest_first(
    items: list[int], groups: int, limit: int, budget: int
) -> None:
    readers = [paged([i for i in items if i % groups == g], budget) for g in range(groups)]
    walked: list[int] = []
    after = None
    for _ in range(10_000):
        page, after = merge_pages(
            [read(after, limit) for read in readers], limit, lambda item: item
        )
        assert len(page) <= limit
        walked += page
        if after is None:
            break
    assert walked == sorted(items, reverse=True)
