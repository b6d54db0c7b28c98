"""The per-message, per-recipient state machine, as a pure merge.

Why a lattice and not a transition table: events arrive late, twice and out of
order (SNS and Firehose both retry; SES rounds bounce times down to the second).
Every piece of state here therefore merges with an operation that is commutative,
associative and idempotent, so ``state(events)`` is the same for every ordering and
any duplication of the events:

* each recipient holds a bitmask of the outcomes its events reached; merge is OR;
* the message holds a bitmask of whole-message outcomes (reject, rendering
  failure); merge is OR;
* each stored event is filed under a field derived from its content; two versions
  of one field merge to the lexicographically smaller blob (the earlier ingest time,
  as blobs end in it), and engagement fields merge to the earliest event;
* the message header (sender, subject, tags) merges to the richest version.

A status is a pure function of the flags (:func:`status_of`), so precedence, the
auto-reply rule and whole-message outcomes live in one place. The Redis store runs
the same merge server-side in Lua and receives :data:`STATUS_TABLE` from here rather
than re-implementing :func:`status_of`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

# Outcome flags; a recipient's flags are the OR of every event that names it.
DELAY = 1
DELIVERY = 2
SOFT_BOUNCE = 4  # Transient or Undetermined
HARD_BOUNCE = 8  # Permanent
COMPLAINT = 16
REJECT = 32  # whole message
RENDERING_FAILURE = 64  # whole message
ALL_FLAGS = 127

# Status codes, index = code. The order is the precedence (README, How state is decided).
STATUSES: tuple[str, ...] = (
    "sent",
    "delayed",
    "delivered",
    "bounced",
    "complained",
    "rejected",
    "rendering_failed",
)
SENT, DELAYED, DELIVERED, BOUNCED, COMPLAINED, REJECTED, RENDERING_FAILED = range(7)

# Caps one message's stored events plus recipients (the Redis hash's field count,
# less its bookkeeping fields). Status never depends on it (flags are merged even for
# events past the cap); only the timeline of a pathological message is cut, and the
# record is marked truncated.
MAX_RECORD_FIELDS = 256
# SES sends a message to at most 50 recipients. A message naming more keeps the 100
# smallest addresses: whatever order events arrive in, the same 100 are kept (an
# address only ever leaves for a smaller one, and those stay), so state stays
# independent of order. Past the cap the record is marked truncated.
MAX_RECIPIENTS = 100
# Caps the bytes of a message's stored events (the blobs): one message id cannot be
# grown without limit, which would make every later merge of it, inside Redis,
# unpack and repack a huge record. An event that does not fit is not stored (its
# outcome flags still are) and the record is marked truncated.
MAX_RECORD_BLOB_BYTES = 64 * 1024


def status_of(flags: int) -> int:
    """The status code a recipient with these outcome flags is in."""
    if flags & RENDERING_FAILURE:
        return RENDERING_FAILED
    if flags & REJECT:
        return REJECTED
    if flags & COMPLAINT:
        return COMPLAINED
    if flags & HARD_BOUNCE:
        return BOUNCED
    # An auto-reply (out of office) arrives as a Transient or Undetermined bounce
    # after a Delivery; the mail did arrive, so delivered wins whatever the order.
    if flags & SOFT_BOUNCE and not flags & DELIVERY:
        return BOUNCED
    if flags & DELIVERY:
        return DELIVERED
    if flags & DELAY:
        return DELAYED
    return SENT


# status_of for every possible flag value, as one digit per value: the Lua merge
# looks statuses up here instead of holding a second copy of the rules.
STATUS_TABLE: str = "".join(str(status_of(flags)) for flags in range(ALL_FLAGS + 1))


class EventWrite(NamedTuple):
    """One event, encoded for storage (see ``service.codec``)."""

    field: str  # where the event is filed in its message record
    blob: bytes  # the encoded event; merges to the smaller of two versions
    message_bits: int
    recipient_bits: tuple[tuple[str, int], ...]
    at: int  # event time (epoch ms), for the transitions it causes
    capped: bool  # refused past MAX_RECORD_FIELDS (engagement fields are not)
    # Statistics (service.stats): the status this event naturally brings a recipient
    # to (-1: none), the latency bin counted when it does, and the fields counted
    # once when the event is new (live and history).
    natural: int = -1
    latency_field: str = ""
    once_fields: tuple[str, ...] = ()
    # The live statistics bucket this event's changes count in: its own time's
    # (service.stats.live_bucket), or -1 when it is too old for any live window.
    bucket: int = -1
    # The history rollups' coarser latency bin for the same step (service.stats).
    history_latency_field: str = ""
    # Counted once when the event is new, in the live bucket only: ingest lag and
    # processing time describe the pipeline now, not the mail's history.
    live_fields: tuple[str, ...] = ()


class MessageWrite(NamedTuple):
    """Everything one batch says about one message, grouped for a single merge."""

    message_id: str
    header: bytes
    sent_at: int
    destination: tuple[str, ...]
    events: tuple[EventWrite, ...]
    # False when no event carried mail.timestamp: sent_at is then the earliest
    # event's time, and no latency from send is reported.
    sent_known: bool = True
    # The message's statistics groups (service.dimensions: configuration_set=...,
    # identity=..., tag:NAME=...), and the provider of each recipient domain of this
    # write that has one (the rest are "other"): every change counts under these
    # plus its recipient's domain= and provider= groups.
    groups: tuple[str, ...] = ()
    providers: dict[str, str] = {}  # shared default, never mutated
    # Some recipient of this write was let go before the merge (past the per-event
    # cap, service.parser.MAX_RECIPIENTS, or past MAX_RECIPIENTS in its destination):
    # the record is marked truncated, as past its own cap.
    truncated: bool = False

    @property
    def first_at(self) -> int:
        """When transitions not caused by one event (new destination recipients) happen."""
        return self.events[0].at if self.events else self.sent_at

    @property
    def first_bucket(self) -> int:
        """The live bucket those transitions count in: the first event's."""
        return self.events[0].bucket if self.events else -1


class Transition(NamedTuple):
    """A recipient's status changed; ``from_status`` is None for a new recipient."""

    message_id: str
    recipient: str
    from_status: str | None
    to_status: str
    at: int
    latency_ms: int | None  # None when the send time is not known


@dataclass(slots=True)
class MessageRecord:
    """One message's merged state, as both stores keep it."""

    header: bytes = b""
    message_flags: int = 0
    recipients: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False

    def recipient_status(self, address: str) -> str:
        return STATUSES[status_of(self.recipients[address] | self.message_flags)]

    def status_codes(self) -> list[int]:
        """Each recipient's status code, whole-message outcomes included."""
        return [status_of(flags | self.message_flags) for flags in self.recipients.values()]

    def status(self) -> str:
        """The message's status: the highest of its recipients'."""
        return STATUSES[max(self.status_codes(), default=status_of(self.message_flags))]


# Outcome flags that make an address unsafe to mail again (a suppression).
UNSAFE = HARD_BOUNCE | COMPLAINT


class MergeObserver(Protocol):
    """Told what a merge changed: statistics (``service.stats.Changes``), the
    forwarding outbox and suppressions listen here."""

    def once(self, write: MessageWrite, event: EventWrite) -> None: ...

    def transition(
        self,
        write: MessageWrite,
        event: EventWrite | None,
        address: str,
        old: int | None,
        new: int,
    ) -> None: ...

    def unsafe(self, write: MessageWrite, event: EventWrite, address: str, gained: int) -> None:
        """``address`` newly has a Permanent bounce or a complaint (``gained`` bits)."""


def merge(
    record: MessageRecord,
    write: MessageWrite,
    counters: MergeObserver | None = None,
    evicted: list[str] | None = None,
) -> list[Transition]:
    """Merge one message's batch of events into ``record``; return what changed.

    With ``counters``, also count what changed for the statistics (``service.stats``):
    counting only real changes makes a repeated batch count once. Recipients let go
    past MAX_RECIPIENTS (evicted, or never kept) are appended to ``evicted``: the
    events kept still name them, so the caller's indexes keep them (an erasure must
    find the record).

    ``service/stores/redis/merge.lua`` is this function's twin for Redis; a consistency
    test holds the two to the same results.
    """
    transitions: list[Transition] = []
    if write.header > record.header:
        record.header = write.header
    if write.truncated:
        record.truncated = True
    for address in write.destination:
        _add_bits(record, write, address, 0, write.first_at, transitions, counters, None, evicted)
    blob_bytes = -1  # summed when first needed: most merges add no field
    for event in write.events:
        current = record.blobs.get(event.field)
        if current is None:
            if blob_bytes < 0:
                blob_bytes = sum(map(len, record.blobs.values()))
            if (
                event.capped and len(record.blobs) + len(record.recipients) >= MAX_RECORD_FIELDS
            ) or blob_bytes + len(event.blob) > MAX_RECORD_BLOB_BYTES:
                record.truncated = True
            else:
                record.blobs[event.field] = event.blob
                blob_bytes += len(event.blob)
        elif event.blob < current:
            record.blobs[event.field] = event.blob
            if blob_bytes >= 0:
                blob_bytes += len(event.blob) - len(current)
            continue
        else:
            continue
        if counters is not None:
            counters.once(write, event)
        if event.message_bits and record.message_flags | event.message_bits != record.message_flags:
            before = record.message_flags
            record.message_flags |= event.message_bits
            for address, flags in record.recipients.items():
                old = status_of(flags | before)
                new = status_of(flags | record.message_flags)
                if old != new:
                    transitions.append(_transition(write, address, old, new, event.at))
                    _count(counters, write, address, old, new, event)
        for address, bits in event.recipient_bits:
            _add_bits(record, write, address, bits, event.at, transitions, counters, event, evicted)
    return transitions


def _count(
    counters: MergeObserver | None,
    write: MessageWrite,
    address: str,
    old: int | None,
    new: int,
    event: EventWrite | None,
) -> None:
    if counters is not None:
        counters.transition(write, event, address, old, new)


def _add_bits(
    record: MessageRecord,
    write: MessageWrite,
    address: str,
    bits: int,
    at: int,
    transitions: list[Transition],
    counters: MergeObserver | None,
    event: EventWrite | None,
    evicted: list[str] | None,
) -> None:
    old_flags = record.recipients.get(address)
    if old_flags is None:
        if len(record.recipients) >= MAX_RECIPIENTS:
            record.truncated = True
            largest = max(record.recipients)
            if address > largest:
                # Never kept, but its events are: the caller indexes it still.
                if evicted is not None:
                    evicted.append(address)
                return
            del record.recipients[largest]
            if evicted is not None:
                evicted.append(largest)
        record.recipients[address] = bits
        new = status_of(bits | record.message_flags)
        transitions.append(_transition(write, address, None, new, at))
        _count(counters, write, address, None, new, event)
        if bits & UNSAFE and counters is not None and event is not None:
            counters.unsafe(write, event, address, bits & UNSAFE)
        return
    new_flags = old_flags | bits
    if new_flags == old_flags:
        return
    if new_flags & ~old_flags & UNSAFE and counters is not None and event is not None:
        counters.unsafe(write, event, address, new_flags & ~old_flags & UNSAFE)
    record.recipients[address] = new_flags
    old = status_of(old_flags | record.message_flags)
    new = status_of(new_flags | record.message_flags)
    if old != new:
        transitions.append(_transition(write, address, old, new, at))
        _count(counters, write, address, old, new, event)


def _transition(
    write: MessageWrite, address: str, old: int | None, new: int, at: int
) -> Transition:
    return Transition(
        message_id=write.message_id,
        recipient=address,
        from_status=None if old is None else STATUSES[old],
        to_status=STATUSES[new],
        at=at,
        latency_ms=max(0, at - write.sent_at) if write.sent_known else None,
    )
