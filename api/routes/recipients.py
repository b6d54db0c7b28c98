from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Path, Request

from api.auth import actor_of
from api.deps import Address, ClockDep, RuntimeDep, SettingsDep, StoreDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, ErasureAccepted, ErasureProgress, RecipientProfile
from service import audit, erasure_job, profile, search
from service.view import ViewOptions

router = APIRouter()
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
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


@router.delete(
    "/recipients/{address}", status_code=202, response_model=ErasureAccepted, responses=ERRORS
)
async def erase_recipient(
    address: Address, runtime: RuntimeDep, clock_ms: ClockDep, request: Request
) -> OrjsonResponse:
    """Erase ``address`` everywhere (privacy requests), in the background: from every
    kept message, the search index, the suppression list, the forwarding outbox, the
    live stream and alert records (``service.erasure_job``). From this answer on,
    late events of messages sent before it arrive without the address; messages
    sent after it are new data. ``202`` with where to follow the job, whether or
    not anything names the address (the answer does not say who was mailed)."""
    wanted = search.recipient_key(address)
    job = await erasure_job.request(runtime.store, wanted, clock_ms())
    runtime.erasures.wake()
    log.info("recipient_erasure_requested", job=job.id)
    await runtime.audit.record(
        actor_of(request), audit.ERASURE_REQUESTED, "accepted", address=wanted, detail=job.id
    )
    status_url = f"/v1/erasures/{job.id}"
    return OrjsonResponse(
        {"address": wanted, "id": job.id, "status_url": status_url},
        status_code=202,
        headers={"Location": status_url},
    )


@router.get("/erasures/{job_id}", response_model=ErasureProgress, responses=ERRORS)
async def get_erasure(job_id: JobId, store: StoreDep) -> OrjsonResponse:
    """An erasure's progress: ``queued``, ``running`` or ``done``, with how many
    messages named the address and what each other part rewrote. Never the
    address. Kept 30 days after it finished."""
    job = await erasure_job.load(store, job_id)
    if job is None:
        raise HTTPException(404, "no such erasure (unknown, or finished over 30 days ago)")
    return OrjsonResponse(job.public())
