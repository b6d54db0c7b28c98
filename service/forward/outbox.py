"""The forwarding outbox: every change, appended in the merge that makes it, read by
one sender per subscription.

Entries are whole merges (``Entry``); each subscription keeps its own place, and an
entry is acknowledged for a subscription only once every item it takes from it was
delivered, so a sender that dies mid-batch leaves the entry to be read again (by
whichever replica holds the subscription's lease next): at least once, the same
item ``id`` every time.

* Redis: a stream (``st:fwd``, appended by ``merge.lua``, trimmed to
  ``SES_TRACKER_FORWARD_KEEP_S``) with one consumer group per subscription and a
  lease per subscription (``st:fwd:lease:<id>``), so one replica sends at a time and
  order per message holds. Unacknowledged entries of a sender that died are read
  again first.
* Memory: a bounded list in the process, for the embedded store (not durable, like
  everything it keeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, TypeVar

import msgpack
import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from service.forward.items import Change
from service.stores.base import StoreUnavailable
from service.stores.keys import RedisKeys

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_MEMORY_ENTRIES = 10_000
# No outbox call may wait longer than this (beyond a read's own block): the shared
# Redis client has no socket timeout, and a half-open connection must not hold a
# sender for ever.
CALL_TIMEOUT_S = 10.0

# Renew a lease only if still ours; release it only if ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Entry(NamedTuple):
    id: str  # "<ms>-<seq>", in append order
    changes: list[Change]


class Backlog(NamedTuple):
    entries: int  # appended, not yet acknowledged by the subscription
    oldest_ms: int | None  # append time of the oldest of them


class Outbox(ABC):
    @abstractmethod
    async def prepare(self, subscription_ids: Sequence[str]) -> None:
        """Start each new subscription's place at the end: it forwards what comes."""

    @abstractmethod
    async def lease(self, subscription_id: str, holder: str, ttl_ms: int) -> bool:
        """Take or renew the right to send for a subscription."""

    @abstractmethod
    async def release(self, subscription_id: str, holder: str) -> None: ...

    @abstractmethod
    async def read(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        """The oldest entries not yet acknowledged: those read before and never
        acknowledged first, then new ones (waiting up to ``block_ms`` for some)."""

    @abstractmethod
    async def ack(self, subscription_id: str, entry_ids: Sequence[str]) -> None: ...

    @abstractmethod
    async def backlog(self, subscription_id: str) -> Backlog: ...


def _changes(raw: bytes) -> list[Change]:
    # Lua writes every string as msgpack str, the binary header and event blob too:
    # read raw, and decode the text fields only.
    return [
        Change(m.decode(), a.decode(), old, new, at, latency, header, event, p.decode())
        for m, a, old, new, at, latency, header, event, p in msgpack.unpackb(raw, raw=True)
    ]


async def _bounded(call: Awaitable[T], timeout_s: float = CALL_TIMEOUT_S) -> T:
    try:
        return await asyncio.wait_for(call, timeout_s)
    except TimeoutError as exc:
        raise StoreUnavailable(f"redis did not answer within {timeout_s:g} s") from exc


class RedisOutbox(Outbox):
    # One consumer name for every replica: only the lease holder reads, and a new
    # holder must see what the last one read and never acknowledged.
    CONSUMER = "sender"

    def __init__(self, client: aioredis.Redis, prefix: str = "st:") -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.lost = 0  # entries trimmed before a subscription acknowledged them

    async def prepare(self, subscription_ids: Sequence[str]) -> None:
        for subscription_id in subscription_ids:
            try:
                await self._client.xgroup_create(
                    self._keys.forward, subscription_id, id="$", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def lease(self, subscription_id: str, holder: str, ttl_ms: int) -> bool:
        key = self._keys.forward_lease(subscription_id)
        try:
            return bool(await _bounded(self._renew(keys=[key], args=[holder, ttl_ms])))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis lease failed: {type(exc).__name__}") from exc

    async def release(self, subscription_id: str, holder: str) -> None:
        # It expires on its own.
        with contextlib.suppress(RedisError, OSError, StoreUnavailable):
            key = self._keys.forward_lease(subscription_id)
            await _bounded(self._release(keys=[key], args=[holder]), 2.0)

    async def read(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        try:
            stream = self._keys.forward
            # Read before and never acknowledged (a sender died, or lost its lease).
            pending = await _bounded(
                self._client.xreadgroup(subscription_id, self.CONSUMER, {stream: "0"}, count=count)
            )
            entries = self._entries(pending)
            live = [e for e in entries if e.changes is not None]
            gone = [e.id for e in entries if e.changes is None]
            if gone:
                # Trimmed (older than the keep) while waiting: said, and let go of.
                self.lost += len(gone)
                log.error(
                    "forward_changes_expired", subscription=subscription_id, entries=len(gone)
                )
                await self._client.xack(stream, subscription_id, *gone)
            if live or entries:
                return live
            fresh = await _bounded(
                self._client.xreadgroup(
                    subscription_id, self.CONSUMER, {stream: ">"}, count=count, block=block_ms
                ),
                CALL_TIMEOUT_S + block_ms / 1000,
            )
            return [e for e in self._entries(fresh) if e.changes is not None]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}") from exc

    @staticmethod
    def _entries(reply) -> list:  # type: ignore[no-untyped-def]
        entries = []
        for _stream, rows in reply or ():
            for entry_id, fields in rows:
                raw = (fields or {}).get(b"t")
                entries.append(
                    Entry(entry_id.decode(), _changes(raw) if raw is not None else None)  # type: ignore[arg-type]
                )
        return entries

    async def ack(self, subscription_id: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            try:
                await _bounded(self._client.xack(self._keys.forward, subscription_id, *entry_ids))
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"redis ack failed: {type(exc).__name__}") from exc

    async def backlog(self, subscription_id: str) -> Backlog:
        try:
            groups = await _bounded(self._client.xinfo_groups(self._keys.forward))
        except ResponseError:
            return Backlog(0, None)  # no stream yet
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}") from exc
        group = next((g for g in groups if g["name"] == subscription_id.encode()
                      or g["name"] == subscription_id), None)  # fmt: skip
        if group is None:
            return Backlog(0, None)
        waiting = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        if not waiting:
            return Backlog(0, None)
        oldest: str | None = None
        if group.get("pending"):
            summary = await _bounded(self._client.xpending(self._keys.forward, subscription_id))
            oldest = _text(summary.get("min"))
        else:
            after = _text(group.get("last-delivered-id")) or "0-0"
            rows = await _bounded(self._client.xrange(self._keys.forward, min=f"({after}", count=1))
            oldest = rows[0][0].decode() if rows else None
        return Backlog(waiting, int(oldest.split("-")[0]) if oldest else None)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class MemoryOutbox(Outbox):
    """The embedded store's outbox: in this process, the last ``max_entries``."""

    def __init__(self, max_entries: int = MAX_MEMORY_ENTRIES) -> None:
        self._entries: deque[Entry] = deque(maxlen=max_entries)
        self._acked: dict[str, str] = {}  # subscription -> last acknowledged entry id
        self._sequence = 0
        self.lost = 0

    def append(self, changes: list[Change]) -> None:
        """Called by the memory store's merge, with what it changed."""
        self._sequence += 1
        self._entries.append(Entry(f"{time.time_ns() // 1_000_000}-{self._sequence}", changes))

    async def prepare(self, subscription_ids: Sequence[str]) -> None:
        last = self._entries[-1].id if self._entries else "0-0"
        for subscription_id in subscription_ids:
            self._acked.setdefault(subscription_id, last)

    async def lease(self, subscription_id: str, holder: str, ttl_ms: int) -> bool:
        return True  # one process

    async def release(self, subscription_id: str, holder: str) -> None:
        return None

    def _after(self, subscription_id: str) -> list[Entry]:
        acked = _order(self._acked.get(subscription_id, "0-0"))
        return [e for e in self._entries if _order(e.id) > acked]

    async def read(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        return self._after(subscription_id)[:count]

    async def ack(self, subscription_id: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            self._acked[subscription_id] = max(entry_ids, key=_order)

    async def backlog(self, subscription_id: str) -> Backlog:
        waiting = self._after(subscription_id)
        return Backlog(len(waiting), int(waiting[0].id.split("-")[0]) if waiting else None)


def _order(entry_id: str) -> int:
    """Memory entries are ordered by their sequence (the clock may step back)."""
    return int(entry_id.partition("-")[2] or 0)
