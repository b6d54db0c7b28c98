"""Alert state in Redis, shared by every replica (see ``service.alerts.store``).

Keys, beside the message store's (same prefix): ``al:lease`` (the evaluating
replica, with a TTL), ``al:records`` (hash: alert key -> record JSON),
``al:history`` (list of notices, newest first, capped), ``al:entries`` (hash:
outbox entry id -> entry JSON), ``al:out:<sink id>`` (zset: entry id scored by
when it is next due) and ``al:accounts`` (hash: account -> sending status and when
it was last seen, at most ``AccountLimits.keep`` fields: the scripts that write and
read it trim it in the same step, so it never grows past that however many accounts
events name). Every multi-key change is one Lua script, so it happens whole or not
at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import structlog
from redis import asyncio as aioredis

from service.alerts.accounts import AccountLimits
from service.alerts.evaluate import AccountStatus
from service.alerts.lifecycle import AlertRecord, Plan
from service.alerts.model import Alert, alert_from_dict, alert_to_dict
from service.alerts.store import HISTORY_KEPT, AlertStore, OutboxEntry, new_entries
from service.stores import lease
from service.stores.keys import DEFAULT_PREFIX, RedisKeys

log = structlog.get_logger(__name__)


# KEYS: lease, records, history, entries. ARGV: owner, plan JSON.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local plan = cjson.decode(ARGV[2])
for _, pair in ipairs(plan.upserts) do redis.call('HSET', KEYS[2], pair[1], pair[2]) end
for _, key in ipairs(plan.deletes) do redis.call('HDEL', KEYS[2], key) end
for _, notice in ipairs(plan.history) do redis.call('LPUSH', KEYS[3], notice) end
if #plan.history > 0 then redis.call('LTRIM', KEYS[3], 0, tonumber(plan.kept) - 1) end
for _, entry in ipairs(plan.outbox) do
  redis.call('HSET', KEYS[4], entry[2], entry[4])
  redis.call('ZADD', entry[1], entry[3], entry[2])
end
return 1
"""

# KEYS: outbox zset, entries. ARGV: now, visible again at, limit.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local claimed = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(claimed, entry)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""

# The twin of accounts.to_forget: drop accounts unseen for the TTL (ms, 0: none),
# then, over ``keep``, the least recently seen, running before paused. The hash is
# at most keep + 1 fields here, except once after an upgrade from a version that
# did not bound it (its fields carry no "seen": their "at" stands in). Such a hash
# more than LEGACY_SLACK over ``keep`` was flooded: sorting it would hold Redis for
# seconds (210,000 fields: over 5 s), and its genuine accounts cannot be told from
# forged ones anyway, so it is unlinked (freed in the background) and trim says so.
LEGACY_SLACK = 1_000
_TRIM_ACCOUNTS = """
local function trim(key, now, keep, ttl)
  local size = redis.call('HLEN', key)
  if size > keep + LEGACY_SLACK then
    redis.call('UNLINK', key)
    return size
  end
  if ttl == 0 and size <= keep then return 0 end
  local all = redis.call('HGETALL', key)
  local left = {}
  for i = 1, #all, 2 do
    local ok, s = pcall(cjson.decode, all[i + 1])
    if not ok or type(s) ~= 'table' then s = {} end
    local seen = tonumber(s.seen) or tonumber(s.at) or 0
    if ttl > 0 and seen <= now - ttl then
      redis.call('HDEL', key, all[i])
    else
      table.insert(left, {s.enabled == false and 1 or 0, seen, all[i]})
    end
  end
  local over = #left - keep
  if over > 0 then
    table.sort(left, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      if a[2] ~= b[2] then return a[2] < b[2] end
      return a[3] < b[3]
    end)
    for i = 1, over do redis.call('HDEL', key, left[i][3]) end
  end
  return 0
end
""".replace("LEGACY_SLACK", str(LEGACY_SLACK))

# KEYS: accounts. ARGV: account, status JSON, at, enabled (1/0), now, keep, ttl.
_NOTE_ACCOUNT = (
    _TRIM_ACCOUNTS
    + """
local now, keep, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local discarded = trim(KEYS[1], now, keep, ttl)
local body = cjson.decode(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  old = cjson.decode(old)
  local at = tonumber(ARGV[3])
  if old.at > at or (old.at == at and not (old.enabled and ARGV[4] == '0')) then
    body = old  -- not newer: the old status stays, seen now
  end
end
body.seen = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(body))
trim(KEYS[1], now, keep, ttl)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return discarded
"""
)

# KEYS: accounts. ARGV: now, keep, ttl. Fields discarded as a flood (0 mostly),
# then the accounts kept now, as a flat list.
_ACCOUNTS = (
    _TRIM_ACCOUNTS
    + """
local discarded = trim(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {discarded, redis.call('HGETALL', KEYS[1])}
"""
)


class RedisAlertStore(AlertStore):
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = True,
        account_limits: AccountLimits | None = None,
    ) -> None:
        self._client = client
        self._account_limits = account_limits or AccountLimits()
        self._owns_client = owns_client
        self._keys = RedisKeys(prefix)
        self._lease_key = self._keys.alert_lease
        self._records_key = self._keys.alert_records
        self._history_key = self._keys.alert_history
        self._entries_key = self._keys.alert_entries
        self._accounts_key = self._keys.alert_accounts
        self._hold_lease = client.register_script(lease.TAKE_OR_RENEW)
        self._drop_lease = client.register_script(lease.RELEASE)
        self._commit = client.register_script(_COMMIT)
        self._claim = client.register_script(_CLAIM)
        self._note_account = client.register_script(_NOTE_ACCOUNT)
        self._accounts = client.register_script(_ACCOUNTS)

    def outbox_key(self, sink_id: str) -> str:
        return self._keys.alert_outbox(sink_id)

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self._hold_lease(keys=[self._lease_key], args=[owner, ttl_ms]))

    async def drop_lease(self, owner: str) -> None:
        await self._drop_lease(keys=[self._lease_key], args=[owner])

    async def records(self) -> dict[str, AlertRecord]:
        raw = await self._client.hgetall(self._records_key)
        return {
            key.decode(): AlertRecord.from_dict(orjson.loads(value)) for key, value in raw.items()
        }

    async def commit(self, owner: str, plan: Plan, sink_ids: Sequence[str], now_ms: int) -> bool:
        entries = new_entries(plan.notices, sink_ids, now_ms)
        payload = {
            "upserts": [
                [key, orjson.dumps(record.to_dict()).decode()]
                for key, record in plan.upserts.items()
            ],
            "deletes": plan.deletes,
            # LPUSH one by one puts the last first: push oldest first.
            "history": [orjson.dumps(alert_to_dict(a)).decode() for a in plan.notices],
            "kept": str(HISTORY_KEPT),
            "outbox": [
                [self.outbox_key(e.sink_id), e.id, str(now_ms), e.to_json().decode()]
                for e in entries
            ],
        }
        # cjson turns an empty list into an empty object; ipairs reads both alike.
        keys = [self._lease_key, self._records_key, self._history_key, self._entries_key]
        return bool(await self._commit(keys=keys, args=[owner, orjson.dumps(payload)]))

    async def history(self, limit: int) -> list[Alert]:
        raw = await self._client.lrange(self._history_key, 0, limit - 1)
        return [alert_from_dict(orjson.loads(item)) for item in raw]

    async def claim(
        self, sink_id: str, now_ms: int, visible_again_ms: int, limit: int
    ) -> list[OutboxEntry]:
        raw = await self._claim(
            keys=[self.outbox_key(sink_id), self._entries_key],
            args=[now_ms, visible_again_ms, limit],
        )
        return [OutboxEntry.from_json(item) for item in raw]

    async def finish(self, entry: OutboxEntry) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.outbox_key(entry.sink_id), entry.id)
            pipe.hdel(self._entries_key, entry.id)
            await pipe.execute()

    async def reschedule(self, entry: OutboxEntry, due_ms: int) -> None:
        again = replace(entry, attempts=entry.attempts + 1)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._entries_key, entry.id, again.to_json())
            pipe.zadd(self.outbox_key(entry.sink_id), {entry.id: due_ms}, xx=True)
            await pipe.execute()

    async def release(self, entries: Sequence[OutboxEntry], now_ms: int) -> None:
        if not entries:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for entry in entries:
                pipe.zadd(self.outbox_key(entry.sink_id), {entry.id: now_ms}, xx=True)
            await pipe.execute()

    async def pending(self, sink_id: str) -> int:
        return int(await self._client.zcard(self.outbox_key(sink_id)))

    def _limit_args(self) -> list[int]:
        limits = self._account_limits
        return [limits.keep, limits.ttl_ms or 0]

    async def note_account(self, account: str, status: AccountStatus, now_ms: int) -> None:
        body = orjson.dumps(
            {"enabled": status.enabled, "at": status.at, "detail_type": status.detail_type}
        )
        discarded = await self._note_account(
            keys=[self._accounts_key],
            args=[account, body, status.at, int(status.enabled), now_ms, *self._limit_args()],
        )
        _flood_discarded(int(discarded))

    async def oldest_waiting_ms(self, sink_id: str) -> int | None:
        # Entry ids begin with their creation time (store.new_entries); an outbox
        # holds alert notices, so a few hundred ids at most is plenty to look at.
        ids = await self._client.zrange(self.outbox_key(sink_id), 0, 999)
        times = [int(entry_id[:14]) for entry_id in ids if entry_id[:14].isdigit()]
        return min(times, default=None)

    async def note_health(self, owner: str, health: dict[str, Any]) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.alert_health, owner, orjson.dumps(health))
            # Replicas come and go: the hash lives while any of them reports.
            pipe.pexpire(self._keys.alert_health, 10 * 60_000)
            await pipe.execute()

    async def healths(self) -> dict[str, dict[str, Any]]:
        raw = await self._client.hgetall(self._keys.alert_health)
        return {owner.decode(): orjson.loads(value) for owner, value in raw.items()}

    async def accounts(self, now_ms: int) -> dict[str, AccountStatus]:
        discarded, flat = await self._accounts(
            keys=[self._accounts_key], args=[now_ms, *self._limit_args()]
        )
        _flood_discarded(int(discarded))
        accounts = {}
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            raw = orjson.loads(value)
            accounts[name.decode()] = AccountStatus(
                bool(raw["enabled"]), int(raw["at"]), str(raw["detail_type"])
            )
        return accounts

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _flood_discarded(fields: int) -> None:
    if fields:
        log.warning(
            "alert_accounts_flood_discarded",
            fields=fields,
            hint="kept by an earlier version; set SES_TRACKER_ACCOUNT_IDS",
        )
