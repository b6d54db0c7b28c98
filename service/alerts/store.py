"""Where alert state lives: one interface, kept in memory (optionally on disk) or Redis.

Three things are kept together so that one commit changes them at once:

* the alert records (``lifecycle.AlertRecord``), which replicas share;
* the history of notices sent, newest first, for ``GET /v1/alerts``;
* the outbox: one entry per (notice, sink), kept until the sink accepted it or
  gave a final refusal. Entries are claimed with a visibility timeout, so an entry
  whose sender died is sent again later by whoever holds the lease, and a restart
  sends what was queued before it.

Only the lease holder evaluates and commits (``commit`` is fenced by the lease), so
with several replicas an alert fires once. Delivery is at least once: a sender that
dies after the sink accepted an alert but before ``finish`` makes it send again.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import structlog

from service.alerts.accounts import AccountLimits, to_forget
from service.alerts.erasure import ERASED, address_forms, erase_from_alert, erase_from_record
from service.alerts.evaluate import AccountStatus
from service.alerts.lifecycle import AlertRecord, Plan
from service.alerts.model import Alert, alert_from_dict, alert_to_dict

log = structlog.get_logger(__name__)

HISTORY_KEPT = 500


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    sink_id: str
    alert: Alert
    created_ms: int
    attempts: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "sink_id": self.sink_id,
                "alert": alert_to_dict(self.alert),
                "created_ms": self.created_ms,
                "attempts": self.attempts,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> OutboxEntry:
        raw = orjson.loads(data)
        return cls(
            id=raw["id"],
            sink_id=raw["sink_id"],
            alert=alert_from_dict(raw["alert"]),
            created_ms=raw["created_ms"],
            attempts=raw["attempts"],
        )


def new_entries(alerts: Sequence[Alert], sink_ids: Sequence[str], now_ms: int) -> list[OutboxEntry]:
    # Ids sort in commit order (equal due times are claimed by id), so a sink gets
    # one commit's notices in the order they were planned.
    batch = uuid.uuid4().hex[:12]
    return [
        OutboxEntry(f"{now_ms:014d}-{batch}-{n:04d}", sink_id, alert, now_ms)
        for n, (alert, sink_id) in enumerate(
            (alert, sink_id) for alert in alerts for sink_id in sink_ids
        )
    ]


class AlertStore(ABC):
    """Alerting's state: the lease, the open records, the history of notices and
    each sink's outbox of notices to send, committed together so a notice is
    recorded and queued at once (Redis for a fleet, memory for one process)."""

    @abstractmethod
    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        """Take or renew the right to evaluate and send; False if another holds it."""

    async def drop_lease(self, owner: str) -> None:  # noqa: B027 - one holder without Redis
        """Give the lease up (at shutdown), so another replica takes over at once."""

    @abstractmethod
    async def records(self) -> dict[str, AlertRecord]: ...

    @abstractmethod
    async def commit(self, owner: str, plan: Plan, sink_ids: Sequence[str], now_ms: int) -> bool:
        """Apply ``plan`` (records, history, one outbox entry per notice and sink) at
        once, if ``owner`` still holds the lease; False (nothing written) if not."""

    @abstractmethod
    async def history(self, limit: int) -> list[Alert]:
        """Notices sent, newest first."""

    @abstractmethod
    async def claim(
        self, sink_id: str, now_ms: int, visible_again_ms: int, limit: int
    ) -> list[OutboxEntry]:
        """Entries due for ``sink_id``, hidden from other claims until ``visible_again_ms``."""

    @abstractmethod
    async def finish(self, entry: OutboxEntry) -> None:
        """Drop a delivered (or finally refused) entry."""

    @abstractmethod
    async def reschedule(self, entry: OutboxEntry, due_ms: int) -> None:
        """Try ``entry`` again at ``due_ms``, counting the attempt."""

    @abstractmethod
    async def release(self, entries: Sequence[OutboxEntry], now_ms: int) -> None:
        """Make claimed entries due now (a sender stopping before it got to them)."""

    @abstractmethod
    async def pending(self, sink_id: str) -> int:
        """How many entries wait for ``sink_id``."""

    @abstractmethod
    async def note_account(self, account: str, status: AccountStatus, now_ms: int) -> None:
        """Record an account's sending status; the newest ``at`` wins (any order).
        The account was seen at ``now_ms``; past the store's :class:`AccountLimits`,
        accounts are forgotten (``accounts.to_forget``) in the same step."""

    @abstractmethod
    async def accounts(self, now_ms: int) -> dict[str, AccountStatus]:
        """The accounts kept at ``now_ms`` (at most ``AccountLimits.keep``)."""

    @abstractmethod
    async def oldest_waiting_ms(self, sink_id: str) -> int | None:
        """When the oldest entry still waiting for ``sink_id`` was made; None if none."""

    @abstractmethod
    async def note_health(self, owner: str, health: dict[str, Any]) -> None:
        """This replica's own figures (its sources), for the lease holder to judge."""

    @abstractmethod
    async def healths(self) -> dict[str, dict[str, Any]]:
        """The figures each replica last noted, by replica."""

    @abstractmethod
    async def erase_address(self, address: str) -> int:
        """Rewrite every record, notice in the history and outbox entry that names
        ``address`` (lower-cased by the caller) without it (``alerts.erasure``), so
        that no stored value keeps it; how many items were rewritten (0 again).

        An item is replaced only if unchanged since read, so a commit landing
        meanwhile is neither lost nor overwritten; what it committed is erased too.
        Erase the messages first (``Erasing.erase_recipient``): an evaluation that
        looked them up before then may still commit the address afterwards."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def newer_account_status(old: AccountStatus | None, new: AccountStatus) -> bool:
    """Whether ``new`` replaces ``old``: later wins; at the same instant, paused wins."""
    if old is None or new.at > old.at:
        return True
    return new.at == old.at and old.enabled and not new.enabled


class MemoryAlertStore(AlertStore):
    """One process's alert state. With ``directory``, it survives a restart: the
    outbox is one file per entry (written before the commit returns, removed once
    delivered) and records and history one JSON file, both replaced atomically."""

    def __init__(
        self, directory: Path | None = None, *, account_limits: AccountLimits | None = None
    ) -> None:
        self._directory = directory
        self._account_limits = account_limits or AccountLimits()
        self._records: dict[str, AlertRecord] = {}
        self._history: list[Alert] = []
        self._entries: dict[str, OutboxEntry] = {}
        self._due: dict[str, int] = {}
        self._accounts: dict[str, AccountStatus] = {}
        self._seen: dict[str, int] = {}  # account -> when its last event came
        self._healths: dict[str, dict[str, Any]] = {}
        if directory is not None:
            self._load(directory)

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return True

    async def records(self) -> dict[str, AlertRecord]:
        return dict(self._records)

    async def commit(self, owner: str, plan: Plan, sink_ids: Sequence[str], now_ms: int) -> bool:
        entries = new_entries(plan.notices, sink_ids, now_ms)
        for entry in entries:
            self._write_entry(entry)
        self._records.update(plan.upserts)
        for key in plan.deletes:
            self._records.pop(key, None)
        self._history[:0] = reversed(plan.notices)
        del self._history[HISTORY_KEPT:]
        for entry in entries:
            self._entries[entry.id] = entry
            self._due[entry.id] = now_ms
        self._write_state()
        return True

    async def history(self, limit: int) -> list[Alert]:
        return self._history[:limit]

    async def claim(
        self, sink_id: str, now_ms: int, visible_again_ms: int, limit: int
    ) -> list[OutboxEntry]:
        due = sorted(
            (due_ms, entry_id)
            for entry_id, due_ms in self._due.items()
            if due_ms <= now_ms and self._entries[entry_id].sink_id == sink_id
        )[:limit]
        for _, entry_id in due:
            self._due[entry_id] = visible_again_ms
        return [self._entries[entry_id] for _, entry_id in due]

    async def finish(self, entry: OutboxEntry) -> None:
        self._entries.pop(entry.id, None)
        self._due.pop(entry.id, None)
        if self._directory is not None:
            self._entry_path(entry).unlink(missing_ok=True)

    async def reschedule(self, entry: OutboxEntry, due_ms: int) -> None:
        stored = self._entries.get(entry.id)
        if stored is None:
            return
        # From the stored entry, not the claimed copy: an erasure may have rewritten
        # it while it was being sent, and the copy would bring the address back.
        again = replace(stored, attempts=stored.attempts + 1)
        self._write_entry(again)
        self._entries[entry.id] = again
        self._due[entry.id] = due_ms

    async def release(self, entries: Sequence[OutboxEntry], now_ms: int) -> None:
        for entry in entries:
            if entry.id in self._due:
                self._due[entry.id] = now_ms

    async def pending(self, sink_id: str) -> int:
        return sum(1 for entry in self._entries.values() if entry.sink_id == sink_id)

    async def note_account(self, account: str, status: AccountStatus, now_ms: int) -> None:
        changed = newer_account_status(self._accounts.get(account), status)
        if changed:
            self._accounts[account] = status
        self._seen[account] = now_ms
        if self._forget(now_ms) or changed:
            # A known account seen again is not worth a write: its "seen" is saved
            # with the next change (a restart may then forget it a little early).
            self._write_state()

    async def accounts(self, now_ms: int) -> dict[str, AccountStatus]:
        if self._forget(now_ms):
            self._write_state()
        return dict(self._accounts)

    def _forget(self, now_ms: int) -> bool:
        """Drop what the account limits leave out; whether anything was dropped."""
        entries = {
            account: (self._seen.get(account, status.at), not status.enabled)
            for account, status in self._accounts.items()
        }
        gone = to_forget(entries, self._account_limits, now_ms)
        for account in gone:
            self._accounts.pop(account, None)
            self._seen.pop(account, None)
        return bool(gone)

    async def oldest_waiting_ms(self, sink_id: str) -> int | None:
        return min(
            (e.created_ms for e in self._entries.values() if e.sink_id == sink_id), default=None
        )

    async def note_health(self, owner: str, health: dict[str, Any]) -> None:
        self._healths[owner] = health

    async def healths(self) -> dict[str, dict[str, Any]]:
        return dict(self._healths)

    async def erase_address(self, address: str) -> int:
        # Nothing here awaits, so no commit lands halfway through (one event loop):
        # what is rewritten is what was read, with nothing to compare.
        erased = 0
        for key, record in list(self._records.items()):
            if (rewritten := erase_from_record(record, address)) is not None:
                self._records[key] = rewritten
                erased += 1
        state_changed = erased > 0
        for n, alert in enumerate(self._history):
            if (rewritten_alert := erase_from_alert(alert, address)) is not None:
                self._history[n] = rewritten_alert
                erased += 1
                state_changed = True
        for entry_id, entry in list(self._entries.items()):
            if (rewritten_alert := erase_from_alert(entry.alert, address)) is not None:
                again = replace(entry, alert=rewritten_alert)
                self._write_entry(again)
                self._entries[entry_id] = again
                erased += 1
        if state_changed:
            self._write_state()
        erased += self._erase_from_leftovers(address)
        log.info("alert_address_erased", store="memory", items=erased)  # never the address
        return erased

    def _erase_from_leftovers(self, address: str) -> int:
        """Files on disk that no load parses but that may quote the address: outbox
        entries set aside as unreadable (the address is replaced in their bytes, as
        they cannot be parsed) and what an interrupted write left (removed: nothing
        reads it, the next write replaces it); how many there were."""
        if self._directory is None:
            return 0
        needles = [form.encode() for form in address_forms(address)]
        touched = 0
        for path in sorted(self._directory.rglob("*")):
            if not path.is_file() or path.suffix == ".json":
                continue  # the live files, rewritten above from what they hold
            data = path.read_bytes()
            if not any(needle in data for needle in needles):
                continue
            if path.suffix in _TEMPORARY_SUFFIXES:
                path.unlink(missing_ok=True)
            else:
                for needle in needles:
                    data = data.replace(needle, ERASED.encode())
                _write_atomically(path, data, ".erasing")
            touched += 1
        return touched

    # On disk ---------------------------------------------------------------

    def _entry_path(self, entry: OutboxEntry) -> Path:
        assert self._directory is not None
        return self._directory / "outbox" / f"{entry.id}.json"

    def _write_entry(self, entry: OutboxEntry) -> None:
        if self._directory is not None:
            _write_atomically(self._entry_path(entry), entry.to_json())

    def _write_state(self) -> None:
        if self._directory is None:
            return
        state = {
            "records": [record.to_dict() for record in self._records.values()],
            "history": [alert_to_dict(alert) for alert in self._history],
            "accounts": {
                name: {
                    "enabled": s.enabled,
                    "at": s.at,
                    "detail_type": s.detail_type,
                    "seen": self._seen.get(name, s.at),
                }
                for name, s in self._accounts.items()
            },
        }
        _write_atomically(self._directory / "state.json", orjson.dumps(state))

    def _load(self, directory: Path) -> None:
        (directory / "outbox").mkdir(parents=True, exist_ok=True)
        state_path = directory / "state.json"
        if state_path.exists():
            state: dict[str, Any] = orjson.loads(state_path.read_bytes())
            for raw in state.get("records", []):
                record = AlertRecord.from_dict(raw)
                self._records[record.key] = record
            self._history = [alert_from_dict(raw) for raw in state.get("history", [])]
            for name, raw in state.get("accounts", {}).items():
                self._accounts[name] = AccountStatus(raw["enabled"], raw["at"], raw["detail_type"])
                self._seen[name] = raw.get("seen", raw["at"])  # older files: no "seen"
        for path in sorted((directory / "outbox").glob("*.json")):
            try:
                entry = OutboxEntry.from_json(path.read_bytes())
            except (OSError, ValueError, KeyError) as exc:
                log.error("alert_outbox_entry_unreadable", path=str(path), error=str(exc))
                path.rename(path.with_suffix(".unreadable"))
                continue
            self._entries[entry.id] = entry
            self._due[entry.id] = 0


# What _write_atomically writes before the rename (a crash may leave it behind).
_TEMPORARY_SUFFIXES = (".tmp", ".erasing")


def _write_atomically(path: Path, data: bytes, temporary_suffix: str = ".tmp") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(temporary_suffix)
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
