"""The change log: what each merge changed, for the projections to apply after it.

The merge (``merge.lua``, ``state.merge``) keeps only what must be atomic with a
record: the record, its search indexes, suppressions, the checkpoint, and one change
log entry per call. Everything counted from the changes (live statistics and their
revisions, hourly and daily rollups) is a *projection* of the log: it reads entries
in order and applies a batch of them with its own checkpoint, in one atomic step, so
a batch applied twice (a retry, two replicas racing) counts once.

An entry holds three fields:

* ``c``, the *context*, packed here before the merge (:func:`pack_context`): the
  merge's counting settings (``stats.Counting``), each distinct event fact (where
  its changes count and what they count) listed once, and for each message of the
  call its groups, providers and the numbers of its events' facts;
* ``t``, the transitions the merge made, as its reply holds them (``layout.REPLY``)
  but naming each recipient's domain, never its address: the log is counted by
  domain and provider, and holds nothing an erasure would have to reach;
* ``a``, the events that were new to the store (``layout.APPLIED``): what counts once.

:func:`count_entries` counts entries into the live buckets and rollups of
``service.stats`` (``LiveBucket``, ``RollupCounters``), the sums the memory store's
``stats.Changes`` gives counting inside its merge, with every group passed through:
which values of a dimension are admitted apart (``stats.admit``) is decided where
the counters live, by the projection's atomic step (``project.lua``), against the
admissions already stored. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from service import state, stats
from service.dimensions import OTHER
from service.stores.redis import layout

# Fields of an entry.
CONTEXT, TRANSITIONS, APPLIED = (
    name.encode() for name in (layout.FIELD_CONTEXT, layout.FIELD_TRANSITIONS, layout.FIELD_APPLIED)
)
_REPLY_STRIDE = len(layout.REPLY)
# EventWrite positions the context reads; a fact is (bucket, hour, day, then the
# event's statistics fields in EventWrite's order).
_AT = state.EventWrite._fields.index("at")
_BUCKET = state.EventWrite._fields.index("bucket")
_STATISTICS = state.EventWrite._fields.index("natural")
_NO_STEP = state.EventWrite("", b"", 0, (), 0, False)[_STATISTICS:]  # no step, no fields
(
    _F_BUCKET, _F_HOUR, _F_DAY, _F_NATURAL, _F_LATENCY, _F_ONCE, _F_EVENT_BUCKET,
    _F_HISTORY_LATENCY, _F_LIVE,
) = range(9)  # fmt: skip
_NEW_RECIPIENT = layout.CODES["NEW_RECIPIENT"]
_HOUR_MS, _DAY_MS = stats.HOUR_S * 1000, stats.DAY_S * 1000


def pack_context(writes: Sequence[state.MessageWrite], counting: stats.Counting) -> bytes:
    """The ``c`` field of the entry a merge of ``writes`` appends.

    Each event's *fact* is where its changes count and what they count: its live
    bucket, hour and day (placed here, by ``counting``, as ``stats.Changes`` would:
    NOT_LIVE or -1 for none) and its statistics fields. Facts repeat (a busy
    second's events share their bucket, hour, day and most bins), so the entry
    lists each distinct one once and messages name them by number, as they name
    their groups: ``(settings, facts, groups, [(groups, providers, first, [fact
    ...]) ...])``, ``first`` being the fact of changes no single event made (new
    destination recipients: at, and in, the first event, with no step).
    """
    hour_from, day_from = counting.from_ms("hour"), counting.from_ms("day")
    live = counting.live
    facts: dict[tuple[Any, ...], int] = {}
    group_sets: dict[tuple[str, ...], int] = {}

    def place(bucket: int, at: int) -> tuple[int, int, int]:
        return (
            bucket if live else stats.NOT_LIVE,
            at // _HOUR_MS * stats.HOUR_S if 0 <= hour_from <= at else -1,
            at // _DAY_MS * stats.DAY_S if 0 <= day_from <= at else -1,
        )

    def fact(key: tuple[Any, ...]) -> int:
        number = facts.get(key)
        if number is None:
            number = facts[key] = len(facts)
        return number

    not_live = stats.NOT_LIVE
    hour_ms, hour_s, day_ms, day_s = _HOUR_MS, stats.HOUR_S, _DAY_MS, stats.DAY_S
    messages = []
    for write in writes:
        events = write.events
        numbers = []
        for event in events:  # the hot loop: place() and fact() inlined
            at = event[_AT]
            key = (
                event[_BUCKET] if live else not_live,
                at // hour_ms * hour_s if 0 <= hour_from <= at else -1,
                at // day_ms * day_s if 0 <= day_from <= at else -1,
                *event[_STATISTICS:],
            )
            number = facts.get(key)
            if number is None:
                number = facts[key] = len(facts)
            numbers.append(number)
        if events:
            first = fact((*place(events[0][_BUCKET], events[0][_AT]), *_NO_STEP))
        else:
            first = fact((*place(not_live, write.sent_at), *_NO_STEP))
        groups = group_sets.get(write.groups)
        if groups is None:
            groups = group_sets[write.groups] = len(group_sets)
        messages.append((groups, write.providers, first, numbers))
    settings = (counting.now_ms, counting.live, counting.history_days, counting.hourly_days)
    return msgpack.packb((settings, list(facts), list(group_sets), messages), use_bin_type=True)


class _Passing(stats.Admission):
    """Every group counts under its own name: admission is the projection's
    atomic step's (``project.lua``), against what is stored. ``order`` keeps the
    groups in the order they were first counted, which is the order that step
    admits them in (first come)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: dict[str, None] = {}

    def admit(self, group: str) -> str:
        self.order[group] = None
        return group


class _PassingRollup(_Passing, stats.RollupCounters):
    """A rollup's counters, its groups passed through and their order kept."""


@dataclass
class Counted:
    """What a run of entries counts, groups not yet admitted.

    ``live``: bucket -> its counters (``stats.LiveBucket``, groups by dimension);
    ``rollups``: (step, start) -> its counters (flat, ``g:`` fields by group);
    ``admissions``: hour -> the groups its live buckets counted, in first-counted
    order (``admission_order``), as rollups keep theirs;
    ``keep_days``: step -> the longest keep the entries' settings asked for;
    ``now_ms``: the latest merge's clock (what TTLs count from, as the merge's own
    counting did).
    ``entries``: how many were read; ``skipped``: entries that could not be read
    (counted, and passed over: a malformed entry must not stop the projection).
    """

    live: dict[int, stats.LiveBucket] = field(default_factory=dict)
    rollups: dict[tuple[str, int], stats.RollupCounters] = field(default_factory=dict)
    admissions: dict[int, stats.Admission] = field(default_factory=dict)
    keep_days: dict[str, int] = field(default_factory=dict)
    now_ms: int = 0
    entries: int = 0
    skipped: int = 0


def count_entries(entries: Iterable[dict[bytes, bytes]], into: Counted | None = None) -> Counted:
    """Replay log entries (their fields) into counters, in order.

    Changes are tallied first, by everything that decides what they count (their
    live bucket, rollup periods, groups and status step), and each distinct one is
    then counted once with its multiplicity: the same sums as counting them one by
    one (``stats.Changes``), for a fraction of the work when many changes look
    alike, as a busy second's do. Groups meet their admission in the order they
    were first counted either way.
    """
    counted = Counted() if into is None else into
    tally: Counter[tuple[Any, ...]] = Counter()
    for fields in entries:
        counted.entries += 1
        try:
            _tally_entry(fields, counted, tally)
        except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException):
            counted.skipped += 1
    _count_tally(tally, counted)
    return counted


# Tally keys: (ONCE, fact) and (TRANSITION, fact, message groups, domain, provider,
# old, new), facts and groups as the entry lists them (pack_context).
_ONCE, _TRANSITION = 0, 1
_M_GROUPS, _M_PROVIDERS, _M_FIRST, _M_FACTS = range(4)


def _tally_entry(fields: dict[bytes, bytes], counted: Counted, tally: Counter[tuple]) -> None:
    """Tally one entry's changes: by number within the entry (cheap to hash), then
    into ``tally`` by value, in the order first met."""
    settings, facts, group_sets, messages = msgpack.unpackb(
        fields[CONTEXT], raw=False, use_list=False
    )
    now_ms, live, history_days, hourly_days = settings
    counting = stats.Counting(int(now_ms), bool(live), int(history_days), int(hourly_days))
    counted.now_ms = max(counted.now_ms, counting.now_ms)
    for step in stats.STEPS:
        counted.keep_days[step] = max(counted.keep_days.get(step, 0), counting.keep_days(step))
    applied = msgpack.unpackb(fields[APPLIED], raw=False)
    reply = msgpack.unpackb(fields[TRANSITIONS], raw=False)
    local: Counter[tuple[Any, ...]] = Counter()

    def once(message_index: int, event_index: int) -> None:
        number = messages[message_index - 1][_M_FACTS][event_index - 1]
        fact = facts[number]
        if fact[_F_ONCE] or fact[_F_LIVE]:
            local[(_ONCE, number)] += 1

    # In the merge's own order, which admission (first come) depends on: message
    # by message, a message's destination transitions, then each new event
    # counted once before the transitions it made. Both lists are in that order.
    pending = len(applied)
    next_applied = 0
    for at in range(0, len(reply), _REPLY_STRIDE):
        message_index, event_index, domain, old, new = reply[at : at + _REPLY_STRIDE]
        while next_applied < pending and (
            applied[next_applied] < message_index
            or (applied[next_applied] == message_index and applied[next_applied + 1] <= event_index)
        ):
            once(applied[next_applied], applied[next_applied + 1])
            next_applied += 2
        message = messages[message_index - 1]
        number = message[_M_FACTS][event_index - 1] if event_index else message[_M_FIRST]
        # The log names the recipient's domain only (service.dimensions.domain_of).
        provider = message[_M_PROVIDERS].get(domain, OTHER)
        local[(_TRANSITION, number, message[_M_GROUPS], domain, provider, old, new)] += 1
    for at in range(next_applied, pending, 2):
        once(applied[at], applied[at + 1])
    for key, n in local.items():
        if key[0] == _ONCE:
            tally[(_ONCE, facts[key[1]])] += n
        else:
            _, number, groups, domain, provider, old, new = key
            old = None if old == _NEW_RECIPIENT else old
            tally[(_TRANSITION, facts[number], group_sets[groups], domain, provider, old, new)] += n


def _count_tally(tally: Counter[tuple[Any, ...]], counted: Counted) -> None:
    """Count each distinct change of the tally, with its multiplicity, in order."""
    for key, n in tally.items():
        fact = key[1]
        live = _live(counted, fact[_F_BUCKET])
        if key[0] == _ONCE:
            once_fields, live_fields = fact[_F_ONCE], fact[_F_LIVE]
            if once_fields:
                for rollup in _rollups(counted, fact[_F_HOUR], fact[_F_DAY]):
                    rollup.once(once_fields, n)
                if live is not None:
                    live.once(once_fields, n)
            if live is not None:
                for name in live_fields:
                    live.overall[name] += n
            continue
        message_groups, domain, provider, old, new = key[2:]
        groups = (*message_groups, "domain=" + domain, "provider=" + provider)
        natural = fact[_F_NATURAL]
        rollups = _rollups(counted, fact[_F_HOUR], fact[_F_DAY])
        if live is not None:
            names = stats.transition_names(old, new, natural, fact[_F_LATENCY])
            live.transition(groups, names, n)
        if rollups:
            names = stats.transition_names(old, new, natural, fact[_F_HISTORY_LATENCY])
            for rollup in rollups:
                rollup.transition(groups, names, n)


def _live(counted: Counted, bucket: int) -> stats.LiveBucket | None:
    if bucket == stats.NOT_LIVE:
        return None
    counters = counted.live.get(bucket)
    if counters is None:
        hour = stats.admission_hour(bucket)
        admission = counted.admissions.get(hour)
        if admission is None:
            admission = counted.admissions[hour] = _Passing()
        counters = counted.live[bucket] = stats.LiveBucket(admission)
    return counters


def _rollups(counted: Counted, hour: int, day: int) -> list[stats.RollupCounters]:
    targets = []
    for step, start in (("hour", hour), ("day", day)):
        if start >= 0:
            rollup = counted.rollups.get((step, start))
            if rollup is None:
                rollup = counted.rollups[step, start] = _PassingRollup()
            targets.append(rollup)
    return targets


def admission_order(admission: stats.Admission) -> list[str]:
    """The groups an admission met, first counted first (what ``project.lua`` admits
    in that order)."""
    return list(getattr(admission, "order", ()))
