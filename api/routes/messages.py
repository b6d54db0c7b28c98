from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import SettingsDep, StoreDep
from api.responses import OrjsonResponse
from service.parser import MAX_MESSAGE_ID_CHARS
from service.pipeline import wall_clock_ms
from service.view import ViewOptions, message_view

router = APIRouter()

MessageId = Annotated[str, Path(min_length=1, max_length=MAX_MESSAGE_ID_CHARS)]


@router.get("/messages/{message_id}")
async def get_message(
    message_id: MessageId, store: StoreDep, settings: SettingsDep
) -> OrjsonResponse:
    record = await store.get(message_id)
    if record is None:
        raise HTTPException(404, f"unknown message id {message_id!r}")
    options = ViewOptions(wall_clock_ms(), int(settings.overdue_after_s * 1000))
    return OrjsonResponse(message_view(message_id, record, options))
