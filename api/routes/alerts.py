from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import AlertingDep
from api.responses import OrjsonResponse
from api.schemas import ERRORS, AlertsAnswer
from service.alerts.lifecycle import Phase
from service.alerts.payloads import generic

router = APIRouter()


@router.get("/alerts", response_model=AlertsAnswer, responses=ERRORS)
async def list_alerts(
    alerting: AlertingDep,
    state: Literal["firing", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> OrjsonResponse:
    """Notices sent (fired, repeated, resolved), newest first; ``firing``: what fires now."""
    history = await alerting.alert_store.history(500 if state else limit)
    items = [generic(alert) for alert in history if state is None or alert.state.value == state]
    records = await alerting.alert_store.records()
    firing = [
        generic(record.alert)
        for record in sorted(records.values(), key=lambda r: -r.since_ms)
        if record.phase is Phase.FIRING and record.alert is not None
    ]
    return OrjsonResponse({"items": items[:limit], "firing": firing})
