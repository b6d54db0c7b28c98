"""Windowed statistics: counts by status, rates, latency percentiles, per domain.

Counting happens inside the store's merge, from what actually changed, so a batch
merged twice (a retry, a replay after a crash) counts once, and every replica adds
to the same numbers. Time is cut into buckets of ``BUCKET_S`` seconds of *event*
time: a change counts in the bucket of the SES timestamp of the event that made it
(send time for Send), so a consumer catching up on an hour of backlog puts each
change where it happened instead of piling the hour into the last minute. The wall
clock bounds it (:func:`live_bucket`): an event ahead of the clock counts now, one
older than the longest window (``MAX_WINDOW_S``) counts in no live bucket at all
(it still changes its message's state). A window is the sum of its buckets. Each
bucket is a flat map of counters:

* ``c:<status>``, ``d:<domain>|c:<status>``: recipients reaching a status (a newly
  seen recipient counts once under ``sent`` too, whatever status it arrives in);
* ``y:<delay type>``, ``d:<domain>|y``: DeliveryDelay events, every one (a recipient
  delayed three times counts three), for delay-spike alerts;
* ``l:<kind>:<bin>``, ``d:<domain>|l:<kind>:<bin>``: latency sketches. Bins come from
  ddsketch's logarithmic mapping (relative accuracy 1%), so sketches from any
  buckets and replicas add up by summing counters, and a percentile read from them
  is within 1% of the exact value. Bin ``z`` holds zeros.

Send-to-step latencies are counted when a recipient reaches the step's status from
the event that brings it there; processing time and ingest lag once per new event.

Cardinality is bounded, because domains (and delay types) come from senders: a
bucket admits at most ``MAX_DOMAINS_PER_BUCKET`` domains, first come (marked by an
``a:<domain>`` field, counted in ``n:domains``); the rest count under ``(other)``.
Delay types outside SES's documented set count as ``Undetermined``. Reads return the
busiest ``TOP_DOMAINS`` domains and fold the rest into ``(other)``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ddsketch.mapping import LogarithmicMapping

from service import state
from service.events import EventType, SesEvent

BUCKET_S = 10
MAX_WINDOW_S = 3_600
RELATIVE_ACCURACY = 0.01
TOP_DOMAINS = 50
MAX_DOMAINS_PER_BUCKET = 200
OTHER = "(other)"
NOT_LIVE = -1
ADMITTED = "n:domains"
# SES's documented DeliveryDelay delayType values.
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
        "Undetermined",
    }
)
# Redis keeps a bucket a little longer than the longest window that can read it.
BUCKET_TTL_S = MAX_WINDOW_S + 6 * BUCKET_S

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_MULTIPLIER: float = _MAPPING._multiplier
_OFFSET: float = _MAPPING._offset

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


def domain_of(address: str) -> str:
    _, at, domain = address.rpartition("@")
    return domain if at and domain else "(none)"


def event_counters(event: SesEvent, seen_ms: int) -> tuple[int, str, tuple[str, ...]]:
    """What an event adds to the statistics, precomputed where the event is encoded.

    Returns the status the event naturally brings a recipient to (-1 for none), the
    latency bin field counted when it does, and the fields counted once when the
    event is new to the store.
    """
    once = [f"l:ingest_lag:{bin_of(seen_ms - event.at)}"]
    if event.processing_ms is not None:
        once.append(f"l:processing_time:{bin_of(event.processing_ms)}")
    if event.type is EventType.DELIVERY_DELAY:
        # Every delay, not only a recipient's first: what delay-spike alerts count.
        delay_type = event.details.get("delay_type")
        once.append("y:" + (delay_type if delay_type in DELAY_TYPES else "Undetermined"))
        once.extend({f"d:{domain_of(address)}|y" for address in event.recipients})
    step = NATURAL_STEP.get(event.type)
    if step is None:
        return -1, "", tuple(once)
    if not event.mail.sent_at_known:
        return step[0], "", tuple(once)
    status, kind = step
    return status, f"l:{kind}:{bin_of(event.at - event.mail.sent_at)}", tuple(once)


def transition_fields(
    address: str,
    from_status: int | None,
    to_status: int,
    natural: int,
    latency_field: str,
    domain: str | None = None,
) -> list[str]:
    """The counters one status transition adds (the Lua merge applies the same rule).

    ``domain`` is the group the address counts under (``(other)`` past the bucket's
    cap); by default the address's own domain.
    """
    prefix = "d:" + (domain if domain is not None else domain_of(address)) + "|"
    fields: list[str] = []
    if from_status is None:
        fields += ["c:sent", prefix + "c:sent"]
    if from_status is not None or to_status != state.SENT:
        name = "c:" + state.STATUSES[to_status]
        fields += [name, prefix + name]
    if latency_field and to_status == natural:
        fields += [latency_field, prefix + latency_field]
    return fields


class BucketCounters(Counter[str]):
    """One bucket's counters. Twin of the counting in ``merge.lua``, domain
    admission included."""

    def admit(self, domain: str) -> str:
        """The group ``domain`` counts under in this bucket: itself, or (other)."""
        if "a:" + domain in self:
            return domain
        if self[ADMITTED] >= MAX_DOMAINS_PER_BUCKET:
            return OTHER
        self["a:" + domain] = 1
        self[ADMITTED] += 1
        return domain

    def once(self, fields: Iterable[str]) -> None:
        for field in fields:
            if field.startswith("d:"):
                domain, _, rest = field[2:].partition("|")
                field = "d:" + self.admit(domain) + "|" + rest
            self[field] += 1

    def transition(
        self, address: str, old: int | None, new: int, natural: int, latency_field: str
    ) -> None:
        domain = self.admit(domain_of(address))
        self.update(transition_fields(address, old, new, natural, latency_field, domain))


class LiveCounters:
    """What one merge changed, counted into the live buckets it falls in.

    ``state.merge`` calls it (``state.ChangeCounter``); changes in ``NOT_LIVE`` are
    not counted. ``touched`` lists the buckets that changed, so readers that keep
    sums of settled buckets know which to read again.
    """

    __slots__ = ("_buckets", "touched")

    def __init__(self, buckets: dict[int, BucketCounters]) -> None:
        self._buckets = buckets
        self.touched: set[int] = set()

    def _bucket(self, bucket: int) -> BucketCounters:
        counters = self._buckets.get(bucket)
        if counters is None:
            counters = self._buckets[bucket] = BucketCounters()
        self.touched.add(bucket)
        return counters

    def once(self, bucket: int, fields: Iterable[str]) -> None:
        if bucket != NOT_LIVE and fields:
            self._bucket(bucket).once(fields)

    def transition(
        self,
        bucket: int,
        address: str,
        old: int | None,
        new: int,
        natural: int,
        latency_field: str,
    ) -> None:
        if bucket != NOT_LIVE:
            self._bucket(bucket).transition(address, old, new, natural, latency_field)


def summarize(counters: Mapping[str, int], window_s: int) -> dict[str, Any]:
    """The ``/v1/stats`` body (README, HTTP API) from a window's summed counters."""
    overall, per_domain = split_domains(counters)
    return {
        "window_s": window_s,
        **_section(overall),
        "by_domain": {domain: _section(fields) for domain, fields in busiest(per_domain).items()},
        "relative_accuracy": RELATIVE_ACCURACY,
    }


def busiest(
    per_domain: Mapping[str, Counter[str]], top: int = TOP_DOMAINS
) -> dict[str, Counter[str]]:
    """The ``top`` domains by sent, then one ``(other)`` group summing the rest."""
    ranked = sorted(
        ((d, f) for d, f in per_domain.items() if d != OTHER),
        key=lambda item: -item[1].get("c:sent", 0),
    )
    groups = dict(ranked[:top])
    rest: Counter[str] = Counter(per_domain.get(OTHER, Counter()))
    for _, fields in ranked[top:]:
        rest.update(fields)
    if rest:
        groups[OTHER] = rest
    return groups


def split_domains(counters: Mapping[str, int]) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Overall counters, and per-domain ones from the ``d:<domain>|`` fields."""
    overall: Counter[str] = Counter()
    per_domain: dict[str, Counter[str]] = {}
    for field, count in counters.items():
        if field.startswith("d:"):
            domain, _, rest = field[2:].partition("|")
            per_domain.setdefault(domain, Counter())[rest] += count
        elif field[:2] not in ("a:", "n:"):  # admission bookkeeping, not figures
            overall[field] += count
    return overall, per_domain


def _section(fields: Mapping[str, int]) -> dict[str, Any]:
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
    latency = {kind: percentiles(bins[kind].items()) for kind in LATENCY_KINDS if kind in bins}
    return {"counts": counts, "rates": rates, "latency_ms": latency}


def percentiles(bins: Iterable[tuple[str, int]]) -> dict[str, int]:
    """count, p50, p90, p99 and max (ms) from sketch bins, ranks as ddsketch ranks."""
    ordered = sorted(
        ((value_of(name), count) for name, count in bins if count > 0), key=lambda b: b[0]
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
