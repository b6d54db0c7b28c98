"""Signed-out session ids, kept until the session would have expired anyway.

A session cookie is valid on its signature alone (``service.access``); sign-out must
outlive the cookie a browser, a proxy log or a stolen copy still holds, so the id is
remembered as revoked until its expiry. With Redis every replica and worker sees it
(``<prefix>session-revoked:<id>``, expiring with the session); without, one process's
memory holds it (the only process there is).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

from service.stores.redis.errors import unavailable
from service.stores.redis.keyspace import RedisKeyspace

# Sign-outs are rare (a person clicking); this bounds memory against a loop of
# sign-in/sign-out, dropping the soonest to expire first once it is full.
MAX_MEMORY_REVOCATIONS = 100_000
# Session ids are ours (token_urlsafe(16): 22 characters); a longer one is not.
MAX_ID_CHARS = 64


class Revocations(ABC):
    @abstractmethod
    async def revoke(self, session_id: str, until_ms: int, now_ms: int) -> None:
        """Refuse ``session_id`` from now until ``until_ms`` (its expiry)."""

    @abstractmethod
    async def revoked(self, session_id: str, now_ms: int) -> bool: ...


class MemoryRevocations(Revocations):
    def __init__(self, max_ids: int = MAX_MEMORY_REVOCATIONS) -> None:
        # id -> until_ms, in revocation order; every session lasts as long, so that
        # is also expiry order up to clock changes.
        self._ids: OrderedDict[str, int] = OrderedDict()
        self._max_ids = max_ids

    async def revoke(self, session_id: str, until_ms: int, now_ms: int) -> None:
        self._ids[session_id[:MAX_ID_CHARS]] = until_ms
        self._ids.move_to_end(session_id[:MAX_ID_CHARS])
        while self._ids:
            oldest, until = next(iter(self._ids.items()))
            if until > now_ms and len(self._ids) <= self._max_ids:
                break
            del self._ids[oldest]

    async def revoked(self, session_id: str, now_ms: int) -> bool:
        until = self._ids.get(session_id[:MAX_ID_CHARS])
        return until is not None and until > now_ms

    def __len__(self) -> int:
        return len(self._ids)


class RedisRevocations(Revocations):
    """One key per revoked id, expiring when the session would have."""

    def __init__(self, keyspace: RedisKeyspace) -> None:
        self._client = keyspace.client
        self._keys = keyspace.keys

    async def revoke(self, session_id: str, until_ms: int, now_ms: int) -> None:
        ttl_ms = until_ms - now_ms
        if ttl_ms <= 0:
            return  # already expired: its signature check refuses it
        with unavailable("write"):
            await self._client.set(
                self._keys.session_revoked(session_id[:MAX_ID_CHARS]), b"1", px=ttl_ms
            )

    async def revoked(self, session_id: str, now_ms: int) -> bool:
        with unavailable("read"):
            key = self._keys.session_revoked(session_id[:MAX_ID_CHARS])
            return bool(await self._client.exists(key))
