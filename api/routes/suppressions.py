from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.responses import Response, StreamingResponse

from api.auth import actor_of
from api.deps import Address, Instant, RuntimeDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, SuppressionList, SuppressionRemoved
from service import audit, search, suppressions
from service.export import csv_lines
from service.stores import Store
from service.stores.base import SuppressionCursor
from service.timestamps import TimestampError, parse_ms

router = APIRouter()

Reason = Annotated[str | None, Query(pattern="^(bounce|complaint)$")]
_PAGE = 1_000


@router.get("/suppressions", response_model=SuppressionList, responses=ERRORS)
async def list_suppressions(
    store: StoreDep,
    reason: Reason = None,
    since: Instant = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Addresses unsafe to mail again, newest first; ``format=csv`` streams them all."""
    try:
        since_ms = None if since is None else parse_ms(since)
        after = None if cursor is None else search.unpack_cursor(cursor)
    except (TimestampError, search.CursorError) as exc:
        raise HTTPException(422, str(exc)) from exc
    if format == "csv":
        return StreamingResponse(
            _csv(store, reason, since_ms),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
        )
    page, following = await store.suppressions(reason, since_ms, limit, after)
    return OrjsonResponse(
        {
            "items": [entry.view() for entry in page],
            "next_cursor": None if following is None else search.pack_cursor(*following),
        }
    )


@router.delete("/suppressions/{address}", response_model=SuppressionRemoved, responses=ERRORS)
async def remove_suppression(
    store: StoreDep, address: Address, runtime: RuntimeDep, request: Request
) -> OrjsonResponse:
    """The address is safe to mail again (``404`` when it was not suppressed)."""
    wanted = search.recipient_key(address)
    removed = await store.remove_suppression(wanted)
    await runtime.audit.record(
        actor_of(request),
        audit.SUPPRESSION_REMOVED,
        "removed" if removed else "not suppressed",
        address=wanted,
    )
    if not removed:
        raise HTTPException(404, f"{wanted!r} is not suppressed")
    return OrjsonResponse({"address": wanted, "removed": True})


async def _csv(store: Store, reason: str | None, since_ms: int | None) -> AsyncIterator[bytes]:
    yield csv_lines([suppressions.CSV_COLUMNS])
    after: SuppressionCursor | None = None
    while True:
        page, after = await store.suppressions(reason, since_ms, _PAGE, after)
        if page:
            yield csv_lines(entry.row() for entry in page)
        if after is None:
            return
