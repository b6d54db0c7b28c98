"""How the Redis keyspace is split into shards, so a Redis Cluster can spread it.

A Redis Cluster runs a script only on keys of one hash slot, and a slot lives on one
master. So every key a merge touches for a message (its record, the search indexes
that list it, the statistics buckets and rollups it counts in, the transitions and
forwarding streams its changes go to, the suppressions it records) is named under
one *shard* prefix, ``st:{<tag>}:``, whose hash tag puts all of them in one slot; a
message belongs to one shard for ever, chosen from its handle. Keys shared between
messages (a recipient's index, a statistics bucket) therefore exist once per shard,
and readers merge the shards.

The tags are chosen so the shards' slots are evenly spaced over the 16,384 slots:
``redis-cli --cluster create`` hands each master a contiguous range, so N shards
spread over M masters as evenly as N/M allows, and adding masters later moves whole
shards. The shard count is fixed for the life of the data (a message's shard is its
handle modulo the count): the store records it and refuses another.

With one Redis the store uses a single shard under the plain prefix (``st:``), the
layout every earlier release wrote.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

MAX_SHARDS = 1_024
# The number of shards of a Redis Cluster unless SES_TRACKER_REDIS_SHARDS says: room
# for 16 masters before a shard is the unit that cannot be split.
DEFAULT_CLUSTER_SHARDS = 16

T = TypeVar("T")
K = TypeVar("K", bound=Any)


@cache
def shard_tags(count: int) -> tuple[str, ...]:
    """``count`` hash tags, the i-th hashing into the i-th of ``count`` equal slot ranges."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"shard count must be 1..{MAX_SHARDS}, not {count}")
    tags: list[str | None] = [None] * count
    missing = count
    candidate = 0
    while missing:
        text = str(candidate)
        shard = key_slot(text.encode()) * count // REDIS_CLUSTER_HASH_SLOTS
        if tags[shard] is None:
            tags[shard] = text
            missing -= 1
        candidate += 1
    return tuple(tag for tag in tags if tag is not None)


def shard_prefixes(prefix: str, count: int | None) -> tuple[str, ...]:
    """The key prefix of each shard; ``None``: one Redis, the plain prefix."""
    if count is None:
        return (prefix,)
    return tuple(f"{prefix}{{{tag}}}:" for tag in shard_tags(count))


def shard_of(handle: str, count: int) -> int:
    """The shard of a message, from its handle (a digest: evenly spread)."""
    if count == 1:
        return 0
    digest = base64.urlsafe_b64decode(handle)
    return int.from_bytes(digest[:4], "big") % count


def merge_pages(
    pages: Sequence[tuple[Sequence[T], K | None]], limit: int, order: Callable[[T], K]
) -> tuple[list[T], K | None]:
    """One page, newest first, from one page per shard.

    Each shard's page holds its items at or after its cursor, newest first, and that
    cursor (``None``: the shard has nothing more). A shard with a cursor has not
    looked past it, so the merged page stops at the newest such cursor: items of
    other shards beyond it come on the next page, and nothing is skipped.
    """
    bound = max((cursor for _, cursor in pages if cursor is not None), default=None)
    every = [item for shard_items, _ in pages for item in shard_items]
    items = sorted(every, key=order, reverse=True)
    if bound is not None:
        items = [item for item in items if order(item) >= bound]
    if len(items) > limit:
        items = items[:limit]
        return items, order(items[-1])
    return items, bound
