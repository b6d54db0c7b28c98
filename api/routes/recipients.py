from __future__ import annotations

import structlog
from fastapi import APIRouter, HTTPException

from api.deps import Address, ClockDep, SettingsDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, RecipientErased, RecipientProfile
from service import profile, search
from service.view import ViewOptions

router = APIRouter()
log = structlog.get_logger(__name__)


@router.get("/recipients/{address}", response_model=RecipientProfile, responses=ERRORS)
async def get_recipient(
    address: Address, store: StoreDep, settings: SettingsDep, clock_ms: ClockDep
) -> OrjsonResponse:
    """Every kept message to ``address``: counts per status, the last outcome, whether
    mailing it again is unsafe, and the newest messages. ``404`` when never seen."""
    wanted = search.recipient_key(address)
    hits: list[search.SearchHit] = []
    async for page in search.pages(store.search, search.SearchQuery(recipient=wanted)):
        hits += page
        if len(hits) > profile.MAX_MESSAGES:
            break
    complete = len(hits) <= profile.MAX_MESSAGES
    if not hits:
        raise HTTPException(404, f"no message to {wanted!r} is kept")
    options = ViewOptions(clock_ms(), int(settings.overdue_after_s * 1000))
    # The suppression list remembers beyond the kept messages, and forgets when told.
    suppressed = await store.suppression(wanted)
    hits = hits[: profile.MAX_MESSAGES]
    return OrjsonResponse(profile.profile(wanted, hits, complete, suppressed, options))


@router.delete("/recipients/{address}", response_model=RecipientErased, responses=ERRORS)
async def erase_recipient(address: Address, store: StoreDep) -> OrjsonResponse:
    """Erase ``address`` everywhere (privacy requests): from every kept message, the
    search index and the suppression list. ``404`` when nothing named it."""
    wanted = search.recipient_key(address)
    suppressed = await store.suppression(wanted) is not None
    erased = await store.erase_recipient(wanted)
    if not erased and not suppressed:
        raise HTTPException(404, f"nothing kept names {wanted!r}")
    log.info("recipient_erased", messages=erased, suppression=suppressed)
    return OrjsonResponse({"address": wanted, "messages": erased, "suppression": suppressed})
