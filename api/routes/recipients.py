from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import ClockDep, SettingsDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, RecipientProfile
from service import profile, search
from service.view import ViewOptions

router = APIRouter()

Address = Annotated[str, Path(min_length=3, max_length=320)]


@router.get("/recipients/{address}", response_model=RecipientProfile, responses=ERRORS)
async def get_recipient(
    address: Address, store: StoreDep, settings: SettingsDep, clock_ms: ClockDep
) -> OrjsonResponse:
    """Every kept message to ``address``: counts per status, the last outcome, whether
    mailing it again is unsafe, and the newest messages. ``404`` when never seen."""
    wanted = search.recipient_key(address)
    query = search.SearchQuery(recipient=wanted, limit=search.MAX_LIMIT)
    hits: list[search.SearchHit] = []
    complete = True
    while True:
        page = await store.search(query)
        hits += page.hits
        if len(hits) > profile.MAX_MESSAGES or (
            len(hits) == profile.MAX_MESSAGES and page.next_after is not None
        ):
            complete = False
            break
        if page.next_after is None:
            break
        query = dataclasses.replace(query, after=page.next_after)
    if not hits:
        raise HTTPException(404, f"no message to {wanted!r} is kept")
    options = ViewOptions(clock_ms(), int(settings.overdue_after_s * 1000))
    body = profile.profile(wanted, hits[: profile.MAX_MESSAGES], complete, options)
    # The suppression list remembers beyond the kept messages, and forgets when told.
    kept = await store.suppression(wanted)
    body["suppressed"] = (
        None
        if kept is None
        else {
            key: value
            for key, value in kept.view().items()
            if key in ("reason", "since", "message_id")
        }
    )
    return OrjsonResponse(body)
