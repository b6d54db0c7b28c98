"""In-place migrations of the data format Redis holds (``<prefix>format``).

A release that changes the stored layout raises ``FORMAT_VERSION`` and adds a
:class:`Migration` to :data:`MIGRATIONS` that takes data of the version before to
its own. ``serve`` runs the ones above the stored version at start-up
(``RedisStore.claim_format``), and ``ses-tracker migrate`` runs them all again.

So each step must be **idempotent** (running it twice, or from two replicas starting
at once, changes nothing the second time) and **safe beside writers of either
format** (an older replica may still be writing while a rollout proceeds, so
``migrate`` after the last old replica is gone folds what it wrote since). Each
step works one slot group at a time, in one script per group, so a group is never
half-migrated and every key a script names shares the group's slot on a cluster.
Steps that land in one release share its version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from service.stores.redis.keys import RedisKeys
from service.stores.redis.stats_migration import split_live_buckets

if TYPE_CHECKING:
    from service.stores.redis.store import RedisStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    to_version: int
    summary: str
    run: Callable[[RedisStore], Awaitable[None]]


# Format 1 kept the suppression listing at <prefix>sup:idx, inside the family of the
# suppressions themselves (<prefix>sup:<address>), and the statistics revisions at
# <prefix>stats:rev, inside the buckets' family: an address "idx" met the listing.
# Format 2 names them sup-index and stats-rev. A format-1 sup:idx that is a zset is
# the listing (folded into sup-index, each address at its earliest time); one that is
# a string is what it says, the suppression of the address "idx" (a merge wrote it
# and failed on the listing), and gets its listing entry.
_SEPARATE_LISTINGS = """
local old_index, new_index, old_revisions, new_revisions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind = redis.call('TYPE', old_index)['ok']
if kind == 'zset' then
  redis.call('ZUNIONSTORE', new_index, 2, new_index, old_index, 'AGGREGATE', 'MIN')
  redis.call('DEL', old_index)
elseif kind == 'string' then
  local since = cmsgpack.unpack(redis.call('GET', old_index))[tonumber(ARGV[1])]
  local listed = redis.call('ZSCORE', new_index, 'idx')
  if since and (not listed or tonumber(listed) > since) then
    redis.call('ZADD', new_index, since, 'idx')
  end
end
if redis.call('EXISTS', old_revisions) == 1 then
  if redis.call('EXISTS', new_revisions) == 0 then
    redis.call('RENAME', old_revisions, new_revisions)
  else
    -- Newer writers started a sequence of their own; readers take a sequence that
    -- moves under them as a reset and re-read every bucket, so dropping ours is safe.
    redis.call('DEL', old_revisions)
  end
end
return kind
"""


async def _separate_listings(store: RedisStore) -> None:
    from service.stores.redis import layout

    since = layout.position(layout.SUPPRESSION, "since_ms") + 1
    script = store.keyspace.client.register_script(_SEPARATE_LISTINGS)
    for group in store.slot_groups:
        keys: RedisKeys = group.keys
        prefix = keys.prefix
        kind = await script(
            keys=[
                f"{prefix}sup:idx",
                keys.suppressions,
                f"{prefix}stats:rev",
                keys.stats_revisions,
            ],
            args=[since],
        )
        if kind not in (b"none", "none"):
            log.info("migrated_listing", group=group.number, format1_listing=kind)


# Per call, at most this many listing entries or rollup periods: a step never holds
# Redis (or a reply) for long, however much data it meets.
_CHUNK = 1_000


async def _list_by_reason(store: RedisStore) -> None:
    """Format 2 lists suppressions per reason too (``sup-reason:<reason>``, written by
    merge.lua beside ``sup-index``): each group's listing is paged through (ZSCAN
    returns every entry present throughout, whatever merges add meanwhile) and each
    live entry added to its reason's listing at the same score. Idempotent: ZADD of
    what is there changes nothing."""
    from service.stores.redis.suppressions import suppression_from

    client = store.keyspace.client
    for group in store.slot_groups:
        keys: RedisKeys = group.keys
        cursor = 0
        listed = 0
        while True:
            cursor, rows = await client.zscan(keys.suppressions, cursor, count=_CHUNK)
            members = [(m.decode(), score) for m, score in rows]
            if members:
                async with client.pipeline(transaction=False) as pipe:
                    for member, _ in members:
                        pipe.get(keys.suppression(member))
                    raws = await pipe.execute()
                async with client.pipeline(transaction=False) as pipe:
                    for (member, score), raw in zip(members, raws, strict=True):
                        if raw is not None:
                            reason = suppression_from(member, raw).reason
                            pipe.zadd(keys.suppressions_by_reason(reason), {member: score})
                            listed += 1
                    await pipe.execute()
            if int(cursor) == 0:
                break
        if listed:
            log.info("migrated_reason_listings", group=group.number, entries=listed)


# One rollup: its overall figures copied, whole, to their own hash (same expiry), and
# its period listed in its step's index. Overwriting from the rollup itself is
# idempotent, and right at any moment: the rollup holds every figure the copy does.
_INDEX_ROLLUP = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
local copied = {}
for i = 1, #fields, 2 do
  local head = string.sub(fields[i], 1, 2)
  if head == 'c:' or head == 'l:' or head == 'y:' then
    copied[#copied + 1] = fields[i]
    copied[#copied + 1] = fields[i + 1]
    if #copied >= 1000 then
      redis.call('HSET', KEYS[2], unpack(copied))
      copied = {}
    end
  end
end
if #copied > 0 then
  redis.call('HSET', KEYS[2], unpack(copied))
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])
return 1
"""
# Rollups migrated at once (one script each).
_AT_ONCE = 32


async def _index_rollups(store: RedisStore) -> None:
    """Format 2 lists the rollup periods written per step (``hist-idx:<step>``) and
    keeps each rollup's overall figures apart (``hist-all:<step>:<start>``), both
    written by merge.lua; history reads only those. Every period a rollup may still
    exist for (the longest keep, from now back) is probed with EXISTS, a chunk at a
    time, and each one there gets its copy and its index entry (one script each).
    Idempotent."""
    import asyncio
    import time

    from service import stats

    client = store.keyspace.client
    script = client.register_script(_INDEX_ROLLUP)
    now_s = int(time.time())
    for group in store.slot_groups:
        keys: RedisKeys = group.keys
        indexed = 0
        for step, step_s in stats.STEPS.items():
            last = now_s // step_s * step_s
            starts = [last - n * step_s for n in range(_KEPT_PERIODS[step])]
            for at in range(0, len(starts), _CHUNK):
                chunk = starts[at : at + _CHUNK]
                async with client.pipeline(transaction=False) as pipe:
                    for start in chunk:
                        pipe.exists(keys.rollup(step, start))
                    there = await pipe.execute()
                found = [start for start, hit in zip(chunk, there, strict=True) if hit]
                for first in range(0, len(found), _AT_ONCE):
                    await asyncio.gather(
                        *(
                            script(
                                keys=[
                                    keys.rollup(step, start),
                                    keys.rollup_overall(step, start),
                                    keys.rollup_index(step),
                                ],
                                args=[start],
                            )
                            for start in found[first : first + _AT_ONCE]
                        )
                    )
                indexed += len(found)
        if indexed:
            log.info("migrated_rollups", group=group.number, rollups=indexed)


# The most periods a rollup is kept for, per step (eleven years of days, the longest
# SES_TRACKER_HISTORY_DAYS; hourly ones a month by default: 400 days of them is ample).
_KEPT_PERIODS = {"hour": 400 * 24, "day": 3_661 + 1}


MIGRATIONS: list[Migration] = [
    Migration(
        2, "suppression listing and statistics revisions out of their families", _separate_listings
    ),
    Migration(2, "live buckets: groups per dimension, admission per hour", split_live_buckets),
    Migration(2, "suppression listings per reason", _list_by_reason),
    Migration(2, "rollups: an index of the periods written, overall figures apart", _index_rollups),
]


def pending(stored: int, current: int) -> list[Migration]:
    """The steps that take data of version ``stored`` to ``current``, in order."""
    return [
        m
        for m in sorted(MIGRATIONS, key=lambda m: m.to_version)
        if stored < m.to_version <= current
    ]
