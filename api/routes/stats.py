from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.deps import ClockDep, DimensionsDep, Instant, SettingsDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, HistoryAnswer, StatsAnswer
from service import history, stats
from service.dimensions import Dimensions, UnknownDimension
from service.stores import Store
from service.timestamps import TimestampError, parse_ms

router = APIRouter()

Dimension = Annotated[
    str | None,
    Query(
        max_length=140,
        description="configuration_set, identity, domain, provider or tag:NAME "
        "(NAME listed in SES_TRACKER_TAG_DIMENSIONS)",
    ),
]


async def read_window(
    store: Store,
    window_s: int,
    now_ms: int,
    dimensions: Dimensions,
    by: str | None = None,
) -> dict[str, Any]:
    """The last ``window_s`` seconds of event time: whole 10 s buckets, the current
    one included; ``dimensions`` lists what ``by`` may name (the status page's
    selector reads it).

    Only the groups the answer shows are read (recipient domains, and ``by``'s),
    and they are added up and summarized in a worker thread, so an hour of buckets
    never holds the event loop."""
    first, last = stats.window_buckets(now_ms, window_s)
    wanted = ("domain",) if by is None or by == "domain" else ("domain", by)
    buckets = await store.read_buckets(range(first, last + 1, stats.BUCKET_S), wanted)
    body = await asyncio.to_thread(stats.summarize_buckets, buckets, window_s, by)
    body["dimensions"] = list(dimensions.names)
    return body


def checked(dimensions: Dimensions, by: str | None) -> str | None:
    try:
        return None if by is None else dimensions.check(by)
    except UnknownDimension as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/stats", response_model=StatsAnswer, responses=ERRORS)
async def get_stats(
    store: StoreDep,
    clock_ms: ClockDep,
    dimensions: DimensionsDep,
    window_s: Annotated[int, Query(ge=stats.BUCKET_S, le=stats.MAX_WINDOW_S)] = 300,
    by: Dimension = None,
) -> OrjsonResponse:
    """Counts, rates and latency percentiles over the last ``window_s`` seconds; with
    ``by``, also per group of that dimension (the busiest 50, then ``(other)``)."""
    by = checked(dimensions, by)
    return OrjsonResponse(await read_window(store, window_s, clock_ms(), dimensions, by))


@router.get("/history", response_model=HistoryAnswer, responses=ERRORS)
async def get_history(
    store: StoreDep,
    settings: SettingsDep,
    clock_ms: ClockDep,
    dimensions: DimensionsDep,
    by: Dimension = None,
    step: Annotated[str, Query(pattern="^(hour|day)$")] = "day",
    since: Instant = None,
    until: Instant = None,
    top: Annotated[int, Query(ge=1, le=history.MAX_TOP)] = history.DEFAULT_TOP,
) -> OrjsonResponse:
    """Daily figures, kept ``SES_TRACKER_HISTORY_DAYS``, or hourly ones, kept
    ``SES_TRACKER_HISTORY_HOURLY_DAYS``: by default the last 30 days (48 hours by
    hour); with ``by``, per group of that dimension (the ``top`` busiest of the
    range, then ``(other)``)."""
    by = checked(dimensions, by)
    try:
        until_ms = clock_ms() if until is None else parse_ms(until)
        since_ms = until_ms - history.DEFAULT_SPAN_MS[step] if since is None else parse_ms(since)
        starts = history.periods(step, since_ms, until_ms, _slot_group_count(store))
    except (TimestampError, history.RangeError) as exc:
        raise HTTPException(422, str(exc)) from exc
    rollups = await store.read_rollups(step, starts, history.Fields(by))
    # Summed up in a worker thread: a long range of groups never holds the event loop.
    points = await asyncio.to_thread(history.points, starts, rollups, by, top)
    return OrjsonResponse(
        {
            "step": step,
            "by": by,
            "history_days": settings.history_days,
            "hourly_days": min(settings.history_hourly_days, settings.history_days),
            "points": points,
        }
    )


def _slot_group_count(store: Store) -> int:
    """How many slot groups each period is read from (1 but on a Redis Cluster)."""
    truth = getattr(store, "truth", store)
    return len(getattr(truth, "slot_groups", ())) or 1
