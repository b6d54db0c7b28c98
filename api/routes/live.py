from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.deps import RuntimeDep, presents_token, same_origin_or_allowed
from api.live import POLICY_VIOLATION, LiveFilter
from service.parser import MAX_ADDRESS_CHARS, MAX_MESSAGE_ID_CHARS
from service.state import STATUSES

router = APIRouter()


@router.websocket("/live")
async def live(websocket: WebSocket, runtime: RuntimeDep) -> None:
    """Live transitions (batched every 50 ms) and stats (every second) as JSON frames.

    Optional filters: ``message_id``, ``recipient``, ``domain``, ``status``. With an
    API token set, pass ``Authorization: Bearer <token>`` or ``?token=<token>``. A
    browser page from another origin is refused unless SES_TRACKER_ALLOWED_ORIGINS
    lists it. Clients are capped in all and per address: one past a cap is closed
    right after the handshake, 1013 (try again later) or 1008 (its own cap).
    """
    settings = runtime.settings
    if not same_origin_or_allowed(websocket, settings) or not presents_token(websocket, settings):
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
    await runtime.live.serve(websocket, live_filter, address)
