"""Run records through parse -> encode -> merge without any server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from service import state, stats
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.parser import parse_payload
from service.view import ViewOptions, message_view

SEEN_MS = 1_700_000_100_000
OPTIONS = ViewOptions(now_ms=1_700_000_200_000, overdue_after_ms=900_000)


def events_of(records: Iterable[dict[str, Any]]):
    result = parse_payload(orjson.dumps(list(records)))
    assert not result.rejected, result.rejected
    return result.events


def changes(
    live: dict[int, Any],
    rollups: dict[tuple[str, int], Any] | None = None,
    now_ms: int = SEEN_MS,
    history_days: int = stats.DEFAULT_HISTORY_DAYS,
    hourly_days: int = stats.DEFAULT_HOURLY_DAYS,
) -> stats.Changes:
    """Counts a fold's changes into ``live`` buckets (and ``rollups``) as a store
    merging at ``now_ms`` would."""
    counting = stats.Counting(now_ms, history_days=history_days, hourly_days=hourly_days)
    return stats.Changes(counting, live, {} if rollups is None else rollups)


def fold(
    batches: Sequence[Sequence[dict[str, Any]]],
    seen_ms: int = SEEN_MS,
    counters: state.MergeObserver | None = None,
    dimensions: Dimensions | None = None,
) -> tuple[dict[str, state.MessageRecord], list[state.Transition]]:
    records: dict[str, state.MessageRecord] = {}
    transitions: list[state.Transition] = []
    for batch in batches:
        if not batch:
            continue
        for write in encode_batch(list(events_of(batch)), seen_ms, dimensions or Dimensions()):
            record = records.setdefault(write.message_id, state.MessageRecord())
            transitions.extend(state.merge(record, write, counters))
    return records, transitions


def summed(buckets: Mapping[int, Counter[str]]) -> Counter[str]:
    """Every live bucket's counters added up."""
    total: Counter[str] = Counter()
    for counters in buckets.values():
        total.update(counters)
    return total


def view(records: Sequence[dict[str, Any]], message_id: str, options: ViewOptions = OPTIONS):
    merged, _ = fold([records])
    return message_view(message_id, merged[message_id], options)


def essence(record: state.MessageRecord) -> tuple:
    """A record without ingest times: what any correct run over the same events holds."""
    from service.codec import decode_event

    events = {name: decode_event(blob)._replace(seen_ms=0) for name, blob in record.blobs.items()}
    return (record.header, record.message_flags, dict(record.recipients), events, record.truncated)
