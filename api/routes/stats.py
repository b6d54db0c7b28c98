from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ClockDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, StatsAnswer
from service import stats
from service.stores import Store

router = APIRouter()


async def read_window(store: Store, window_s: int, now_ms: int) -> dict[str, Any]:
    """The last ``window_s`` seconds of event time: whole 10 s buckets, the current
    one included."""
    first, last = stats.window_buckets(now_ms, window_s)
    return stats.summarize(await store.read_stats(first, last), window_s)


@router.get("/stats", response_model=StatsAnswer, responses=ERRORS)
async def get_stats(
    store: StoreDep,
    clock_ms: ClockDep,
    window_s: Annotated[int, Query(ge=stats.BUCKET_S, le=stats.MAX_WINDOW_S)] = 300,
) -> OrjsonResponse:
    """Counts, rates and latency percentiles over the last ``window_s`` seconds."""
    return OrjsonResponse(await read_window(store, window_s, clock_ms()))
