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

Erasure (``Outbox.erase_address``): no entry keeps an erased recipient. Its changes
go (an erased person's outcome is not forwarded) and the events of the others are
rewritten without it (``service.erasure``'s rules). Each other change keeps its
item ``id`` (``Entry.place``), so a receiver sees the same item as before. A Redis
stream entry cannot be edited: one naming the address is deleted and, while some
subscription has yet to take it, replaced by a new entry at the end of the stream
holding the rest (fields ``t`` as before, ``o`` the original's stream id, ``i`` each
change's place in it, ``d`` the subscriptions that had the original, which
acknowledge the replacement without delivering it). Being at the end, a replacement
reaches a subscription that lags behind after the entries merged since the original
(the item ids and each item's ``at`` say where it belongs). The deleted ids still
pending for some subscription are kept in ``<prefix>fwd-erased`` (a zset scored by
their ms) until no subscription holds them, so their coming back empty from the
pending list is not counted as a loss.
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
from redis.exceptions import ResponseError

from service.erasure import blob_without
from service.forward.items import Change
from service.stores.base import StoreUnavailable
from service.stores.redis import lease
from service.stores.redis.errors import REDIS_UNAVAILABLE, unavailable
from service.stores.redis.keyspace import RedisKeyspace
from service.stores.redis.slots import poll_groups

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_MEMORY_ENTRIES = 10_000
# No outbox call may wait longer than this (beyond a read's own block): the shared
# Redis client has no socket timeout, and a half-open connection must not hold a
# sender for ever.
CALL_TIMEOUT_S = 10.0


class Entry(NamedTuple):
    id: str  # "<ms>-<seq>", in append order: what is acknowledged
    changes: list[Change]
    # Set when an erasure rewrote the entry: the id its items are named by (the
    # entry it replaced) and each change's place there.
    origin: str | None = None
    indices: tuple[int, ...] | None = None

    def place(self, index: int) -> tuple[str, int]:
        """The entry id and index that name ``changes[index]``'s item
        (``items.item``): the same before and after an erasure rewrote the entry."""
        if self.indices is None:
            return self.origin or self.id, index
        return self.origin or self.id, self.indices[index]


class Backlog(NamedTuple):
    entries: int  # appended, not yet acknowledged by the subscription
    oldest_ms: int | None  # append time of the oldest of them


class Outbox(ABC):
    """The forwarding outbox: changes appended by the merge, read and acknowledged
    per subscription, each subscription's place its own (Redis: a stream with a
    consumer group per subscription; memory: a list with cursors)."""

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

    @abstractmethod
    async def erase_address(self, address: str) -> int:
        """Remove ``address`` (lower-cased, as stored) from every entry: its changes
        go, the others' events are rewritten without it, and each other change is
        still delivered, at least once (as every change), to each subscription that
        had not acknowledged it; one that had is not sent it again. Returns how
        many entries named it."""


def event_without(blob: bytes, address: str) -> bytes:
    """A stored event blob without ``address`` (``service.erasure``'s rules: its
    recipient and per-recipient report go); ``b""`` (no event) when it named only
    that address; ``blob`` itself when it did not name it."""
    if not blob:
        return blob
    return blob_without(blob, frozenset((address,))) or b""


def without_address(
    changes: Sequence[Change], indices: Sequence[int], address: str
) -> tuple[list[Change], list[int], bool]:
    """``changes`` (at ``indices`` in their entry) without ``address``: the changes
    kept, their indices, and whether any change or event named it."""
    kept: list[Change] = []
    kept_indices: list[int] = []
    named = False
    for change, index in zip(changes, indices, strict=True):
        if change.address == address:
            named = True
            continue
        event = event_without(change.event, address)
        if event is not change.event:
            named = True
            change = change._replace(event=event)
        kept.append(change)
        kept_indices.append(index)
    return kept, kept_indices, named


def _changes(raw: bytes) -> list[Change]:
    # Lua writes every string as msgpack str, the binary header and event blob too:
    # read raw, and decode the text fields only.
    return [
        Change(m.decode(), a.decode(), old, new, at, latency, header, event, p.decode())
        for m, a, old, new, at, latency, header, event, p in msgpack.unpackb(raw, raw=True)
    ]


def _pack_changes(changes: Sequence[Change]) -> bytes:
    """As merge.lua packs an entry's ``t`` (every string a msgpack str)."""
    return msgpack.packb([list(change) for change in changes], use_bin_type=False)


# Erase one entry (KEYS: the stream, its erased-ids zset; ARGV: the entry's id, the
# replacement's t, o and i fields ('' for no replacement), the subscriptions that had
# the entry's original (msgpack, '' for none)), atomically with every merge and
# read: deleted, recorded as erased when some subscription has it pending, and
# replaced when some subscription has yet to take it. Returns [deleted, replaced].
ERASE_ENTRY = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local id = ARGV[1]
local ms, seq = parse(id)
if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
  return {0, 0}  -- trimmed, or erased meanwhile (its replacement is further on)
end
local done = {}
if ARGV[5] ~= '' then
  for _, name in ipairs(cmsgpack.unpack(ARGV[5])) do
    done[name] = true
  end
end
local waiting, pending = false, false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then
      name = group[i + 1]
    elseif group[i] == 'last-delivered-id' then
      last = group[i + 1]
    end
  end
  local last_ms, last_seq = parse(last)
  local past = last_ms > ms or (last_ms == ms and last_seq >= seq)
  if past and #redis.call('XPENDING', KEYS[1], name, id, id, 1) > 0 then
    -- Read, not acknowledged: its sender may have died mid-post. It comes back
    -- empty from the pending list; the replacement brings the rest.
    pending = true
    if not done[name] then
      waiting = true
    end
  elseif past then
    done[name] = true
  elseif not done[name] then
    waiting = true
  end
end
redis.call('XDEL', KEYS[1], id)
if pending then
  redis.call('ZADD', KEYS[2], ms, id)
end
if ARGV[2] == '' or not waiting then
  return {1, 0}
end
local names = {}
for name in pairs(done) do
  names[#names + 1] = name
end
if #names > 0 then
  redis.call('XADD', KEYS[1], '*', 't', ARGV[2], 'o', ARGV[3], 'i', ARGV[4], 'd',
             cmsgpack.pack(names))
else
  redis.call('XADD', KEYS[1], '*', 't', ARGV[2], 'o', ARGV[3], 'i', ARGV[4])
end
return {1, 1}
"""

# An erasure pages through a stream this many entries at a time.
ERASE_PAGE = 500


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

    def __init__(self, keyspace: RedisKeyspace) -> None:
        client = self._client = keyspace.client
        self._keys = keyspace.keys
        groups = keyspace.groups
        self._streams = [keys.forward for keys in groups]
        # Beside each stream, in its slot (same hash tag): ids erased while pending.
        self._erased = [keys.forward_erased for keys in groups]
        self._renew = client.register_script(lease.TAKE_OR_RENEW)
        self._release = client.register_script(lease.RELEASE)
        self._erase_entry = client.register_script(ERASE_ENTRY)
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
                # Erased (replaced, if anything in it was still to go) or trimmed (older
                # than the keep) while waiting: the trimmed are said; both let go of.
                erased = await self._erased_among(gone)
                expired = len(gone) - len(erased)
                if expired:
                    self.lost += expired
                    log.error(
                        "forward_changes_expired", subscription=subscription_id, entries=expired
                    )
                await self.ack(subscription_id, gone)
            if live or entries:
                return live
            return await self._fresh(subscription_id, count, block_ms)

    async def _erased_among(self, entry_ids: Sequence[str]) -> set[str]:
        """Which of ``entry_ids`` (gone from the stream) an erasure deleted."""
        by_group: dict[int, list[str]] = {}
        for entry_id in entry_ids:
            group, stream_id = self._place(entry_id)
            by_group.setdefault(group, []).append(stream_id)
        async with self._client.pipeline(transaction=False) as pipe:
            for group, stream_ids in by_group.items():
                pipe.zmscore(self._erased[group], stream_ids)
            replies = await _bounded(pipe.execute())
        erased: set[str] = set()
        for (group, stream_ids), scores in zip(by_group.items(), replies, strict=True):
            erased |= {
                self._entry_id(group, stream_id)
                for stream_id, score in zip(stream_ids, scores, strict=True)
                if score is not None
            }
        return erased

    async def _fresh(self, subscription_id: str, count: int, block_ms: int) -> list[Entry]:
        if not self._grouped:
            stream = self._streams[0]
            fresh = await _bounded(
                self._client.xreadgroup(
                    subscription_id, self.CONSUMER, {stream: ">"}, count=count, block=block_ms
                ),
                CALL_TIMEOUT_S + block_ms / 1000,
            )
            return [e for e in self._entries(0, fresh, subscription_id) if e.changes is not None]

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
            entries += self._entries(group, reply, subscription_id)
        return entries

    def _entries(self, group: int, reply, subscription_id: str) -> list:  # type: ignore[no-untyped-def]
        """The entries of an XREADGROUP reply; ``changes`` None for one deleted
        while pending, empty for an erasure's replacement of an entry the
        subscription had (acknowledged, nothing delivered)."""
        entries = []
        for _stream, rows in reply or ():
            for entry_id, fields in rows:
                fields = fields or {}
                raw = fields.get(b"t")
                if raw is None:
                    entries.append(Entry(self._entry_id(group, entry_id.decode()), None))  # type: ignore[arg-type]
                    continue
                origin, indices = fields.get(b"o"), fields.get(b"i")
                done = fields.get(b"d")
                had = done is not None and subscription_id in msgpack.unpackb(done, raw=False)
                entries.append(
                    Entry(
                        self._entry_id(group, entry_id.decode()),
                        [] if had else _changes(raw),
                        None if origin is None else self._entry_id(group, origin.decode()),
                        None if indices is None else tuple(msgpack.unpackb(indices)),
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
        lag = group.get("lag")
        next_id: str | None = None
        if lag is None or int(lag):
            # Once an erasure deleted entries, Redis's lag is unknown (a deleted entry
            # past the group's place) or counts the deleted too (entries-added does):
            # none when nothing follows the group's place, else bounded.
            after = _text(group.get("last-delivered-id")) or "0-0"
            rows = await _bounded(self._client.xrange(stream, min=f"({after}", count=1))
            next_id = rows[0][0].decode() if rows else None
            if next_id is None:
                lag = 0
            elif lag is None:
                lag = await self._lag_bound(stream, group)
        waiting = int(group.get("pending") or 0) + int(lag or 0)
        if not waiting:
            return Backlog(0, None)
        oldest = next_id
        if group.get("pending"):
            summary = await _bounded(self._client.xpending(stream, subscription_id))
            oldest = _text(summary.get("min"))
        return Backlog(waiting, int(oldest.split("-")[0]) if oldest else None)

    async def _lag_bound(self, stream: str, group: dict) -> int:
        """At most what was added and the group has not read, or, not knowing that,
        the whole stream (the deleted entries counted in either)."""
        info = await _bounded(self._client.xinfo_stream(stream))
        read, added = group.get("entries-read"), info.get("entries-added")
        if read is not None and added is not None:
            return max(0, int(added) - int(read))
        return int(info.get("length") or 0)

    async def erase_address(self, address: str) -> int:
        """Pages through each stream (``ERASE_PAGE`` entries a call) and erases each
        entry naming ``address`` atomically (``ERASE_ENTRY``): a merge appending, a
        sender reading or another erasure meanwhile loses nothing. A replacement is
        appended at the end, so this pass meets it again (naming the address no
        more) and one made by a concurrent erasure too."""
        needle = address.encode()
        erased = 0
        with unavailable("erase"):
            for group, stream in enumerate(self._streams):
                after = "-"
                while True:
                    rows = await _bounded(
                        self._client.xrange(stream, min=after, max="+", count=ERASE_PAGE)
                    )
                    missed = False
                    for entry_id, fields in rows:
                        raw = fields.get(b"t")
                        if raw is not None and needle in raw:  # at most a near miss else
                            done = await self._erase_entry_of(group, entry_id, fields, address)
                            erased += max(0, done)
                            missed = missed or done < 0
                    # An entry gone since this page was read may have been replaced by
                    # another erasure, after this page's end: read on to meet it.
                    if len(rows) < ERASE_PAGE and not missed:
                        break
                    if rows:
                        after = f"({rows[-1][0].decode()}"
                await self._forget_erased(group)
        if erased:
            log.info("forward_outbox_erased", entries=erased)
        return erased

    async def _erase_entry_of(
        self, group: int, entry_id: bytes, fields: dict[bytes, bytes], address: str
    ) -> int:
        """1: erased; 0: it did not name the address after all; -1: gone meanwhile
        (trimmed, or replaced by another erasure)."""
        changes = _changes(fields[b"t"])
        indices = fields.get(b"i")
        places = msgpack.unpackb(indices) if indices is not None else range(len(changes))
        kept, kept_places, named = without_address(changes, places, address)
        if not named:
            return 0
        replacement = ["", "", ""]
        if kept:
            replacement = [
                _pack_changes(kept),
                fields.get(b"o") or entry_id,
                msgpack.packb(kept_places),
            ]
        deleted, _replaced = await _bounded(
            self._erase_entry(
                keys=[self._streams[group], self._erased[group]],
                args=[entry_id, *replacement, fields.get(b"d") or ""],
            )
        )
        return 1 if deleted else -1

    async def _forget_erased(self, group: int) -> None:
        """Let go of the erased ids no subscription can still have pending: those
        older than every group's oldest pending entry."""
        stream, erased = self._streams[group], self._erased[group]
        try:
            groups = await _bounded(self._client.xinfo_groups(stream))
        except ResponseError:
            groups = []  # no stream
        oldest: list[int] = []
        for info in groups:
            if int(info.get("pending") or 0):
                summary = await _bounded(self._client.xpending(stream, info["name"]))
                first = _text(summary.get("min"))
                if first:
                    oldest.append(int(first.split("-")[0]))
        if oldest:
            await _bounded(self._client.zremrangebyscore(erased, "-inf", f"({min(oldest)}"))
        else:
            await _bounded(self._client.delete(erased))


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

    async def erase_address(self, address: str) -> int:
        """Rewrites each entry naming ``address`` in place (same id, so each
        subscription's place holds): one left with no change is kept, empty."""
        erased = 0
        for n, entry in enumerate(self._entries):
            places = entry.indices if entry.indices is not None else range(len(entry.changes))
            kept, kept_places, named = without_address(entry.changes, places, address)
            if not named:
                continue
            erased += 1
            self._entries[n] = Entry(entry.id, kept, entry.origin, tuple(kept_places))
            weight = entry_weight(kept)
            self.bytes += weight - self._weights[n]
            self._weights[n] = weight
        return erased

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
