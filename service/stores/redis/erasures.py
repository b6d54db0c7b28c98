"""Erasure's steps on the store (``service.erasure_job`` runs them): the tombstone
and the revisions ``merge.lua`` checks, each record rewritten without the address,
what is left under it, and the jobs' own records, queue and lease."""

from __future__ import annotations

import time

import structlog

from service import tombstones
from service.erasure import erase
from service.stores.base import Erasing, ErasureJobs
from service.stores.redis import layout, lease
from service.stores.redis.errors import unavailable
from service.stores.redis.groups import GroupedReads
from service.stores.redis.keys import RedisKeys
from service.stores.redis.keyspace import Client
from service.stores.redis.record import record_from_bytes, record_to_bytes
from service.suppressions import REASONS as SUPPRESSION_REASONS

log = structlog.get_logger(__name__)

# An erasure's step on one record (KEYS: the record, the address's index; ARGV: the
# record as read or '' for none, its rewrite or '' for none, its handle, '1' to
# delete it instead): only if the record is still what was read (a merge may have
# landed), the rewrite and the index entry's removal together. 0: changed
# meanwhile, read again.
_ERASE_RECORD = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# An erased address's suppression (KEYS: it, the listing, one listing per reason;
# ARGV: the address).
_FORGET_SUPPRESSION = """
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
"""

# A tombstone keeps the later of two erasure times.
_KEEP_LATER = """
local kept = math.max(tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], string.format("%d", kept))
return kept
"""


class ErasureSteps(GroupedReads, Erasing, ErasureJobs):
    """The store's erasure steps. ``_keys``: the keys outside the slot groups
    (tombstones, their key, the jobs); ``_tombstones``: the view the merge strips
    against too (None: read at next use)."""

    _keys: RedisKeys
    _tombstones: tombstones.Tombstones | None

    def _prepare_erasures(self, client: Client) -> None:
        self._erase_record = client.register_script(_ERASE_RECORD)
        self._forget_suppression = client.register_script(_FORGET_SUPPRESSION)
        self._keep_later = client.register_script(_KEEP_LATER)
        self._hold_lease = client.register_script(lease.TAKE_OR_RENEW)
        self._tombstones = None

    async def tombstone(self, address: str, at_ms: int) -> int:
        """The tombstone first, then every group's revision of them: a merge that
        read the revision before this sees it changed and strips again."""
        with unavailable("erase"):
            view = self._tombstones or await self._load_tombstones()
            kept = await self._keep_later(
                keys=[self._keys.tombstones], args=[view.digest(address), at_ms]
            )
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.incr(group.keys.erasure_epoch)
                await pipe.execute()
            # After the revisions moved: a merge from then on cannot suppress the
            # address for a message sent before, so what is suppressed later is new.
            for group in self._groups:
                keys = [
                    group.keys.suppression(address),
                    group.keys.suppressions,
                    *(group.keys.suppressions_by_reason(r) for r in SUPPRESSION_REASONS),
                ]
                await self._forget_suppression(keys=keys, args=[address])
            # At once: a sender in this process checks them (``forgotten``).
            self._tombstones = await self._load_tombstones()
        return int(kept)

    def forgotten(self, address: str, sent_at: int) -> bool:
        return self._tombstones is not None and self._tombstones.forgotten(address, sent_at)

    async def refresh_tombstones(self) -> None:
        epochs = await self._read_epochs()
        view = self._tombstones
        if view is None or dict(view.epochs) != epochs:
            self._tombstones = await self._load_tombstones(epochs)

    async def _read_epochs(self) -> dict[int, str]:
        """Each slot group's revision of the tombstones (merge.lua checks it)."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.get(group.keys.erasure_epoch)
                replies = await pipe.execute()
        return {
            n: (epoch or layout.NO_ERASURES.encode()).decode() for n, epoch in enumerate(replies)
        }

    async def _load_tombstones(self, epochs: dict[int, str] | None = None) -> tombstones.Tombstones:
        """The revisions first (``epochs``, when just read), then the tombstones: a
        view is never older than the revisions it carries (what merge.lua checks)."""
        if epochs is None:
            epochs = await self._read_epochs()
        key = await erasure_key(self._client, self._keys)
        with unavailable("read"):
            stored: dict[str, int] = {}
            async for name, at in self._client.hscan_iter(self._keys.tombstones, count=1000):
                stored[name.decode()] = int(at)
            kept = tombstones.live(stored, int(time.time() * 1000))
            expired = sorted(stored.keys() - kept.keys())
            for start in range(0, len(expired), 1_000):  # bounded calls
                await self._client.hdel(self._keys.tombstones, *expired[start : start + 1_000])
        return tombstones.Tombstones(key, kept, epochs)

    async def erasure_candidates(self, address: str, before_ms: int, limit: int) -> list[str]:
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.zrangebyscore(
                        group.keys.recipient(address), "-inf", f"({before_ms}", start=0, num=limit
                    )
                replies = await pipe.execute()
        found = [
            f"{number}:{handle.decode()}"
            for number, handles in enumerate(replies)
            for handle in handles
        ]
        return found[:limit]

    async def erase_record(self, candidate: str, address: str) -> bool:
        """Compare and set: a merge landing between the read and the write is not
        overwritten; the erasure is redone on the merged record."""
        number, _, handle = candidate.partition(":")
        group = self._groups[int(number)]
        keys = [group.keys.record(handle), group.keys.recipient(address)]
        with unavailable("erase"):
            while True:
                raw = await self._client.get(keys[0])
                rewritten, drop = b"", False
                if raw is not None:
                    try:
                        message_id, record = record_from_bytes(raw)
                    except Exception:
                        # Not a record this code can read (written by something
                        # else, or damaged): it cannot be rewritten, so when it
                        # names the address it goes whole.
                        drop = address.encode() in raw
                        log.warning("erasure_dropped_unreadable_record", dropped=drop)
                    else:
                        if erase(record, address):
                            rewritten = record_to_bytes(message_id, record)
                args = [raw or b"", rewritten, handle, "1" if drop else ""]
                if await self._erase_record(keys=keys, args=args):
                    return bool(rewritten) or drop

    async def forget_recipient(self, address: str, before_ms: int) -> int:
        with unavailable("erase"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.zremrangebyscore(group.keys.recipient(address), "-inf", f"({before_ms}")
                return sum(await pipe.execute())

    async def save_erasure(self, job_id: str, data: bytes, queued: bool, keep_s: int) -> None:
        with unavailable("write"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(self._keys.erasure(job_id), data, ex=max(1, keep_s))
                if queued:
                    pipe.zadd(self._keys.erasures, {job_id: time.time()}, nx=True)
                else:
                    pipe.zrem(self._keys.erasures, job_id)
                await pipe.execute()

    async def load_erasure(self, job_id: str) -> bytes | None:
        with unavailable("read"):
            return await self._client.get(self._keys.erasure(job_id))

    async def queued_erasures(self, limit: int) -> list[str]:
        with unavailable("read"):
            return [
                name.decode()
                for name in await self._client.zrange(self._keys.erasures, 0, limit - 1)
            ]

    async def hold_erasure_lease(self, owner: str, ttl_ms: int) -> bool:
        with unavailable("lease"):
            return bool(
                await self._hold_lease(keys=[self._keys.erasure_lease], args=[owner, ttl_ms])
            )


async def erasure_key(client: Client, keys: RedisKeys) -> bytes:
    """The key of the tombstones' hashes, made on first use and stored beside the
    data it keys (``st:erasure-key``); the audit log hashes addresses under it too."""
    with unavailable("read"):
        key = await client.get(keys.erasure_key)
        if key is None:
            await client.set(keys.erasure_key, tombstones.new_key().hex(), nx=True)
            key = await client.get(keys.erasure_key)
    return bytes.fromhex(key.decode())
