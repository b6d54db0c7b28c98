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

An erasure (``erase_address``) reads records, history and entries a page at a time
and replaces each item with a script that first checks it is still what was read,
so a commit or a reschedule landing meanwhile is neither lost nor overwritten with
the address it had; on a mismatch it erases from what is there now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
import structlog

from service.alerts.accounts import AccountLimits
from service.alerts.erasure import ERASED, address_forms, erase_from_alert, erase_from_record
from service.alerts.evaluate import AccountStatus
from service.alerts.lifecycle import AlertRecord, Plan
from service.alerts.model import Alert, alert_from_dict, alert_to_dict
from service.alerts.store import HISTORY_KEPT, AlertStore, OutboxEntry, new_entries
from service.stores.base import StoreUnavailable
from service.stores.redis import lease
from service.stores.redis.errors import unavailable
from service.stores.redis.keyspace import RedisKeyspace

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

# KEYS: entries, outbox zset. ARGV: entry id, entry as read, entry rescheduled, due.
# Only if unchanged since read: an erasure may have rewritten it meanwhile.
_RESCHEDULE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[1])
return 1
"""

# How many items an erasure reads at once (HSCAN COUNT, LRANGE span), so neither a
# long history nor a large outbox becomes one long call.
ERASE_PAGE = 200
# Passes over everything an erasure makes at most (erase_address).
ERASE_PASSES = 4

# KEYS: hash. ARGV: field, value as read, value erased. 0: changed (or gone) since.
_ERASE_FIELD = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: history. ARGV: index read at, value as read, value erased, window. Commits
# only push at the head (and trim the tail), so a notice read at an index is there
# or, after pushes, further on: it is looked for in a bounded window past it (the
# first equal one: equal notices are all erased alike). 0: not found there (trimmed
# away, or pushed past the window; the caller reads the list again).
_ERASE_NOTICE = """
local at = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], at) == ARGV[2] then
  redis.call('LSET', KEYS[1], at, ARGV[3])
  return 1
end
local later = redis.call('LRANGE', KEYS[1], at + 1, at + tonumber(ARGV[4]))
for i, value in ipairs(later) do
  if value == ARGV[2] then
    redis.call('LSET', KEYS[1], at + i, ARGV[3])
    return 1
  end
end
return 0
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
        keyspace: RedisKeyspace,
        *,
        owns_client: bool = False,
        account_limits: AccountLimits | None = None,
    ) -> None:
        """Alert state is read and written together: its keys share one slot on a
        cluster (``keyspace.single_slot``)."""
        client = self._client = keyspace.client
        self._account_limits = account_limits or AccountLimits()
        self._owns_client = owns_client
        self._keys = keyspace.single_slot("alerts")
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
        self._reschedule = client.register_script(_RESCHEDULE)
        self._erase_field = client.register_script(_ERASE_FIELD)
        self._erase_notice = client.register_script(_ERASE_NOTICE)

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
        # From the stored entry, not the claimed copy: an erasure may have rewritten
        # it while it was being sent, and the copy would bring the address back.
        while (raw := await self._client.hget(self._entries_key, entry.id)) is not None:
            stored = OutboxEntry.from_json(raw)
            again = replace(stored, attempts=stored.attempts + 1)
            keys = [self._entries_key, self.outbox_key(entry.sink_id)]
            if await self._reschedule(keys=keys, args=[entry.id, raw, again.to_json(), due_ms]):
                return
        # Gone: finished (or given up) meanwhile, nothing to try again.

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

    async def erase_address(self, address: str) -> int:
        # A commit landing during a pass may add notices that name the address (its
        # evaluation looked messages up before they were erased): passes go on until
        # one finds nothing, so whatever was committed before the last one began is
        # erased. Commits that keep naming it (the messages still do) are an error.
        erased = 0
        with unavailable("alert erasure"):
            for _ in range(ERASE_PASSES):
                rewritten = await self._erase_pass(address)
                erased += rewritten
                if not rewritten:
                    # Never the address itself in the log.
                    log.info("alert_address_erased", store="redis", items=erased)
                    return erased
        log.warning("alert_erasure_unsettled", items=erased, passes=ERASE_PASSES)
        raise StoreUnavailable(
            f"alert erasure: commits still named the address after {ERASE_PASSES} passes"
        )

    async def _erase_pass(self, address: str) -> int:
        """Every record, notice and entry once; how many were rewritten."""
        erased = await self._erase_from_hash(self._records_key, address, _erased_record)
        erased += await self._erase_from_history(address)
        # Outbox zsets hold entry ids only (store.new_entries): entries say what is sent.
        erased += await self._erase_from_hash(self._entries_key, address, _erased_entry)
        return erased

    async def _erase_from_hash(self, key: str, address: str, rewrite: _Rewrite) -> int:
        erased = 0
        cursor = 0
        while True:
            # HSCAN returns each field there all along at least once (a field twice
            # is erased once: the second time it names nothing).
            cursor, page = await self._client.hscan(key, cursor, count=ERASE_PAGE)
            for field, raw in page.items():
                erased += await self._erase_field_of(key, field, raw, address, rewrite)
            if cursor == 0:
                return erased

    async def _erase_field_of(
        self, key: str, field: bytes, raw: bytes | None, address: str, rewrite: _Rewrite
    ) -> int:
        while raw is not None:
            erased = _erased(raw, address, rewrite)
            if erased is None:
                return 0
            if await self._erase_field(keys=[key], args=[field, raw, erased]):
                return 1
            # Committed, rescheduled or finished meanwhile: erase from what is there.
            raw = await self._client.hget(key, field)
        return 0

    async def _erase_from_history(self, address: str) -> int:
        erased = 0
        while True:
            missed = 0
            start = 0
            while True:
                page = await self._client.lrange(self._history_key, start, start + ERASE_PAGE - 1)
                for n, raw in enumerate(page):
                    rewritten = _erased(raw, address, _erased_notice)
                    if rewritten is None:
                        continue
                    args = [start + n, raw, rewritten, ERASE_PAGE]
                    if await self._erase_notice(keys=[self._history_key], args=args):
                        erased += 1
                    else:
                        missed += 1
                # Pushes meanwhile move notices toward the tail, never past a page
                # read, so paging by index skips none (at worst reads some twice).
                if len(page) < ERASE_PAGE:
                    break
                start += len(page)
            if not missed:
                return erased
            # Trimmed away, or pushed past the window by a burst of commits: once
            # more over what is there now, until a pass misses nothing.

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# A stored value without the address, or None when it names none.
_Rewrite = Callable[[bytes, str], bytes | None]


def _erased_record(raw: bytes, address: str) -> bytes | None:
    record = erase_from_record(AlertRecord.from_dict(orjson.loads(raw)), address)
    return None if record is None else orjson.dumps(record.to_dict())


def _erased_notice(raw: bytes, address: str) -> bytes | None:
    alert = erase_from_alert(alert_from_dict(orjson.loads(raw)), address)
    return None if alert is None else orjson.dumps(alert_to_dict(alert))


def _erased_entry(raw: bytes, address: str) -> bytes | None:
    entry = OutboxEntry.from_json(raw)
    alert = erase_from_alert(entry.alert, address)
    return None if alert is None else replace(entry, alert=alert).to_json()


def _erased(raw: bytes, address: str, rewrite: _Rewrite) -> bytes | None:
    """``rewrite(raw)``; a value this version cannot read (an older or damaged one)
    loses the address from its bytes all the same, rather than stop the erasure."""
    try:
        return rewrite(raw, address)
    except (ValueError, KeyError, TypeError) as exc:
        needles = [form.encode() for form in address_forms(address)]
        if not any(needle in raw for needle in needles):
            return None
        log.warning("alert_erasure_unreadable_value", error=type(exc).__name__)
        for needle in needles:
            raw = raw.replace(needle, ERASED.encode())
        return raw


def _flood_discarded(fields: int) -> None:
    if fields:
        log.warning(
            "alert_accounts_flood_discarded",
            fields=fields,
            hint="kept by an earlier version; set SES_TRACKER_ACCOUNT_IDS",
        )
