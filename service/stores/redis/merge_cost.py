"""What one merge call may cost Redis, and how a batch is cut to stay under it.

A script holds Redis for as long as it runs: every other client of every replica
waits, and past ``busy-reply-threshold`` they are answered BUSY. Cutting calls by
event count let one message's events (2,000 Deliveries naming 100 new recipients
each) make a single call of 9.6 s. So a call is cut by *units* of the work the
script does (``merge.lua``), counted from what the write carries:

* a message: reading, unpacking, packing and writing its record, its indexes;
* each event: its blob, its once-counted statistics under every group, and when it
  changes the message's flags, a pass over the record's recipients;
* each address it names (destination or recipient): adding it, perhaps past the
  record's cap, which scans the kept ones for the largest;
* each recipient an event names: the bits it brings, a transition and its counts
  (live, hourly and daily, under every group), the stream and outbox entries.

A unit is about a microsecond of Redis on the machines measured
(``bench/bench_hostile.py`` reports the slowest call; README, Merge calls). The
budget leaves room for the estimate to be off several times over and stay under
50 ms. A message whose own cost is over the budget is cut by its events into
several writes: the merge is a lattice, so parts merged one after another end in
the state of the whole (the destination rides with each part; only the first
makes its recipients new).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from service.state import MAX_RECIPIENTS, EventWrite, MessageWrite

MESSAGE_UNITS = 60
EVENT_UNITS = 12
FLAGS_PASS_UNITS = MAX_RECIPIENTS // 4  # a pass over the kept recipients
ADDRESS_UNITS = 6 + MAX_RECIPIENTS // 10  # added, perhaps past the cap (a scan)
RECIPIENT_UNITS = 10
# Per statistics group a change counts under: live, hour and day, a few fields each.
GROUP_UNITS = 3

# What one call may cost. Ordinary traffic (a Send or a Delivery to one recipient,
# ~60 units an event with five groups) fits ~250 events a call.
DEFAULT_BUDGET = 15_000
# What the calls sent in one round trip may cost together: a pipeline is written and
# read under the client's socket timeout (5 s), and Redis works through it in turn.
ROUND_TRIP_BUDGET = 20 * DEFAULT_BUDGET


def event_cost(event: EventWrite, groups: int) -> int:
    cost = EVENT_UNITS + groups * GROUP_UNITS
    if event.message_bits:
        cost += FLAGS_PASS_UNITS
    return cost + len(event.recipient_bits) * (RECIPIENT_UNITS + groups * GROUP_UNITS)


def _address_cost(write: MessageWrite, events: Sequence[EventWrite]) -> int:
    named = set(write.destination)
    for event in events:
        named.update(address for address, _ in event.recipient_bits)
    return len(named) * ADDRESS_UNITS


def write_cost(write: MessageWrite) -> int:
    """The units merging ``write`` may take, whatever the record holds."""
    groups = len(write.groups) + 2  # the message's, plus the recipient's domain and provider
    return (
        MESSAGE_UNITS
        + len(write.providers)
        + _address_cost(write, write.events)
        + sum(event_cost(event, groups) for event in write.events)
    )


def _parts(write: MessageWrite, budget: int) -> list[tuple[MessageWrite, int]]:
    """``write`` as parts of at most ``budget`` units each, with their costs (one
    event is never cut: the parser bounds an event's recipients, so its cost is
    bounded too)."""
    whole = write_cost(write)
    if whole <= budget:
        return [(write, whole)]
    groups = len(write.groups) + 2
    fixed = MESSAGE_UNITS + len(write.providers) + len(write.destination) * ADDRESS_UNITS
    parts: list[MessageWrite] = []
    events: list[EventWrite] = []
    cost = fixed
    for event in write.events:
        added = event_cost(event, groups) + len(event.recipient_bits) * ADDRESS_UNITS
        if events and cost + added > budget:
            parts.append(write._replace(events=tuple(events)))
            events, cost = [], fixed
        events.append(event)
        cost += added
    parts.append(write._replace(events=tuple(events)))
    return [(part, write_cost(part)) for part in parts]


def split(write: MessageWrite, budget: int) -> list[MessageWrite]:
    """``write`` as parts of at most ``budget`` units each."""
    return [part for part, _ in _parts(write, budget)]


class Call(NamedTuple):
    """The writes one merge call carries, and what they may cost together."""

    writes: list[MessageWrite]
    cost: int


def cut(writes: Sequence[MessageWrite], budget: int = DEFAULT_BUDGET) -> list[Call]:
    """``writes`` in calls of at most ``budget`` units each, in order; a message over
    the budget alone becomes parts in consecutive calls. Each write is costed once
    (this runs per batch on the hot path)."""
    calls: list[Call] = []
    current: list[MessageWrite] = []
    spent = 0
    for write in writes:
        for part, cost in _parts(write, budget):
            if current and spent + cost > budget:
                calls.append(Call(current, spent))
                current, spent = [], 0
            current.append(part)
            spent += cost
    if current or not calls:
        calls.append(Call(current, spent))
    return calls
