from __future__ import annotations

import hmac

from fastapi import APIRouter, WebSocket

from api.live import LiveFilter

router = APIRouter()

POLICY_VIOLATION = 1008


@router.websocket("/live")
async def live(websocket: WebSocket) -> None:
    """Live transitions (batched every 50 ms) and stats (every second) as JSON frames.

    Optional filters: ``message_id``, ``recipient``, ``domain``, ``status``. With an
    API token set, pass ``Authorization: Bearer <token>`` or ``?token=<token>``.
    """
    runtime = websocket.app.state.runtime
    token = runtime.settings.api_token
    if token is not None:
        scheme, _, presented = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            presented = websocket.query_params.get("token", "")
        if not hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode()):
            await websocket.close(code=POLICY_VIOLATION)
            return
    query = websocket.query_params
    live_filter = LiveFilter(
        message_id=query.get("message_id") or None,
        recipient=(query.get("recipient") or "").lower() or None,
        domain=(query.get("domain") or "").lower() or None,
        status=query.get("status") or None,
    )
    await websocket.accept()
    await runtime.live.serve(websocket, live_filter)
