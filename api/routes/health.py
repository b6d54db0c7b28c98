from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from api.responses import OrjsonResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> OrjsonResponse:
    """The process is alive and serving; says nothing about its dependencies."""
    return OrjsonResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> OrjsonResponse:
    """Ready when the store answers and every configured consumer is connected.

    503 otherwise, so a balancer routes elsewhere; the body says what is wrong.
    """
    store_ok = await runtime.store.ping()
    ready = store_ok and runtime.sources_healthy()
    counters = {
        name: {
            "records": c.records,
            "events": c.events,
            "rejected": c.rejected,
            "ignored": c.ignored,
        }
        for name, c in runtime.pipeline.counters.items()
    }
    body = {
        "status": "ready" if ready else "unavailable",
        "store": store_ok,
        "store_kind": runtime.store.describe(),
        "consumers": {source.name: source.status() for source in runtime.sources},
        "sources": counters,
    }
    return OrjsonResponse(body, status_code=200 if ready else 503)
