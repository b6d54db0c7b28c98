"""Which AWS accounts' account-level events count, and how many are kept.

EventBridge account events (``Sending Status Disabled`` ...) name their account,
and anyone who can post events can name any account: a flood of forged ids once made
a 12 MB ``/v1/alerts`` answer. So with ``SES_TRACKER_ACCOUNT_IDS`` set only those
accounts count (others are counted by reason and dropped before anything is stored);
unset, at most :data:`MAX_ACCOUNTS_KEPT` are kept, the least recently seen evicted
first (an account that is running before a paused one), each forgotten after
:data:`ACCOUNT_TTL_MS` without an event.

Pure: no I/O, no clock; the engine and the stores apply what is decided here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

# The one cutter of strings from outside for log lines (here first; used by the engine).
from service.logs import loggable as loggable

if TYPE_CHECKING:
    from service.alerts.evaluate import AccountStatus

# AWS account ids are twelve digits (EventBridge's ``account`` field).
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
MAX_ACCOUNTS_KEPT = 20
# As long as the alert history is kept by default (SES_TRACKER_ALERT_HISTORY_DAYS, 30).
ACCOUNT_TTL_MS = 30 * 86_400_000
# More than this in SES_TRACKER_ACCOUNT_IDS is a mistake (the store keeps them all).
MAX_ACCOUNT_IDS = 1_000


class AccountIdsError(ValueError):
    """SES_TRACKER_ACCOUNT_IDS cannot be read; the text never repeats a whole value."""


class Dropped(StrEnum):
    """Why an account event was dropped: a closed set, safe as a metric label."""

    NOT_LISTED = "not_listed"  # a well-formed id missing from SES_TRACKER_ACCOUNT_IDS
    NOT_AN_ACCOUNT = "not_an_account_id"  # missing, or not twelve digits


def is_account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def parse_account_ids(value: str | None) -> frozenset[str] | None:
    """The ids a ``SES_TRACKER_ACCOUNT_IDS`` value lists; None when unset or blank."""
    parts = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not parts:
        return None
    bad = [n for n, part in enumerate(parts, 1) if not is_account_id(part)]
    if bad:
        raise AccountIdsError(
            f"entry {bad[0]} of {len(parts)} is not a 12-digit AWS account id"
            + (f" ({len(bad)} such entries)" if len(bad) > 1 else "")
        )
    ids = frozenset(parts)
    if len(ids) > MAX_ACCOUNT_IDS:
        raise AccountIdsError(f"{len(ids)} account ids; at most {MAX_ACCOUNT_IDS}")
    return ids


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """What an alert store keeps: ``keep`` accounts at most, each for ``ttl_ms``
    after its last event (None: until evicted)."""

    keep: int = MAX_ACCOUNTS_KEPT
    ttl_ms: int | None = ACCOUNT_TTL_MS


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """``allowed`` None: any well-formed id counts, within :class:`AccountLimits`."""

    allowed: frozenset[str] | None = None

    @classmethod
    def of(cls, value: str | None) -> AccountPolicy:
        return cls(parse_account_ids(value))

    @property
    def limits(self) -> AccountLimits:
        if self.allowed is None:
            return AccountLimits()
        # The list bounds the store; a listed account stays until it is re-enabled.
        return AccountLimits(keep=len(self.allowed), ttl_ms=None)

    def refuses(self, account: str | None) -> Dropped | None:
        """Why an event of ``account`` is dropped; None when it counts."""
        if not is_account_id(account):
            return Dropped.NOT_AN_ACCOUNT
        if self.allowed is not None and account not in self.allowed:
            return Dropped.NOT_LISTED
        return None

    def admits(self, account: str) -> bool:
        return self.refuses(account) is None


def clamped(status: AccountStatus, now_ms: int) -> AccountStatus:
    """``status`` dated no later than the wall clock: the newest status wins, and an
    event stamped tomorrow must not outrank today's genuine one."""
    return status if status.at <= now_ms else dataclasses.replace(status, at=now_ms)


def to_forget(
    entries: dict[str, tuple[int, bool]], limits: AccountLimits, now_ms: int
) -> list[str]:
    """Accounts a store drops, given each one's (last seen, paused): those unseen for
    the TTL, then, over ``keep``, the least recently seen, running ones before paused
    ones (a flood of forged "enabled" events must not push a paused account out).
    ``service.alerts.redis_store`` does the same in Lua."""
    cutoff = None if limits.ttl_ms is None else now_ms - limits.ttl_ms
    expired = [a for a, (seen, _) in entries.items() if cutoff is not None and seen <= cutoff]
    gone = set(expired)
    left = sorted(
        (paused, seen, account)
        for account, (seen, paused) in entries.items()
        if account not in gone
    )
    over = max(0, len(left) - limits.keep)
    return expired + [account for _, _, account in left[:over]]
