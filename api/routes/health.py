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
    """Ready when the store answers; 503 otherwise, so a balancer routes elsewhere."""
    store_ok = await runtime.store.ping()
    sources = {
        name: {
            "records": c.records,
            "events": c.events,
            "rejected": c.rejected,
            "ignored": c.ignored,
        }
        for name, c in runtime.pipeline.counters.items()
    }
    body = {
        "status": "ready" if store_ok else "unavailable",
        "store": store_ok,
        "store_kind": runtime.store.describe(),
        "sources": sources,
    }
    return OrjsonResponse(body, status_code=200 if store_ok else 503)
