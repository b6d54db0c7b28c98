"""Erasing a recipient, for privacy requests: the pure parts.

``DELETE /v1/recipients/{address}`` removes an address everywhere the tracker keeps
it (``service.erasure_job`` does the work, paged, in the background). Two rules live
here, free of I/O:

* :func:`erase` takes the address out of a kept record;
* :func:`strip_write` takes it out of a write about to be merged, when the address
  was erased after the message was sent (``service.tombstones``): events of such a
  message that arrive late are stored without it, while a message sent after the
  erasure is new data and is kept.

What stays is anonymous: the statistics and history count changes per domain and
provider, never per address.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from service.codec import decode_event, encode_stored
from service.state import EventWrite, MessageRecord, MessageWrite

# Engagement events filed per recipient (service.codec.encode_event): "o" + address.
_PER_RECIPIENT_PREFIXES = ("o", "c")


def erase(record: MessageRecord, address: str) -> bool:
    """Remove every trace of ``address`` from ``record``; whether anything changed.

    Its recipient entry goes; an event that named only it goes; an event that named
    others too is rewritten without it (and without its per-recipient report).
    """
    changed = record.recipients.pop(address, None) is not None
    gone = frozenset((address,))
    for name, blob in list(record.blobs.items()):
        if _filed_for(name, gone):
            del record.blobs[name]
            changed = True
            continue
        rewritten = blob_without(blob, gone)
        if rewritten is blob:
            continue
        changed = True
        if rewritten is None:
            del record.blobs[name]
        else:
            record.blobs[name] = rewritten
    return changed


def strip_write(write: MessageWrite, erased: Callable[[str], bool]) -> MessageWrite | None:
    """``write`` without the addresses ``erased`` says were erased before its message
    was sent: out of its destination, its recipient flags and its event blobs; an
    event left naming nobody goes. The same object when none is named (the usual
    case), None when nothing is left to merge."""
    named = set(write.destination)
    for event in write.events:
        named.update(address for address, _ in event.recipient_bits)
    gone = frozenset(address for address in named if erased(address))
    if not gone:
        return write
    events: list[EventWrite] = []
    for event in write.events:
        if _filed_for(event.field, gone):
            continue
        blob = blob_without(event.blob, gone)
        if blob is None:
            continue
        bits = tuple(pair for pair in event.recipient_bits if pair[0] not in gone)
        events.append(event._replace(blob=blob, recipient_bits=bits))
    destination = tuple(address for address in write.destination if address not in gone)
    if not events and not destination:
        return None
    return write._replace(destination=destination, events=tuple(events))


def _filed_for(field: str, gone: Collection[str]) -> bool:
    """An engagement event filed under one of ``gone`` (its field names the address)."""
    return field[:1] in _PER_RECIPIENT_PREFIXES and field[1:] in gone


def blob_without(blob: bytes, gone: Collection[str]) -> bytes | None:
    """The blob without ``gone`` (the same object when it names none of them; None
    when it named only them)."""
    event = decode_event(blob)
    reports = event.details.get("reports") or []
    if not any(address in gone for address in event.recipients) and not any(
        _names(report, gone) for report in reports
    ):
        return blob
    rest = tuple(address for address in event.recipients if address not in gone)
    if not rest:
        return None
    details: dict[str, Any] = dict(event.details)
    if reports:
        details["reports"] = [report for report in reports if not _names(report, gone)]
    return encode_stored(event._replace(recipients=rest, details=details))


def _names(report: Any, gone: Collection[str]) -> bool:
    return isinstance(report, dict) and report.get("address") in gone
