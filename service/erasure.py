"""Erasing a recipient from a message record, for privacy requests.

``DELETE /v1/recipients/{address}`` removes an address everywhere the tracker keeps
it: each record it appears in (pure, here), the recipient's search index, its
suppression. What stays is anonymous: the statistics and history count changes per
domain and provider, never per address.
"""

from __future__ import annotations

from typing import Any

from service.codec import decode_event, encode_stored
from service.state import MessageRecord


def erase(record: MessageRecord, address: str) -> bool:
    """Remove every trace of ``address`` from ``record``; whether anything changed.

    Its recipient entry goes; an event that named only it goes; an event that named
    others too is rewritten without it (and without its per-recipient report).
    """
    changed = record.recipients.pop(address, None) is not None
    for name, blob in list(record.blobs.items()):
        if name in ("o" + address, "c" + address):
            del record.blobs[name]
            changed = True
            continue
        event = decode_event(blob)
        reports = event.details.get("reports") or []
        if address not in event.recipients and not any(_names(r, address) for r in reports):
            continue
        changed = True
        rest = tuple(r for r in event.recipients if r != address)
        if not rest:
            del record.blobs[name]
            continue
        details: dict[str, Any] = dict(event.details)
        if reports:
            details["reports"] = [r for r in reports if not _names(r, address)]
        record.blobs[name] = encode_stored(event._replace(recipients=rest, details=details))
    return changed


def _names(report: Any, address: str) -> bool:
    return isinstance(report, dict) and report.get("address") == address
