"""Windowed statistics and history: counts by status, rates, latency percentiles,
overall and per group of every dimension (``service.dimensions``).

Counting follows from what a merge actually changed, so a batch merged twice (a
retry, a replay after a crash) counts once, and every replica adds to the same
numbers: the memory store counts inside its merge (:class:`Changes`); Redis from
the change log its merge appends, applied by a projection with its own checkpoint
(``service.stores.redis.changelog``, ``projection``), with the same classes. A change
counts in up to three places, all keyed by *event* time (the SES timestamp of the
event that made it; send time for Send):

* the live bucket of ``BUCKET_S`` seconds it falls in (:func:`live_bucket`), which
  the live windows sum: an event ahead of the wall clock counts now, one older than
  the longest window (``MAX_WINDOW_S``) in no live bucket at all, so a consumer
  catching up on an hour of backlog puts each change where it happened instead of
  piling the hour into the last minute;
* the UTC hour and the UTC day it falls in (history rollups), kept
  ``history_days``; replays of old archives count here and never in live buckets.

Each bucket and rollup is a map of counters:

* ``c:<status>``: recipients reaching a status (a newly seen recipient counts once
  under ``sent`` too, whatever status it arrives in);
* ``y:<delay type>``: DeliveryDelay events, every one (a recipient delayed three
  times counts three), for delay-spike alerts;
* ``l:<kind>:<bin>``: latency sketches. Bins come from ddsketch's logarithmic
  mapping (relative accuracy 1%), so sketches from any buckets and replicas add up
  by summing counters, and a percentile read from them is within 1% of the exact
  value. Bin ``z`` holds zeros. Ingest lag is live only (a replayed archive's lag
  says nothing about the past);
* ``g:<dimension>=<value>|<counter>``: the same per group (``g:provider=gmail|c:sent``;
  delays as ``g:...|y``), one group per dimension for every change, so each
  dimension's groups add up to the overall figures.

A live bucket keeps its overall figures apart from its groups, and each dimension's
groups apart from the others' (:class:`LiveBucket`; Redis: one hash for the overall
figures, one per dimension), so a read that needs no dimension, or one, touches
only those fields. A rollup is one flat map.

Send-to-step latencies are counted when a recipient reaches the step's status from
the event that brings it there; processing time and ingest lag once per new event.

Cardinality is bounded, because group values come from senders and recipients.
Live buckets share their admission per UTC hour (:func:`admission_hour`): the
buckets of one hour together admit at most ``LIVE_GROUP_CAP`` values per
dimension, first come (:class:`Admission`: an ``a:<group>`` field each, counted in
``n:<dimension>``), and the rest count under ``<dimension>=(other)``. A window of at
most an hour spans two hours, so it holds at most twice the cap per dimension
however many values a flood brings (per bucket admission let an hour's window
hold 360 times the cap). A rollup admits ``HISTORY_GROUP_CAP`` values of its own
(its ``a:``/``n:`` fields live in it). Delay types outside SES's documented set
count as ``Undetermined``. Reads return the busiest ``TOP_GROUPS`` values of a
dimension and fold the rest into ``(other)``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import (
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, NamedTuple

from ddsketch.mapping import LogarithmicMapping

from service import state
from service.dimensions import dimension_of, recipient_groups
from service.events import EventType, SesEvent

BUCKET_S = 10
MAX_WINDOW_S = 3_600
RELATIVE_ACCURACY = 0.01
# History keeps months of sketches per group: coarser bins (5x fewer) are plenty for
# daily percentiles, and are what keeps a year of rollups affordable.
HISTORY_ACCURACY = 0.05
TOP_GROUPS = 50
# Values admitted per dimension per UTC hour of live buckets (Admission).
LIVE_GROUP_CAP = 200
# A rollup holds a whole hour or day, and is kept for months: fewer values apart.
HISTORY_GROUP_CAP = 100
OTHER = "(other)"
NOT_LIVE = -1
HOUR_S = 3_600
DAY_S = 86_400
DEFAULT_HISTORY_DAYS = 400
# Hourly rollups cost 24 times the daily ones: a month of them, as CloudWatch keeps
# fine-grained data for weeks and coarse data for over a year.
DEFAULT_HOURLY_DAYS = 31
# What the rollups of one period are keyed by: (STEP, period start in epoch seconds).
STEPS = {"hour": HOUR_S, "day": DAY_S}
# SES's ten documented DeliveryDelay delayType values (service.diagnosis.DELAY_CODES
# names the same ten).
DELAY_TYPES = frozenset(
    {
        "InternalFailure",
        "General",
        "MailboxFull",
        "SpamDetected",
        "RecipientServerError",
        "IPFailure",
        "TransientCommunicationFailure",
        "BYOIPHostNameLookupUnavailable",
        "SendingDeferral",
        "Undetermined",
    }
)
# Redis keeps a bucket a little longer than the longest window that can read it.
BUCKET_TTL_S = MAX_WINDOW_S + 6 * BUCKET_S

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_MULTIPLIER: float = _MAPPING._multiplier
_OFFSET: float = _MAPPING._offset
_HISTORY_MAPPING = LogarithmicMapping(HISTORY_ACCURACY)
_HISTORY_MULTIPLIER: float = _HISTORY_MAPPING._multiplier
_HISTORY_OFFSET: float = _HISTORY_MAPPING._offset

# The status an event type brings a recipient to, and the latency that step measures.
NATURAL_STEP: dict[EventType, tuple[int, str]] = {
    EventType.DELIVERY: (state.DELIVERED, "send_to_delivery"),
    EventType.DELIVERY_DELAY: (state.DELAYED, "send_to_first_delay"),
    EventType.BOUNCE: (state.BOUNCED, "send_to_bounce"),
    EventType.COMPLAINT: (state.COMPLAINED, "send_to_complaint"),
}
LATENCY_KINDS = (
    "send_to_delivery",
    "send_to_first_delay",
    "send_to_bounce",
    "send_to_complaint",
    "processing_time",
    "ingest_lag",
)
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


class Revisions(NamedTuple):
    """Which live buckets changed since a reader last looked.

    ``sequence`` grows by one with every merge that counts anything, and ``buckets``
    maps each live bucket to the sequence of the merge that last changed it. A
    reader keeping sums of buckets re-reads those whose number moved; a sequence
    lower than before means the store lost its data, and every sum is stale.
    """

    sequence: int
    buckets: dict[int, int]


@dataclass(frozen=True, slots=True)
class Counting:
    """What a merge at ``now_ms`` counts: the live buckets (unless ``live`` is off,
    as for replays of history), the daily rollups of the last ``history_days`` and
    the hourly ones of the last ``hourly_days`` of those (0: none)."""

    now_ms: int
    live: bool = True
    history_days: int = DEFAULT_HISTORY_DAYS
    hourly_days: int = DEFAULT_HOURLY_DAYS

    @property
    def live_bucket(self) -> int:
        """The wall clock's bucket; ``NOT_LIVE`` when nothing is counted live."""
        return bucket_of(self.now_ms) if self.live else NOT_LIVE

    def keep_days(self, step: str) -> int:
        """How many days the ``step`` rollups are kept."""
        return min(self.hourly_days, self.history_days) if step == "hour" else self.history_days

    def from_ms(self, step: str) -> int:
        """Events before this count in no ``step`` rollup; -1 when none are kept."""
        days = self.keep_days(step)
        return self.now_ms - days * DAY_S * 1000 if days else -1

    def rollup_ttl_s(self, step: str, start_s: int) -> int:
        """How long a rollup still has to live: its keep past its period's end."""
        return start_s + STEPS[step] + self.keep_days(step) * DAY_S - self.now_ms // 1000


def bucket_of(ms: int) -> int:
    """The bucket (its start, in epoch seconds) that an instant falls in."""
    return ms // 1000 // BUCKET_S * BUCKET_S


def live_bucket(at_ms: int, now_ms: int) -> int:
    """The live bucket a change made by an event at ``at_ms`` counts in, at ``now_ms``.

    Its own bucket; the current one for an event ahead of the clock (clocks skew, and
    the parser already refused anything far ahead); ``NOT_LIVE`` for one older than
    the longest live window, which no window will ever read.
    """
    now_bucket = bucket_of(now_ms)
    bucket = min(bucket_of(at_ms), now_bucket)
    return bucket if bucket > now_bucket - MAX_WINDOW_S else NOT_LIVE


def window_buckets(now_ms: int, window_s: int) -> tuple[int, int]:
    """The first and last buckets of the last ``window_s`` seconds: whole buckets,
    the current one included."""
    last = bucket_of(now_ms)
    return last - window_s + BUCKET_S, last


def bin_of(ms: int) -> str:
    # LogarithmicMapping.key, inlined (two per event on the hot path): same bins.
    return "z" if ms <= 0 else str(int(math.ceil(math.log(ms, 2) * _MULTIPLIER) + _OFFSET))


def value_of(bin_name: str) -> float:
    return 0.0 if bin_name == "z" else _MAPPING.value(int(bin_name))


def history_bin_of(ms: int) -> str:
    """The history rollups' bin (``HISTORY_ACCURACY``)."""
    if ms <= 0:
        return "z"
    return str(int(math.ceil(math.log(ms, 2) * _HISTORY_MULTIPLIER) + _HISTORY_OFFSET))


def history_value_of(bin_name: str) -> float:
    return 0.0 if bin_name == "z" else _HISTORY_MAPPING.value(int(bin_name))


def hour_of(ms: int) -> int:
    """The start (epoch seconds) of the UTC hour an instant falls in."""
    return ms // 3_600_000 * HOUR_S


def day_of(ms: int) -> int:
    """The start (epoch seconds) of the UTC day an instant falls in."""
    return ms // 86_400_000 * DAY_S


class EventCounters(NamedTuple):
    """What an event adds to the statistics, precomputed where it is encoded."""

    natural: int  # the status the event brings a recipient to (-1: none)
    latency_field: str  # counted when it does (empty without a known send time)
    history_latency_field: str  # the same, in the rollups' coarser bins
    once_fields: tuple[str, ...]  # counted once when the event is new to the store
    live_fields: tuple[str, ...]  # the same, live only: ingest lag, processing time


def event_counters(
    event: SesEvent, seen_ms: int, groups: tuple[str, ...], providers: Mapping[str, str]
) -> EventCounters:
    """``groups`` are the event's message groups, ``providers`` its write's
    (``state.MessageWrite``): a delay counts under them and its recipients'."""
    once: list[str] = []
    live = [f"l:ingest_lag:{bin_of(seen_ms - event.at)}"]
    if event.processing_ms is not None:
        live.append(f"l:processing_time:{bin_of(event.processing_ms)}")
    if event.type is EventType.DELIVERY_DELAY:
        # Every delay, not only a recipient's first: what delay-spike alerts count.
        delay_type = event.details.get("delay_type")
        once.append("y:" + (delay_type if delay_type in DELAY_TYPES else "Undetermined"))
        delayed = dict.fromkeys(groups)
        for address in event.recipients:
            delayed.update(dict.fromkeys(recipient_groups(address, providers)))
        once.extend(f"g:{group}|y" for group in delayed)
    step = NATURAL_STEP.get(event.type)
    if step is None:
        return EventCounters(-1, "", "", tuple(once), tuple(live))
    if not event.mail.sent_at_known:
        return EventCounters(step[0], "", "", tuple(once), tuple(live))
    status, kind = step
    latency = event.at - event.mail.sent_at
    return EventCounters(
        status,
        f"l:{kind}:{bin_of(latency)}",
        f"l:{kind}:{history_bin_of(latency)}",
        tuple(once),
        tuple(live),
    )


def transition_names(old: int | None, new: int, natural: int, latency_field: str) -> list[str]:
    """The counters one status transition adds, overall; each again per group (the
    Lua merge applies the same rule)."""
    names: list[str] = []
    if old is None:
        names.append("c:sent")
    if old is not None or new != state.SENT:
        names.append("c:" + state.STATUSES[new])
    if latency_field and new == natural:
        names.append(latency_field)
    return names


def admission_hour(bucket: int) -> int:
    """The UTC hour whose admission a live bucket shares (epoch seconds)."""
    return bucket // HOUR_S * HOUR_S


def admit(admitted: MutableMapping[str, int], group: str, cap: int) -> str:
    """The group ``group`` counts under: itself, or its dimension's ``(other)`` once
    ``cap`` other values of its dimension are admitted. ``admitted`` holds an
    ``a:<group>`` field per admitted group and ``n:<dimension>``, their count; a
    newly admitted group is added to it. Twin of ``admit`` in ``merge.lua``."""
    if ("a:" + group) in admitted:
        return group
    dimension = dimension_of(group)
    count = admitted.get("n:" + dimension, 0)
    if count >= cap:
        return dimension + "=" + OTHER
    admitted["a:" + group] = 1
    admitted["n:" + dimension] = count + 1
    return group


class Admission(Counter[str]):
    """Which values of each dimension count apart (``a:``/``n:`` fields, :func:`admit`)."""

    group_cap = LIVE_GROUP_CAP

    def admit(self, group: str) -> str:
        return admit(self, group, self.group_cap)


class RollupCounters(Admission):
    """One hour's or day's counters, its own admission fields among them (the
    rollups' stored layout)."""

    group_cap = HISTORY_GROUP_CAP

    def once(self, fields: Iterable[str], n: int = 1) -> None:
        for field in fields:
            if field.startswith("g:"):
                group, _, rest = field[2:].rpartition("|")
                field = "g:" + self.admit(group) + "|" + rest
            self[field] += n

    def transition(self, groups: Iterable[str], names: Sequence[str], n: int = 1) -> None:
        for name in names:
            self[name] += n
        for group in groups:
            prefix = "g:" + self.admit(group) + "|"
            for name in names:
                self[prefix + name] += n


class LiveBucket(Mapping[str, int]):
    """One live bucket's counters: the overall figures apart from each dimension's
    groups, so a read takes only what it needs (:meth:`fields`). Admission is the
    hour's, shared with the hour's other buckets. Reads as one flat map of every
    field, as a store's ``read_buckets`` returns it. Twin of the counting in
    ``merge.lua``."""

    __slots__ = ("admission", "groups", "overall")

    def __init__(self, admission: Admission | None = None) -> None:
        self.overall: Counter[str] = Counter()
        self.groups: dict[str, Counter[str]] = {}
        self.admission = Admission() if admission is None else admission

    def count_group(self, group: str, tail: str, n: int = 1) -> None:
        """``n`` more of the ``tail`` counter (``c:sent``, ``y`` ...) under ``group``,
        as admitted."""
        admitted = self.admission.admit(group)
        dimension = dimension_of(admitted)
        fields = self.groups.get(dimension)
        if fields is None:
            fields = self.groups[dimension] = Counter()
        fields["g:" + admitted + "|" + tail] += n

    def once(self, fields: Iterable[str], n: int = 1) -> None:
        for field in fields:
            if field.startswith("g:"):
                group, _, rest = field[2:].rpartition("|")
                self.count_group(group, rest, n)
            else:
                self.overall[field] += n

    def transition(self, groups: Iterable[str], names: Sequence[str], n: int = 1) -> None:
        for name in names:
            self.overall[name] += n
        for group in groups:
            for name in names:
                self.count_group(group, name, n)

    def fields(self, dimensions: Collection[str] | None = None) -> Counter[str]:
        """The overall figures and the groups of ``dimensions`` (None: every one)."""
        flat = Counter(self.overall)
        for dimension, fields in self.groups.items():
            if dimensions is None or dimension in dimensions:
                flat.update(fields)
        return flat

    def __getitem__(self, field: str) -> int:
        if field.startswith("g:"):
            fields = self.groups.get(dimension_of(field[2:]))
            if fields is None or field not in fields:
                raise KeyError(field)
            return fields[field]
        if field not in self.overall:
            raise KeyError(field)
        return self.overall[field]

    def __iter__(self) -> Iterator[str]:
        yield from self.overall
        for fields in self.groups.values():
            yield from fields

    def __len__(self) -> int:
        return len(self.overall) + sum(len(fields) for fields in self.groups.values())


class Changes:
    """What one merge changed, counted where :class:`Counting` says.

    ``state.merge`` calls it (``state.MergeObserver``). ``live`` maps a bucket to its
    counters, ``rollups`` a ``(step, start)`` to its and ``admissions`` an hour
    (:func:`admission_hour`) to its live buckets' admission; all are the store's
    (``admissions`` may be left to this object when it counts every merge, as a
    test's fold does), and updated in place. ``touched`` lists the live buckets that
    changed, so readers that keep sums of settled buckets know which to read again.
    """

    __slots__ = ("_admissions", "_counting", "_live", "_rollups", "_steps", "touched")

    def __init__(
        self,
        counting: Counting,
        live: dict[int, LiveBucket],
        rollups: dict[tuple[str, int], RollupCounters],
        admissions: dict[int, Admission] | None = None,
    ) -> None:
        self._counting = counting
        self._admissions = {} if admissions is None else admissions
        self._steps = (
            ("hour", hour_of, counting.from_ms("hour")),
            ("day", day_of, counting.from_ms("day")),
        )
        self._live = live
        self._rollups = rollups
        self.touched: set[int] = set()

    def _live_bucket(self, bucket: int) -> LiveBucket | None:
        if bucket == NOT_LIVE or not self._counting.live:
            return None
        counters = self._live.get(bucket)
        if counters is None:
            hour = admission_hour(bucket)
            admission = self._admissions.get(hour)
            if admission is None:
                admission = self._admissions[hour] = Admission()
            counters = self._live[bucket] = LiveBucket(admission)
        self.touched.add(bucket)
        return counters

    def _rollups_of(self, at: int) -> list[RollupCounters]:
        targets: list[RollupCounters] = []
        for step, start_of, from_ms in self._steps:
            if from_ms >= 0 and at >= from_ms:
                key = (step, start_of(at))
                rollup = self._rollups.get(key)
                if rollup is None:
                    rollup = self._rollups[key] = RollupCounters()
                targets.append(rollup)
        return targets

    def once(self, write: state.MessageWrite, event: state.EventWrite) -> None:
        live = self._live_bucket(event.bucket)
        if event.once_fields:
            for rollup in self._rollups_of(event.at):
                rollup.once(event.once_fields)
            if live is not None:
                live.once(event.once_fields)
        if live is not None:
            for field in event.live_fields:
                live.overall[field] += 1

    def unsafe(
        self, write: state.MessageWrite, event: state.EventWrite, address: str, gained: int
    ) -> None:
        """Suppressions are not statistics."""

    def transition(
        self,
        write: state.MessageWrite,
        event: state.EventWrite | None,
        address: str,
        old: int | None,
        new: int,
    ) -> None:
        if event is None:
            # New destination recipients: at, and in, the batch's first event.
            bucket, at, natural, latency, history_latency = (
                write.first_bucket, write.first_at, -1, "", ""
            )  # fmt: skip
        else:
            bucket, at, natural = event.bucket, event.at, event.natural
            latency, history_latency = event.latency_field, event.history_latency_field
        groups = write.groups + recipient_groups(address, write.providers)
        live = self._live_bucket(bucket)
        if live is not None:
            live.transition(groups, transition_names(old, new, natural, latency))
        rollups = self._rollups_of(at)
        if rollups:
            names = transition_names(old, new, natural, history_latency)
            for rollup in rollups:
                rollup.transition(groups, names)


def summarize(counters: Mapping[str, int], window_s: int, by: str | None = None) -> dict[str, Any]:
    """The ``/v1/stats`` body (README, HTTP API) from a window's summed counters."""
    overall, groups = split_groups(counters)
    body = {
        "window_s": window_s,
        **section(overall),
        "by_domain": {
            domain: section(fields) for domain, fields in busiest(groups.get("domain", {})).items()
        },
        "relative_accuracy": RELATIVE_ACCURACY,
    }
    if by is not None:
        body["by"] = {
            "dimension": by,
            "groups": [
                {"key": key, **section(fields)}
                for key, fields in busiest(groups.get(by, {})).items()
            ],
        }
    return body


def summarize_buckets(
    buckets: Iterable[Mapping[str, int]], window_s: int, by: str | None = None
) -> dict[str, Any]:
    """:func:`summarize` of the sum of a window's buckets."""
    total: Counter[str] = Counter()
    for counters in buckets:
        total.update(counters)
    return summarize(total, window_s, by)


def busiest(
    per_group: Mapping[str, Counter[str]], top: int = TOP_GROUPS
) -> dict[str, Counter[str]]:
    """The ``top`` groups by sent, then one ``(other)`` group summing the rest."""
    ranked = sorted(
        ((d, f) for d, f in per_group.items() if d != OTHER),
        key=lambda item: (-item[1].get("c:sent", 0), item[0]),
    )
    groups = dict(ranked[:top])
    rest: Counter[str] = Counter(per_group.get(OTHER, Counter()))
    for _, fields in ranked[top:]:
        rest.update(fields)
    if rest:
        groups[OTHER] = rest
    return groups


# Figures, as opposed to admission bookkeeping (a:, n:) or fields of older formats.
_FIGURES = ("c:", "l:", "y:")


def split_groups(
    counters: Mapping[str, int],
) -> tuple[Counter[str], dict[str, dict[str, Counter[str]]]]:
    """Overall counters, and per dimension, per value, from the ``g:`` fields."""
    overall: Counter[str] = Counter()
    per_dimension: dict[str, dict[str, Counter[str]]] = {}
    for field, count in counters.items():
        head = field[:2]
        if head == "g:":
            group, _, rest = field[2:].rpartition("|")
            dimension, _, value = group.partition("=")
            values = per_dimension.setdefault(dimension, {})
            fields = values.get(value)
            if fields is None:
                fields = values[value] = Counter()
            fields[rest] += count
        elif head in _FIGURES:
            overall[field] += count
    return overall, per_dimension


def section(fields: Mapping[str, int], value: Callable[[str], float] = value_of) -> dict[str, Any]:
    """Counts, rates and latency percentiles of one set of counters (``value``: the
    sketch mapping its bins came from; history's is ``history_value_of``)."""
    counts = {name: fields.get("c:" + name, 0) for name in state.STATUSES}
    sent = counts["sent"]
    rates = {
        "bounce": counts["bounced"] / sent if sent else None,
        "complaint": counts["complained"] / sent if sent else None,
    }
    bins: dict[str, dict[str, int]] = {}
    for field, count in fields.items():
        if field.startswith("l:"):
            kind, _, bin_name = field[2:].rpartition(":")
            bins.setdefault(kind, {})[bin_name] = count
    latency = {
        kind: percentiles(bins[kind].items(), value) for kind in LATENCY_KINDS if kind in bins
    }
    return {"counts": counts, "rates": rates, "latency_ms": latency}


def percentiles(
    bins: Iterable[tuple[str, int]], value: Callable[[str], float] = value_of
) -> dict[str, int]:
    """count, p50, p90, p99 and max (ms) from sketch bins, ranks as ddsketch ranks."""
    ordered = sorted(
        ((value(name), count) for name, count in bins if count > 0), key=lambda b: b[0]
    )
    total = sum(count for _, count in ordered)
    result = {"count": total}
    if not total:
        return result
    for label, q in QUANTILES.items():
        result[label] = round(_rank_value(ordered, total, q))
    result["max"] = round(ordered[-1][0])
    return result


def quantile(bins: Iterable[tuple[str, int]], q: float) -> tuple[int, float | None]:
    """(count, the ``q`` quantile in ms) from sketch bins; None when they are empty."""
    ordered = sorted(
        ((value_of(name), count) for name, count in bins if count > 0), key=lambda b: b[0]
    )
    total = sum(count for _, count in ordered)
    return total, (_rank_value(ordered, total, q) if total else None)


def _rank_value(ordered: list[tuple[float, int]], total: int, q: float) -> float:
    rank = q * (total - 1)
    seen = 0
    for value, count in ordered:
        seen += count
        if seen > rank:
            return value
    return ordered[-1][0]
