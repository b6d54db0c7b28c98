"""What the forwarding outbox holds, and what a receiver gets (README, Forwarding).

Pure: the Redis merge appends :class:`Change` tuples in ``merge.lua`` (its twin
there is layout.FORWARDED), the memory store builds them with :func:`change_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from service import state
from service.codec import Header, StoredEvent, decode_event, decode_header
from service.diagnosis import Diagnosis, RecipientState, diagnose
from service.dimensions import domain_of, first_value, identity_from
from service.providers import OTHER
from service.timestamps import format_ms
from service.view import event_view

NEW = -1  # from_status of a recipient first seen
NO_LATENCY = -1


class Change(NamedTuple):
    """One recipient status change, as the outbox keeps it."""

    message_id: str
    address: str
    from_status: int  # NEW for a new recipient
    to_status: int
    at: int
    latency_ms: int  # NO_LATENCY without a known send time
    header: bytes  # the message's merged header (service.codec)
    event: bytes  # the stored blob of the event that made it (b"" for none)
    provider: str


def change_of(
    write: state.MessageWrite,
    event: state.EventWrite | None,
    address: str,
    old: int | None,
    new: int,
    header: bytes,
) -> Change:
    """The change a merge made (twin of merge.lua's ``forwarded`` entries): caused by
    ``event``, or, for a new destination recipient, by the batch's first event."""
    cause = event if event is not None else (write.events[0] if write.events else None)
    at = cause.at if cause is not None else write.sent_at
    return Change(
        write.message_id,
        address,
        NEW if old is None else old,
        new,
        at,
        max(0, at - write.sent_at) if write.sent_known else NO_LATENCY,
        header,
        cause.blob if cause is not None else b"",
        write.providers.get(domain_of(address), OTHER),
    )


class Facts(NamedTuple):
    """What filters and items read from a change's header, decoded once."""

    configuration_set: str | None
    identity: str
    tags: dict[str, str]


def facts_of(header: bytes, cache: dict[bytes, Facts]) -> Facts:
    facts = cache.get(header)
    if facts is None:
        decoded = decode_header(header) or Header(None, None, None, {})
        tags = {name: value for name, raw in decoded.tags.items() if (value := first_value(raw))}
        facts = cache[header] = Facts(
            decoded.configuration_set, identity_from(decoded.tags, decoded.source), tags
        )
    return facts


def item(entry_id: str, index: int, change: Change, facts: Facts) -> dict[str, Any]:
    """The JSON a receiver gets for one change; ``id`` is stable across retries and
    replicas (the outbox entry and the change's place in it)."""
    event: dict[str, Any] | None = None
    stored = decode_event(change.event) if change.event else None
    if stored is not None:
        view = event_view(stored)
        view.pop("seen_at", None)  # when this tracker saw it: not the receiver's business
        event = view
    return {
        "id": f"{entry_id}.{index}",
        "message_id": change.message_id,
        "recipient": change.address,
        "from": None if change.from_status == NEW else state.STATUSES[change.from_status],
        "to": state.STATUSES[change.to_status],
        "at": format_ms(change.at),
        "latency_ms": None if change.latency_ms == NO_LATENCY else change.latency_ms,
        "configuration_set": facts.configuration_set,
        "identity": facts.identity,
        "provider": change.provider,
        "tags": facts.tags,
        "event": event,
        "diagnosis": diagnosis_of(change, stored).brief(),
    }


def diagnosis_of(change: Change, event: StoredEvent | None) -> Diagnosis:
    """The change's diagnosis (``service.diagnosis``), from the change and its own
    event only: computed when sent, so the merge keeps nothing more for it. It
    claims no counts (delays before this one are not in the change)."""
    sent_at = None if change.latency_ms == NO_LATENCY else change.at - change.latency_ms
    return diagnose(
        RecipientState(
            address=change.address,
            status=state.STATUSES[change.to_status],
            events=() if event is None else (event,),
            sent_at=sent_at,
            now_ms=change.at,
            complete=False,
        )
    )


def matches(
    change: Change,
    facts: Facts,
    *,
    statuses: tuple[str, ...],
    configuration_sets: tuple[str, ...],
    tags: Mapping[str, str],
    providers: tuple[str, ...],
) -> bool:
    """Whether a subscription's filters (each optional; all must hold) take it."""
    if statuses and state.STATUSES[change.to_status] not in statuses:
        return False
    if configuration_sets and facts.configuration_set not in configuration_sets:
        return False
    if providers and change.provider not in providers:
        return False
    return all(facts.tags.get(name) == value for name, value in tags.items())
