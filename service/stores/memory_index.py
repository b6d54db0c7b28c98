"""The memory store's search indexes: the Redis indexes' semantics, as dicts.

Recipients map to message ids; waiting (pending) messages and messages in a
problem status are kept in insertion-ordered dicts used as sets. Delivered mail,
most of the traffic, is in no index but the recipient's, so a busy store pays for
the recipient entry only (a shared address string and a slot). Every update and
drop is O(1) per recipient, also for one address that receives most of the mail
(an archive BCC, the SES mailbox simulator): a busy recipient holds a dict, never a
list to search.
"""

from __future__ import annotations

from collections.abc import Collection

from service import state
from service.search import PROBLEM_STATUSES, IndexKind, SearchQuery, rollup
from service.state import MessageRecord

_PROBLEM_CODES = {state.STATUSES.index(name): name for name in PROBLEM_STATUSES}


class MemoryIndex:
    def __init__(self) -> None:
        # One message: the id itself (no container for the usual case).
        self._by_recipient: dict[str, str | dict[str, None]] = {}
        self._waiting: dict[str, None] = {}
        self._by_status: dict[str, dict[str, None]] = {name: {} for name in PROBLEM_STATUSES}

    def update(
        self, message_id: str, record: MessageRecord, new_recipients: Collection[str]
    ) -> None:
        """After a merge that changed a status: file the message where it now belongs."""
        for address in new_recipients:
            held = self._by_recipient.get(address)
            if held is None:
                self._by_recipient[address] = message_id
            elif isinstance(held, str):
                if held != message_id:
                    self._by_recipient[address] = {held: None, message_id: None}
            else:
                held[message_id] = None
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

    def drop(self, message_id: str, record: MessageRecord) -> None:
        """Forget an evicted or expired message."""
        for address in record.recipients:
            self.drop_recipient(message_id, address)
        self._waiting.pop(message_id, None)
        for members in self._by_status.values():
            members.pop(message_id, None)

    def drop_recipient(self, message_id: str, address: str) -> None:
        """Forget that ``address`` received ``message_id`` (the record let it go)."""
        held = self._by_recipient.get(address)
        if held == message_id:
            del self._by_recipient[address]
        elif isinstance(held, dict) and held.pop(message_id, 0) is None and len(held) == 1:
            self._by_recipient[address] = next(iter(held))

    def candidates(self, query: SearchQuery) -> Collection[str] | None:
        """Ids that may match (a superset), or None when every message may."""
        kind, name = query.index()
        if kind == IndexKind.RECIPIENT:
            held = self._by_recipient.get(name or "")
            if held is None:
                return ()
            return (held,) if isinstance(held, str) else list(held)
        if kind == IndexKind.STATUS:
            return list(self._by_status[name or ""])
        if kind == IndexKind.PENDING:
            return list(self._waiting)
        return None
