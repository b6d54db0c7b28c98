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
from redis.exceptions import ResponseError

from service.forward.items import Change
from service.stores import lease
from service.stores.base import StoreUnavailable
from service.stores.errors import REDIS_UNAVAILABLE, unavailable
from service.stores.keys import RedisKeys
from service.stores.slots import poll_groups

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_MEMORY_ENTRIES = 10_000
# No outbox call may wait longer than this (beyond a read's own block): the shared
# Redis client has no socket timeout, and a half-open connection must not hold a
# sender for ever.
CALL_TIMEOUT_S = 10.0


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
    """``group_prefixes``: on a Redis Cluster each slot group has its own stream
    (written by the merges of that group's messages, so a message's changes stay in
    order); an entry's id then names its group, ``<group>/<stream id>``."""

    # One consumer name for every replica: only the lease holder reads, and a new
    # holder must see what the last one read and never acknowledged.
    CONSUMER = "sender"

    def __init__(
        self, client: aioredis.Redis, prefix: str = "st:", group_prefixes: Sequence[str] = ()
    ) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._streams = [RedisKeys(p).forward for p in group_prefixes] or [self._keys.forward]
        self._renew = client.register_script(lease.TAKE_OR_RENEW)
        self._release = client.register_script(lease.RELEASE)
        self.lost = 0  # entries trimmed before a subscription acknowledged them

    @property
    def _grouped(self) -> bool:
        return len(self._streams) > 1

    def _entry_id(self, group: int, stream_id: str) -> str:
        return f"{group}/{stream_id}" if self._grouped else stream_id

    def _place(self, entry_id: str) -> tuple[int, str]:
        group, _, stream_id = entry_id.rpartition("/")
        return (int(group) if group else 0), stream_id

    async def prepare(self, subscription_ids: Sequence[str]) -> None:
        for stream in self._streams:
            for subscription_id in subscription_ids:
                try:
                    await self._client.xgroup_create(stream, subscription_id, id="$", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def lease(self, subscription_id: str, holder: str, ttl_ms: int) -> bool:
        key = self._keys.forward_lease(subscription_id)
        with unavailable("lease"):
            return bool(await _bounded(self._renew(keys=[key], args=[holder, ttl_ms])))

    async def release(self, subscription_id: str, holder: str) -> None:
        # It expires on its own.
        with contextlib.suppress(*REDIS_UNAVAILABLE, StoreUnavailable):
            key = self._keys.forward_lease(subscription_id)
            await _bounded(self._release(keys=[key], args=[holder]), 2.0)

    async def read(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        with unavailable("read"):
            # Read before and never acknowledged (a sender died, or lost its lease).
            entries = await self._read_each(subscription_id, "0", count)
            live = [e for e in entries if e.changes is not None]
            gone = [e.id for e in entries if e.changes is None]
            if gone:
                # Trimmed (older than the keep) while waiting: said, and let go of.
                self.lost += len(gone)
                log.error(
                    "forward_changes_expired", subscription=subscription_id, entries=len(gone)
                )
                await self.ack(subscription_id, gone)
            if live or entries:
                return live
            return await self._fresh(subscription_id, count, block_ms)

    async def _fresh(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        if not self._grouped:
            stream = self._streams[0]
            fresh = await _bounded(
                self._client.xreadgroup(
                    subscription_id, self.CONSUMER, {stream: ">"}, count=count, block=block_ms
                ),
                CALL_TIMEOUT_S + block_ms / 1000,
            )
            return [e for e in self._entries(0, fresh) if e.changes is not None]

        async def read_each() -> list[Entry]:
            fresh = await self._read_each(subscription_id, ">", count)
            return [e for e in fresh if e.changes is not None]

        return await poll_groups(read_each, block_ms)

    async def _read_each(self, subscription_id: str, position: str, count: int) -> list[Entry]:
        """One XREADGROUP per group's stream, sent together, without waiting."""
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in self._streams:
                pipe.xreadgroup(subscription_id, self.CONSUMER, {stream: position}, count=count)
            replies = await _bounded(pipe.execute())
        entries: list[Entry] = []
        for group, reply in enumerate(replies):
            entries += self._entries(group, reply)
        return entries

    def _entries(self, group: int, reply) -> list:  # type: ignore[no-untyped-def]
        entries = []
        for _stream, rows in reply or ():
            for entry_id, fields in rows:
                raw = (fields or {}).get(b"t")
                entries.append(
                    Entry(
                        self._entry_id(group, entry_id.decode()),
                        _changes(raw) if raw is not None else None,  # type: ignore[arg-type]
                    )
                )
        return entries

    async def ack(self, subscription_id: str, entry_ids: Sequence[str]) -> None:
        by_group: dict[int, list[str]] = {}
        for entry_id in entry_ids:
            group, stream_id = self._place(entry_id)
            by_group.setdefault(group, []).append(stream_id)
        with unavailable("ack"):
            for group, stream_ids in by_group.items():
                await _bounded(
                    self._client.xack(self._streams[group], subscription_id, *stream_ids)
                )

    async def backlog(self, subscription_id: str) -> Backlog:
        entries = 0
        oldest: list[int] = []
        for stream in self._streams:
            waiting, oldest_ms = await self._stream_backlog(stream, subscription_id)
            entries += waiting
            if oldest_ms is not None:
                oldest.append(oldest_ms)
        return Backlog(entries, min(oldest, default=None))

    async def _stream_backlog(self, stream: str, subscription_id: str) -> Backlog:
        with unavailable("read"):
            try:
                groups = await _bounded(self._client.xinfo_groups(stream))
            except ResponseError:
                return Backlog(0, None)  # no stream yet
        group = next((g for g in groups if g["name"] == subscription_id.encode()
                      or g["name"] == subscription_id), None)  # fmt: skip
        if group is None:
            return Backlog(0, None)
        waiting = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        if not waiting:
            return Backlog(0, None)
        oldest: str | None = None
        if group.get("pending"):
            summary = await _bounded(self._client.xpending(stream, subscription_id))
            oldest = _text(summary.get("min"))
        else:
            after = _text(group.get("last-delivered-id")) or "0-0"
            rows = await _bounded(self._client.xrange(stream, min=f"({after}", count=1))
            oldest = rows[0][0].decode() if rows else None
        return Backlog(waiting, int(oldest.split("-")[0]) if oldest else None)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class MemoryOutbox(Outbox):
    """The embedded store's outbox: in this process, at most ``max_entries`` merges and
    ``max_bytes`` (estimated by :func:`entry_weight`; the memory store sets it to its
    share of SES_TRACKER_MEMORY_MAX_BYTES and counts ``bytes`` in its own).

    Entries every subscription has acknowledged are let go at once, so what is held
    is the backlog; past either bound the oldest go, and those a subscription had not
    acknowledged count in ``lost``. Sequences are consecutive, so a subscription's
    place is an offset: a read costs what it returns, not the whole outbox.
    """

    def __init__(self, max_entries: int = MAX_MEMORY_ENTRIES, max_bytes: int | None = None) -> None:
        self._entries: deque[Entry] = deque()
        self._weights: deque[int] = deque()
        self._first = 1  # sequence of _entries[0]
        self._acked: dict[str, int] = {}  # subscription -> last acknowledged sequence
        self._sequence = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.lost = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, changes: list[Change]) -> None:
        """Called by the memory store's merge, with what it changed."""
        self._sequence += 1
        self._entries.append(Entry(f"{time.time_ns() // 1_000_000}-{self._sequence}", changes))
        weight = entry_weight(changes)
        self._weights.append(weight)
        self.bytes += weight
        self._release()
        while self._entries and (
            len(self._entries) > self.max_entries
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
        ):
            # What every subscription acknowledged is gone already: this one was not.
            self.lost += 1
            self._pop()

    async def prepare(self, subscription_ids: Sequence[str]) -> None:
        for subscription_id in subscription_ids:
            self._acked.setdefault(subscription_id, self._sequence)

    async def lease(self, subscription_id: str, holder: str, ttl_ms: int) -> bool:
        return True  # one process

    async def release(self, subscription_id: str, holder: str) -> None:
        return None

    def _start(self, subscription_id: str) -> int:
        """Offset in _entries of the subscription's first unacknowledged entry."""
        acked = self._acked.get(subscription_id, 0)
        return max(0, acked + 1 - self._first)

    async def read(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        start = self._start(subscription_id)
        stop = min(len(self._entries), start + max(0, count))
        return [self._entries[n] for n in range(start, stop)]

    async def ack(self, subscription_id: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            newest = max(_order(entry_id) for entry_id in entry_ids)
            self._acked[subscription_id] = max(self._acked.get(subscription_id, 0), newest)
            self._release()

    async def backlog(self, subscription_id: str) -> Backlog:
        start = self._start(subscription_id)
        if start >= len(self._entries):
            return Backlog(0, None)
        oldest = self._entries[start]
        return Backlog(len(self._entries) - start, int(oldest.id.split("-")[0]))

    def _release(self) -> None:
        """Let go of the entries every subscription has acknowledged (with none
        prepared yet, nobody will read them: a new subscription starts at the end)."""
        done = min(self._acked.values(), default=self._sequence)
        while self._entries and self._first <= done:
            self._pop()

    def _pop(self) -> None:
        self._entries.popleft()
        self.bytes -= self._weights.popleft()
        self._first += 1


# Per change beyond its blobs and strings (the tuple, its ints, the list slot), and
# per entry (the Entry, its id, its list): estimates, to bound memory.
_CHANGE_OVERHEAD = 200
_ENTRY_OVERHEAD = 150


def entry_weight(changes: list[Change]) -> int:
    """Approximate bytes an outbox entry holds. The header and event blobs may be
    shared with the store's records, but are counted: the outbox outlives them."""
    return _ENTRY_OVERHEAD + sum(
        _CHANGE_OVERHEAD + len(c.header) + len(c.event) + len(c.message_id) + len(c.address)
        for c in changes
    )


def _order(entry_id: str) -> int:
    """Memory entries are ordered by their sequence (the clock may step back)."""
    return int(entry_id.partition("-")[2] or 0)
