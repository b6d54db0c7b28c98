from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.auth import foreign_origin, principal_of
from api.deps import RuntimeDep
from api.live import POLICY_VIOLATION, TRY_AGAIN_LATER, LiveFilter
from service.parser import MAX_ADDRESS_CHARS, MAX_MESSAGE_ID_CHARS
from service.state import STATUSES
from service.stores import StoreUnavailable

router = APIRouter()


@router.websocket("/live")
async def live(websocket: WebSocket, runtime: RuntimeDep) -> None:
    """Live transitions (batched every 50 ms) and stats (every second) as JSON frames.

    Optional filters: ``message_id``, ``recipient``, ``domain``, ``status``. With an
    API token set, pass ``Authorization: Bearer <token>`` or ``?token=<token>`` (the
    API token or a read-only one), or carry the session cookie of ``/v1/session``. A
    browser page from another origin is refused unless SES_TRACKER_ALLOWED_ORIGINS
    lists it. Clients are capped in all and per address: one past a cap is closed
    right after the handshake, 1013 (try again later) or 1008 (its own cap).
    """
    if foreign_origin(websocket):
        await websocket.close(code=POLICY_VIOLATION)
        return
    try:
        principal = await principal_of(websocket)
    except StoreUnavailable:
        # Sign-outs are read from the store: without it, ask the client to retry.
        await websocket.close(code=TRY_AGAIN_LATER)
        return
    if principal is None:
        await websocket.close(code=POLICY_VIOLATION)
        return
    query = websocket.query_params
    status = query.get("status") or None
    live_filter = LiveFilter(
        message_id=(query.get("message_id") or "")[:MAX_MESSAGE_ID_CHARS] or None,
        recipient=(query.get("recipient") or "")[:MAX_ADDRESS_CHARS].lower() or None,
        domain=(query.get("domain") or "")[:MAX_ADDRESS_CHARS].lower() or None,
        status=status if status in STATUSES else None,
    )
    address = websocket.client.host if websocket.client else "unknown"
    if runtime.live_demand is not None:
        # Before the handshake: what any replica merges from now on reaches this page.
        await runtime.live_demand.announce()
    await runtime.live.serve(websocket, live_filter, address)
