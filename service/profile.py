"""A recipient's profile (``GET /v1/recipients/{address}``): what we sent them and
what became of it, from the messages still kept (``SES_TRACKER_RETENTION_S``).

Built when asked, from the recipient's search index (newest first), so it costs no
storage beyond that index (one entry per message the address received) and always
agrees with the message records. A recipient of very many messages (a monitoring
inbox in BCC) is read up to :data:`MAX_MESSAGES` newest; ``complete`` then says
the counts cover those only. Only the newest message is viewed whole, and only the
newest :data:`RECENT` summarized.

``suppressed`` is the address's entry in the suppression list
(``service.suppressions``), which outlives the messages and goes when removed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from service import state
from service.search import SearchHit
from service.suppressions import Suppression
from service.timestamps import format_ms
from service.view import ViewOptions, message_summary, message_view

MAX_MESSAGES = 2_000
RECENT = 20


def outcome_of(address: str, hit: SearchHit, options: ViewOptions) -> dict[str, Any]:
    """The recipient's status in one message, and when it got there."""
    view = message_view(hit.message_id, hit.record, options)
    mine = next(r for r in view["recipients"] if r["address"] == address)
    status = mine["status"]
    at = {
        "complained": (mine["complaint"] or {}).get("at"),
        "bounced": (mine["bounce"] or {}).get("at"),
        "delivered": mine["delivered_at"],
        "delayed": mine["delays"][-1]["at"] if mine["delays"] else None,
    }.get(status) or view["sent_at"]
    return {"status": status, "at": at, "message_id": hit.message_id}


def profile(
    address: str,
    hits: list[SearchHit],
    complete: bool,
    suppressed: Suppression | None,
    options: ViewOptions,
) -> dict[str, Any]:
    """``hits``: the recipient's messages, newest first (at least one).

    The counts come from each record's flags for the address (no view built); one
    message view, the newest's, gives the last outcome, and :data:`RECENT` summaries
    the page of recent messages: the work of a call is bounded whatever the count."""
    counts = Counter(hit.record.recipient_status(address) for hit in hits)
    return {
        "address": address,
        "messages": len(hits),
        "complete": complete,
        "first_sent_at": _sent_at(hits[-1]),
        "last_sent_at": _sent_at(hits[0]),
        "status_counts": {status: counts.get(status, 0) for status in state.STATUSES},
        "last_outcome": outcome_of(address, hits[0], options),
        "suppressed": None
        if suppressed is None
        else {k: v for k, v in suppressed.view().items() if k in ("reason", "since", "message_id")},
        "recent": [message_summary(hit.message_id, hit.record, options) for hit in hits[:RECENT]],
    }


def _sent_at(hit: SearchHit) -> str:
    return format_ms(hit.position.sent_at)
