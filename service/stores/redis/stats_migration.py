"""Format 2's step for live statistics (``service.stores.redis.migrations``).

Format 1 kept a live bucket in one hash, ``<prefix>stats:<bucket>``: overall figures,
every group's ``g:`` fields and the bucket's own admission (``a:``/``n:``). Format 2
keeps the overall figures there, each dimension's groups in
``<prefix>stats-g:<bucket>:<dimension>`` (marked ``d:<dimension>`` in the overall
hash) and admission per hour in ``<prefix>stats-a:<hour>`` (``service.stats``).

The step moves each format-1 bucket's ``g:`` fields into its dimensions' hashes
(added, so groups that newer writers already counted there add up) and drops its
admission fields: the hour's admission starts afresh, and the old buckets, which
expire within the hour, hold at most what they admitted. It is idempotent (a moved
field is gone from the bucket), and safe beside format-1 writers: readers take
``g:`` fields from the overall hash too, and ``ses-tracker migrate`` moves what
such writers added since. One script per slot group, every key it names declared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack
import structlog

from service.stores.redis.keys import RedisKeys

if TYPE_CHECKING:
    from service.stores.redis.store import RedisStore

log = structlog.get_logger(__name__)

# KEYS: per bucket, its hash then its dimensions' hashes. ARGV[1]: msgpack
# [[bucket key position, {dimension: key position}], ...]. Returns the fields moved.
_SPLIT_BUCKETS = """
local plan = cmsgpack.unpack(ARGV[1])
local moved = 0
for _, entry in ipairs(plan) do
  local source = KEYS[entry[1]]
  local ttl = redis.call('PTTL', source)
  local fields = redis.call('HGETALL', source)
  for i = 1, #fields, 2 do
    local field, value = fields[i], fields[i + 1]
    local head = string.sub(field, 1, 2)
    if head == 'g:' then
      local dimension = string.match(field, '^g:([^=]*)=')
      local position = dimension and entry[2][dimension]
      if position then
        local into = KEYS[position]
        redis.call('HINCRBY', into, field, value)
        if ttl > 0 then
          redis.call('PEXPIRE', into, ttl)
        end
        redis.call('HSET', source, 'd:' .. dimension, 1)
        redis.call('HDEL', source, field)
        moved = moved + 1
      end
    elseif head == 'a:' or head == 'n:' then
      redis.call('HDEL', source, field)
    end
  end
end
return moved
"""


def _dimension(field: bytes) -> str | None:
    """``domain`` from ``g:domain=x.com|c:sent``."""
    if not field.startswith(b"g:") or b"=" not in field:
        return None
    return field[2:].partition(b"=")[0].decode()


async def split_live_buckets(store: RedisStore) -> None:
    """Each slot group's format-1 live buckets, split as format 2 keeps them."""
    client = store.keyspace.client
    script = client.register_script(_SPLIT_BUCKETS)
    for group in store.slot_groups:
        keys: RedisKeys = group.keys
        # The buckets written lately are listed in the revisions, under format 1's
        # name or format 2's (the step that renames them may have run already).
        buckets: set[int] = set()
        for revisions in (f"{keys.prefix}stats:rev", keys.stats_revisions):
            for field in await client.hkeys(revisions):
                if field.isdigit():
                    buckets.add(int(field))
        if not buckets:
            continue
        ordered = sorted(buckets)
        async with client.pipeline(transaction=False) as pipe:
            for bucket in ordered:
                pipe.hkeys(keys.stats(bucket))
            names = await pipe.execute()
        declared: list[str] = []
        plan: list[list] = []
        for bucket, fields in zip(ordered, names, strict=True):
            dimensions = sorted({d for d in map(_dimension, fields) if d is not None})
            if not dimensions and not any(f[:2] in (b"a:", b"n:") for f in fields):
                continue  # empty, or already split
            declared.append(keys.stats(bucket))
            positions = {}
            for dimension in dimensions:
                declared.append(keys.stats_groups(bucket, dimension))
                positions[dimension] = len(declared)
            plan.append([len(declared) - len(dimensions), positions])
        if plan:
            moved = await script(keys=declared, args=[msgpack.packb(plan)])
            log.info("migrated_live_buckets", group=group.number, buckets=len(plan), fields=moved)
