"""Addresses unsafe to mail again: a Permanent bounce or a complaint made them so.

Sending to them again hurts the sender's reputation (and SES's own account-level
suppression list would drop the mail anyway), so they are kept, as the merge that
learns of them records them, for ``SES_TRACKER_SUPPRESSION_DAYS``: beyond the
message retention, since the point is to remember. An address keeps its earliest
reason (``since`` is when it first became unsafe), whatever order the events came
in. Pure: the stores keep them (``merge.lua`` is this module's twin for Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service import state
from service.codec import decode_event
from service.timestamps import format_ms

REASONS = ("bounce", "complaint")
DEFAULT_DAYS = 400
CSV_COLUMNS = ("address", "reason", "since", "message_id", "subtype")


@dataclass(frozen=True, slots=True)
class Suppression:
    address: str
    reason: str  # "bounce" | "complaint"
    since_ms: int
    message_id: str
    subtype: str | None = None  # the bounce's subtype (SES: Suppressed, General, ...)

    def view(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "since": format_ms(self.since_ms),
            "message_id": self.message_id,
            "subtype": self.subtype,
        }

    def row(self) -> list[Any]:
        return [self.address, self.reason, format_ms(self.since_ms), self.message_id,
                self.subtype or ""]  # fmt: skip


def suppression_of(
    write: state.MessageWrite, event: state.EventWrite, address: str, gained: int
) -> Suppression:
    """What a merge records when ``address`` gains a Permanent bounce or a complaint."""
    if gained & state.COMPLAINT:
        return Suppression(address, "complaint", event.at, write.message_id)
    subtype = decode_event(event.blob).details.get("bounce_subtype")
    return Suppression(address, "bounce", event.at, write.message_id, subtype)


def kept(current: Suppression | None, new: Suppression) -> Suppression:
    """The earliest reason wins (merge.lua's twin)."""
    return new if current is None or new.since_ms < current.since_ms else current
