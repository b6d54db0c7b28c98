from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, StatsAnswer
from service import stats
from service.clock import wall_clock_ms
from service.stores import Store

router = APIRouter()


async def read_window(store: Store, window_s: int) -> dict[str, Any]:
    """The last ``window_s`` seconds: whole 10 s buckets, the current one included."""
    first, last = stats.window_buckets(wall_clock_ms(), window_s)
    return stats.summarize(await store.read_stats(first, last), window_s)


@router.get("/stats", response_model=StatsAnswer, responses=ERRORS)
async def get_stats(
    store: StoreDep,
    window_s: Annotated[int, Query(ge=stats.BUCKET_S, le=stats.MAX_WINDOW_S)] = 300,
) -> OrjsonResponse:
    """Counts, rates and latency percentiles over the last ``window_s`` seconds."""
    return OrjsonResponse(await read_window(store, window_s))
