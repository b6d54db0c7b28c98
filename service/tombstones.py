"""Tombstones of erased recipients: what stops late events bringing an address back.

An erasure (``service.erasure_job``) leaves, per address, a keyed hash of it and
when it was erased. A write about to be merged loses every address erased after
its message was sent (``service.erasure.strip_write``); a message sent after the
erasure is new data. The hash is keyed (BLAKE2b with a random 32-byte key made on
first use and stored beside the data, ``st:erasure-key`` in Redis), so the stored
tombstones cannot be checked against a list of guessed addresses without the key.

Tombstones are kept ``KEEP_S`` (a replay of a year's archive may still bring
events of messages sent before an erasure); each costs about 100 bytes in every
process that merges.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from service.erasure import strip_write
from service.state import MessageWrite

KEY_BYTES = 32
DIGEST_CACHE = 65_536
DIGEST_BYTES = 16
# The history's 400 days, and one more: a replay of the Firehose archive reaches
# that far back.
KEEP_S = 401 * 86_400


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def digest(key: bytes, address: str) -> str:
    """The keyed hash an erased ``address`` is remembered by (hex)."""
    return hashlib.blake2b(address.encode(), key=key, digest_size=DIGEST_BYTES).hexdigest()


@dataclass(frozen=True, slots=True)
class Tombstones:
    """One process's view of the tombstones. ``epochs``: per slot group, the
    revision it was read at (Redis; a merge refuses a stale view, see
    ``service.stores.redis``)."""

    key: bytes
    erased_at: Mapping[str, int] = field(default_factory=dict)  # digest -> epoch ms
    epochs: Mapping[int, str] = field(default_factory=dict)
    # address -> digest: with tombstones, every merged address is hashed, and the
    # same addresses come back (a message's events); bounded, cleared when full.
    _digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def digest(self, address: str) -> str:
        known = self._digests.get(address)
        if known is None:
            if len(self._digests) >= DIGEST_CACHE:
                self._digests.clear()
            known = self._digests[address] = digest(self.key, address)
        return known

    def forgotten(self, address: str, sent_at: int) -> bool:
        """Whether ``address`` was erased after a message sent at ``sent_at``."""
        return bool(self.erased_at) and self._erased_before(sent_at, address)

    def strip(self, writes: Sequence[MessageWrite]) -> list[MessageWrite]:
        """``writes`` without addresses erased after their message was sent."""
        if not self.erased_at:
            return list(writes)
        stripped: list[MessageWrite] = []
        for write in writes:
            kept = strip_write(write, partial(self._erased_before, write.sent_at))
            if kept is not None:
                stripped.append(kept)
        return stripped

    def _erased_before(self, sent_at: int, address: str) -> bool:
        erased = self.erased_at.get(self.digest(address))
        return erased is not None and sent_at < erased


def live(erased_at: Mapping[str, int], now_ms: int) -> dict[str, int]:
    """The tombstones not yet past ``KEEP_S``."""
    oldest = now_ms - KEEP_S * 1000
    return {name: at for name, at in erased_at.items() if at >= oldest}
