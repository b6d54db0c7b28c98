"""``GET /v1/audit``: every state change other than ingest, newest first
(``service.audit``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import Instant, RuntimeDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, AuditPage
from service import audit, search
from service.timestamps import TimestampError, parse_ms

router = APIRouter()

# An entry id (``<ms>-<n>``), as the page before gave it.
Cursor = Annotated[str | None, Query(pattern=r"^\d{1,15}-\d{1,19}$")]


@router.get("/audit", response_model=AuditPage, responses=ERRORS)
async def list_audit(
    runtime: RuntimeDep,
    since: Instant = None,
    address: Annotated[str | None, Query(min_length=3, max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
    cursor: Cursor = None,
) -> OrjsonResponse:
    """Erasures requested, suppressions removed, sessions opened and signed out, and
    configuration reloads: when, who (the token's name), what, on what, and the
    result; newest first, ``limit`` a page, ``next_cursor`` for the next.

    Addresses appear only as a keyed hash (the one their tombstone has), never in
    clear; ``address=`` lists the entries about one address, hashed the same way.
    Kept 400 days, at most 100,000 entries (with Redis; without, this process's last
    10,000)."""
    try:
        since_ms = None if since is None else parse_ms(since)
    except TimestampError as exc:
        raise HTTPException(422, str(exc)) from exc
    target = None
    if address is not None:
        target = await runtime.audit.hash_address(search.recipient_key(address))
    query = audit.AuditQuery(since_ms=since_ms, before=cursor, limit=limit, target=target)
    entries, following = await runtime.audit.log.page(query)
    return OrjsonResponse(
        {
            "items": [entry.view(entry_id) for entry_id, entry in entries],
            "next_cursor": following,
        }
    )
