from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.responses import OrjsonResponse
from service import stats
from service.pipeline import wall_clock_ms

router = APIRouter()


@router.get("/stats")
async def get_stats(
    store: StoreDep,
    window_s: Annotated[int, Query(ge=stats.BUCKET_S, le=stats.MAX_WINDOW_S)] = 300,
) -> OrjsonResponse:
    """Counts, rates and latency percentiles over the last ``window_s`` seconds.

    Windows are whole buckets of ingestion time (10 s), the current one included.
    """
    last = stats.bucket_of(wall_clock_ms())
    first = last - window_s + stats.BUCKET_S
    counters = await store.read_stats(first, last)
    return OrjsonResponse(stats.summarize(counters, window_s))
