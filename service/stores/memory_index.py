"""The memory store's search indexes: the Redis indexes' semantics, as dicts.

Recipients map to message ids; waiting (pending) messages and messages in a
problem status are kept in insertion-ordered dicts used as sets. Delivered mail,
most of the traffic, is in no index but the recipient's, so a busy store pays for
the recipient entry only (a shared address string and a slot). Every update and
drop is O(1) per recipient, also for one address that receives most of the mail
(an archive BCC, the SES mailbox simulator): a busy recipient holds a dict, never a
list to search.

Every message is also filed by send time (``by_time``), under an int key that
sorts as its search position does (:func:`position_key`): an unfiltered search,
an export or a walk through a large index reads from its cursor onwards instead
of sorting everything on each page.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Collection

from service import state
from service.search import PROBLEM_STATUSES, IndexKind, Position, SearchQuery, rollup
from service.state import MessageRecord
from service.stores.sorted_index import SortedIndex

_PROBLEM_CODES = {state.STATUSES.index(name): name for name in PROBLEM_STATUSES}

# A handle is 16 characters of the URL-safe base64 alphabet. Each is mapped to its
# rank in ASCII order (one byte), so the 128-bit number they make sorts as the
# handles do as strings, and a key is the send time above that number: one int per
# message (48 bytes) instead of a (send time, handle) tuple and a handle string.
_HANDLE_CHARS = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_HANDLE_LENGTH = 16
_DIGEST_BYTES = 12  # service.search.message_handle's
_HANDLE_BITS = 8 * _HANDLE_LENGTH
_HANDLE_SPAN = 1 << _HANDLE_BITS
_RANKS = bytes.maketrans(_HANDLE_CHARS, bytes(range(len(_HANDLE_CHARS))))
_CHARS = bytes.maketrans(bytes(range(len(_HANDLE_CHARS))), _HANDLE_CHARS)
_TEXT_CHARS = _HANDLE_CHARS.decode()


# The same ranks read straight off the digest's standard base64, for a new message:
# what message_handle would give, without its text (a merge files every new message).
_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URL_SAFE = _STANDARD[:62] + b"-_"
_STANDARD_RANKS = bytes.maketrans(_STANDARD, bytes(_HANDLE_CHARS.index(c) for c in _URL_SAFE))


def message_key(sent_at: int, message_id: str) -> int:
    """``position_key(sent_at, message_handle(message_id))``, a fifth cheaper."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=_DIGEST_BYTES).digest()
    ranks = binascii.b2a_base64(digest, newline=False).translate(_STANDARD_RANKS)
    return sent_at * _HANDLE_SPAN + int.from_bytes(ranks, "big")


def position_key(sent_at: int, handle: str) -> int:
    """The ``by_time`` key of a message: ordered as ``Position(sent_at, handle)``."""
    return sent_at * _HANDLE_SPAN + int.from_bytes(handle.encode().translate(_RANKS), "big")


def position_of(key: int) -> Position:
    handle = (key % _HANDLE_SPAN).to_bytes(_HANDLE_LENGTH, "big").translate(_CHARS).decode()
    return Position(key // _HANDLE_SPAN, handle)


def key_bound(position: Position) -> int:
    """The least key not below ``position``: a message sorts before ``position`` exactly
    when its key is less. Cursors come from clients, so ``position.handle`` may be any
    text (another length, other characters); it is read as the handles around it."""
    handle = position.handle
    ranks: list[int] = []
    for char in handle[:_HANDLE_LENGTH]:
        rank = _TEXT_CHARS.find(char)
        if rank >= 0:
            ranks.append(rank)
            continue
        # Handles with this prefix and a character past ``char`` come after: the
        # least of them bounds (none past it: every one with the prefix is before).
        higher = [n for n, c in enumerate(_TEXT_CHARS) if c > char]
        if higher:
            return _key_of_ranks(position.sent_at, [*ranks, higher[0]])
        return _key_of_ranks(position.sent_at, ranks, after_prefix=True)
    if len(handle) > _HANDLE_LENGTH:
        # Longer than a handle: those equal to its first 16 characters are before it.
        return _key_of_ranks(position.sent_at, ranks) + 1
    return _key_of_ranks(position.sent_at, ranks)


def _key_of_ranks(sent_at: int, ranks: list[int], *, after_prefix: bool = False) -> int:
    """The key of the least handle starting with ``ranks`` (past every one of them
    when ``after_prefix``)."""
    value = 0
    for rank in ranks:
        value = value * 256 + rank
    spare = _HANDLE_LENGTH - len(ranks)
    value = (value + (1 if after_prefix else 0)) * 256**spare
    return sent_at * _HANDLE_SPAN + value


class MemoryIndex:
    def __init__(self) -> None:
        # One message: the id itself (no container for the usual case).
        self._by_recipient: dict[str, str | dict[str, None]] = {}
        self._waiting: dict[str, None] = {}
        self._by_status: dict[str, dict[str, None]] = {name: {} for name in PROBLEM_STATUSES}
        self.by_time: SortedIndex[int, str] = SortedIndex()
        # Addresses a record let go past its cap (or never kept) that its events
        # still name: indexed under the address for an erasure to find, and let go
        # with the message.
        self._past_cap: dict[str, set[str]] = {}

    def file(self, key: int, message_id: str) -> None:
        """A new record: file it by send time (its key stays while it lives)."""
        self.by_time.add(key, message_id)

    def update(
        self, message_id: str, record: MessageRecord, new_recipients: Collection[str]
    ) -> None:
        """After a merge that changed a status: file the message where it now belongs."""
        for address in new_recipients:
            self.update_recipient(message_id, address)
        top, waiting = rollup(record)
        for code, name in _PROBLEM_CODES.items():
            if code == top:
                self._by_status[name][message_id] = None
            else:
                self._by_status[name].pop(message_id, None)
        if waiting:
            self._waiting[message_id] = None
        else:
            self._waiting.pop(message_id, None)

    def drop(self, message_id: str, record: MessageRecord, key: int) -> None:
        """Forget an evicted or expired message."""
        self.by_time.remove(key, message_id)
        for address in record.recipients:
            self.drop_recipient(message_id, address)
        for address in self._past_cap.pop(message_id, ()):
            self.drop_recipient(message_id, address)
        self._waiting.pop(message_id, None)
        for members in self._by_status.values():
            members.pop(message_id, None)

    def name_past_cap(self, message_id: str, address: str) -> None:
        self._past_cap.setdefault(message_id, set()).add(address)
        self.update_recipient(message_id, address)

    def update_recipient(self, message_id: str, address: str) -> None:
        held = self._by_recipient.get(address)
        if held is None:
            self._by_recipient[address] = message_id
        elif isinstance(held, str):
            if held != message_id:
                self._by_recipient[address] = {held: None, message_id: None}
        else:
            held[message_id] = None

    def drop_recipient(self, message_id: str, address: str) -> None:
        """Forget that ``address`` received ``message_id`` (the record let it go)."""
        held = self._by_recipient.get(address)
        if held == message_id:
            del self._by_recipient[address]
        elif isinstance(held, dict) and held.pop(message_id, 0) is None and len(held) == 1:
            self._by_recipient[address] = next(iter(held))

    def candidates(self, query: SearchQuery) -> Collection[str] | None:
        """Ids that may match (a superset), or None when every message may. The
        index itself, not a copy: copy it before yielding to the event loop."""
        kind, name = query.index()
        if kind == IndexKind.RECIPIENT:
            held = self._by_recipient.get(name or "")
            if held is None:
                return ()
            return (held,) if isinstance(held, str) else held
        if kind == IndexKind.STATUS:
            return self._by_status[name or ""]
        if kind == IndexKind.PENDING:
            return self._waiting
        return None
