"""Slot groups: how the Redis keyspace is split so a Redis Cluster can spread it.

A Redis Cluster runs a script only on keys of one hash slot, and a slot lives on one
master (a cluster *shard*: a master and its replicas). So every key a merge touches
for a message (its record, the search indexes that list it, the statistics buckets
and rollups it counts in, the transitions and forwarding streams its changes go to,
the suppressions it records) is named under one *slot group* prefix,
``st:{<tag>}:``, whose hash tag puts all of them in one slot; a message belongs to
one group for ever, chosen from its handle. Keys shared between messages (a
recipient's index, a statistics bucket) therefore exist once per group, and readers
merge the groups.

The tags are chosen so the groups' slots are evenly spaced over the 16,384 slots:
``redis-cli --cluster create`` hands each master a contiguous range, so N groups
spread over M masters as evenly as N/M allows, and adding masters later moves whole
groups. The group count is fixed for the life of the data (a message's group is its
handle modulo the count): the store records it and refuses another.

With one Redis the store uses a single group under the plain prefix (``st:``), the
layout every earlier release wrote.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

MAX_SLOT_GROUPS = 1_024
# Slot groups on a Redis Cluster unless SES_TRACKER_REDIS_SLOT_GROUPS says: room for 16
# masters before a group (which cannot be split) is a master's whole load.
DEFAULT_SLOT_GROUPS = 16

# How often a reader polls the groups' streams when nothing came (one blocking read
# cannot wait on streams in several slots).
GROUP_POLL_S = 0.05

T = TypeVar("T")
K = TypeVar("K", bound=Any)


@cache
def group_tags(count: int) -> tuple[str, ...]:
    """``count`` hash tags, the i-th hashing into the i-th of ``count`` equal slot ranges."""
    if not 1 <= count <= MAX_SLOT_GROUPS:
        raise ValueError(f"slot group count must be 1..{MAX_SLOT_GROUPS}, not {count}")
    tags: list[str | None] = [None] * count
    missing = count
    candidate = 0
    while missing:
        text = str(candidate)
        group = key_slot(text.encode()) * count // REDIS_CLUSTER_HASH_SLOTS
        if tags[group] is None:
            tags[group] = text
            missing -= 1
        candidate += 1
    return tuple(tag for tag in tags if tag is not None)


def group_prefixes(prefix: str, count: int | None) -> tuple[str, ...]:
    """The key prefix of each group; ``None``: one Redis, the plain prefix."""
    if count is None:
        return (prefix,)
    return tuple(f"{prefix}{{{tag}}}:" for tag in group_tags(count))


def group_of(handle: str, count: int) -> int:
    """The group of a message, from its handle (a digest: evenly spread)."""
    if count == 1:
        return 0
    digest = base64.urlsafe_b64decode(handle)
    return int.from_bytes(digest[:4], "big") % count


def merge_pages(
    pages: Sequence[tuple[Sequence[T], K | None]], limit: int, order: Callable[[T], K]
) -> tuple[list[T], K | None]:
    """One page, newest first, from one page per slot group.

    Each group's page holds its items at or after its cursor, newest first, and that
    cursor (``None``: the group has nothing more). A group with a cursor has not
    looked past it, so the merged page stops at the newest such cursor: items of
    other groups beyond it come on the next page, and nothing is skipped.
    """
    bound = max((cursor for _, cursor in pages if cursor is not None), default=None)
    every = [item for group_items, _ in pages for item in group_items]
    items = sorted(every, key=order, reverse=True)
    if bound is not None:
        items = [item for item in items if order(item) >= bound]
    if len(items) > limit:
        items = items[:limit]
        return items, order(items[-1])
    return items, bound


async def poll_groups(read: Callable[[], Awaitable[list[T]]], wait_ms: int) -> list[T]:
    """``read()`` (one non-blocking read of every group's stream) again, GROUP_POLL_S
    apart, until it returns something or ``wait_ms`` has passed."""
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        found = await read()
        if found or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(GROUP_POLL_S)
