"""The audit log: every state change other than ingest, who asked for it and what
came of it (``GET /v1/audit``).

What is recorded: erasures requested, suppressions removed, sessions opened and
signed out, and configuration reloads (``POST /-/reload`` on the admin port,
SIGHUP, or a file whose content changed). Each entry says when, who (the token's
name: ``api`` for the API token, a read token's name, ``open`` when the service has
no token; ``admin-port``, ``signal`` or ``file-change`` for a reload), what, on what,
and the result.

An address never appears in clear: an entry names it by the keyed hash its
tombstone would have (``service.tombstones.digest``, under the key stored beside the
data), so an erased address is in the log only as that hash, and whoever holds an
address can find its entries (``?address=`` hashes it the same way) while a reader
of the log cannot list who was erased.

Kept: with Redis, a stream (``st:audit``) of at most ``KEEP_ENTRIES`` entries and
``KEEP_DAYS`` days; in memory, the last ``MEMORY_ENTRIES`` of this process.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from service import tombstones
from service.stores.redis.errors import unavailable
from service.stores.redis.keyspace import RedisKeyspace
from service.timestamps import format_ms

log = structlog.get_logger(__name__)

KEEP_DAYS = 400
KEEP_ENTRIES = 100_000
MEMORY_ENTRIES = 10_000
MAX_PAGE = 1_000
# Text fields are cut to this many characters: an entry is bounded whatever a
# caller or a file says.
MAX_TEXT = 300

# Actions.
ERASURE_REQUESTED = "erasure.requested"
SUPPRESSION_REMOVED = "suppression.removed"
SESSION_OPENED = "session.opened"
SESSION_CLOSED = "session.closed"
CONFIG_RELOADED = "config.reloaded"

# Actors that are no token.
OPEN_ACTOR = "open"
ADMIN_PORT, SIGNAL, FILE_CHANGE = "admin-port", "signal", "file-change"

# An address's keyed hash (``service.tombstones.digest`` under the store's key).
AddressHasher = Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    actor: str
    action: str
    result: str
    target: str | None = None  # what it acted on: an address's hash, a file, a job
    detail: str | None = None

    def bounded(self) -> AuditEntry:
        return AuditEntry(
            self.at_ms,
            self.actor[:MAX_TEXT],
            self.action,
            self.result[:MAX_TEXT],
            None if self.target is None else self.target[:MAX_TEXT],
            None if self.detail is None else self.detail[:MAX_TEXT],
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [self.at_ms, self.actor, self.action, self.result, self.target, self.detail]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> AuditEntry:
        at_ms, actor, action, result, target, detail = orjson.loads(raw)
        return cls(int(at_ms), actor, action, result, target, detail)

    def view(self, entry_id: str) -> dict[str, Any]:
        return {
            "id": entry_id,
            "at": format_ms(self.at_ms),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since_ms: int | None = None
    before: str | None = None  # an entry id: the page goes on after it (older)
    limit: int = 100
    target: str | None = None  # only entries on this target (an address's hash)


class AuditLog(ABC):
    """Entries appended and read back newest first. Ids are ``<ms>-<n>``: ordered."""

    @abstractmethod
    async def append(self, entry: AuditEntry) -> None: ...

    @abstractmethod
    async def page(self, query: AuditQuery) -> tuple[list[tuple[str, AuditEntry]], str | None]:
        """Up to ``query.limit`` entries, newest first, and the id to pass as
        ``before`` for the next page (None: no more)."""


class MemoryAuditLog(AuditLog):
    def __init__(self, kept: int = MEMORY_ENTRIES) -> None:
        self._entries: deque[tuple[str, AuditEntry]] = deque(maxlen=kept)
        self._last = (0, 0)

    async def append(self, entry: AuditEntry) -> None:
        ms, n = self._last
        # Ordered ids whatever the clock does: a step back stays on the last ms.
        self._last = (entry.at_ms, 0) if entry.at_ms > ms else (ms, n + 1)
        self._entries.append((f"{self._last[0]}-{self._last[1]}", entry.bounded()))

    async def page(self, query: AuditQuery) -> tuple[list[tuple[str, AuditEntry]], str | None]:
        before = _id_key(query.before) if query.before else None
        found: list[tuple[str, AuditEntry]] = []
        for entry_id, entry in reversed(self._entries):
            if before is not None and _id_key(entry_id) >= before:
                continue
            if query.since_ms is not None and entry.at_ms < query.since_ms:
                break
            if query.target is not None and entry.target != query.target:
                continue
            found.append((entry_id, entry))
            if len(found) > query.limit:
                break
        return _paged(found, query.limit)


class RedisAuditLog(AuditLog):
    """One stream for the whole service (not per slot group: it is written a few
    times an hour), trimmed by count and age as it is appended to. An entry's time
    is its stream id's (Redis's clock, as the replicas share it), so ``since`` is a
    range of ids."""

    # Entries read per round trip while filtering by target.
    _SCAN = 500

    def __init__(self, keyspace: RedisKeyspace, clock_ms: Callable[[], int] | None = None) -> None:
        self._client = keyspace.client
        self._key = keyspace.keys.audit
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    async def append(self, entry: AuditEntry) -> None:
        oldest = self._clock_ms() - KEEP_DAYS * 86_400_000
        with unavailable("audit"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(self._key, {"e": entry.bounded().to_bytes()}, maxlen=KEEP_ENTRIES)
                pipe.xtrim(self._key, minid=max(0, oldest), approximate=True)
                await pipe.execute()

    async def page(self, query: AuditQuery) -> tuple[list[tuple[str, AuditEntry]], str | None]:
        low = "-" if query.since_ms is None else f"{max(0, query.since_ms)}-0"
        high = "+" if query.before is None else f"({query.before}"
        found: list[tuple[str, AuditEntry]] = []
        scanned = 0
        with unavailable("audit"):
            while len(found) <= query.limit and scanned < KEEP_ENTRIES:
                count = query.limit + 1 if query.target is None else self._SCAN
                rows = await self._client.xrevrange(self._key, high, low, count=count)
                scanned += len(rows)
                for raw_id, fields in rows:
                    entry_id = raw_id.decode()
                    entry = AuditEntry.from_bytes(fields[b"e"])
                    if query.target is None or entry.target == query.target:
                        at_ms = int(entry_id.partition("-")[0])
                        found.append((entry_id, dataclasses.replace(entry, at_ms=at_ms)))
                if len(rows) < count:
                    break
                high = f"({rows[-1][0].decode()}"
        return _paged(found, query.limit)


class Auditor:
    """What the API and the reloads record through: bounded entries, addresses
    hashed, and an audit that cannot be written said and counted, never raised
    (the change it describes is already made)."""

    def __init__(
        self, log_: AuditLog, hash_address: AddressHasher, clock_ms: Callable[[], int]
    ) -> None:
        self.log = log_
        self.hash_address = hash_address
        self._clock_ms = clock_ms
        self.recorded = 0
        self.failed = 0

    async def record(
        self,
        actor: str,
        action: str,
        result: str,
        *,
        target: str | None = None,
        address: str | None = None,
        detail: str | None = None,
    ) -> None:
        try:
            if address is not None:
                target = await self.hash_address(address)
            await self.log.append(
                AuditEntry(self._clock_ms(), actor, action, result, target, detail)
            )
            self.recorded += 1
        except Exception as exc:  # an outage, or a bug: the change itself is made
            self.failed += 1
            log.error("audit_not_recorded", action=action, error=f"{type(exc).__name__}: {exc}")


def _paged(
    found: list[tuple[str, AuditEntry]], limit: int
) -> tuple[list[tuple[str, AuditEntry]], str | None]:
    if len(found) > limit:
        page = found[:limit]
        return page, page[-1][0]
    return found, None


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


def keyed_hasher(load_key: Callable[[], Awaitable[bytes]]) -> AddressHasher:
    """Hashes addresses as their tombstones do, under the key ``load_key`` gives
    (read once, when first needed)."""
    key: list[bytes] = []

    async def hash_address(address: str) -> str:
        if not key:
            key.append(await load_key())
        return tombstones.digest(key[0], address)

    return hash_address
