from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from api.body import read_limited
from api.deps import PipelineDep, SettingsDep, rate_limited
from api.responses import OrjsonResponse
from api.schemas import ERRORS, ErrorAnswer, IngestAnswer

router = APIRouter()


_ANY_PAYLOAD = {
    "requestBody": {
        "required": True,
        "description": "SES events in any shape the parser reads (see the README).",
        "content": {
            "application/json": {"schema": {}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/events",
    status_code=202,
    response_model=IngestAnswer,
    responses={**ERRORS, 400: {"model": IngestAnswer | ErrorAnswer}},
    dependencies=[Depends(rate_limited)],
    openapi_extra=_ANY_PAYLOAD,
)
async def post_events(
    request: Request, pipeline: PipelineDep, settings: SettingsDep
) -> OrjsonResponse:
    """Ingest any payload the parser accepts (see the README for the shapes).

    202 with per-record errors when anything was readable; 400 when nothing was.
    At most 100 errors and 100 notes are listed; the counts cover every record.
    """
    body = await read_limited(request, settings.max_body_bytes)
    # A full parse pool answers 429 with Retry-After (api.app) rather than queue.
    result = await pipeline.ingest(body, source="http", wait=False)
    answer = {
        "accepted": result.accepted,
        "rejected": result.rejected_count,
        "ignored": result.ignored_count,
        # The first 100 of each; the counts (and codes) cover every record.
        "errors": [
            {"index": i.index, "code": i.code.value, "error": i.reason} for i in result.rejected
        ],
        "error_codes": {code.value: n for code, n in result.codes.items()},
        "notes": [{"index": i.index, "reason": i.reason} for i in result.ignored],
    }
    return OrjsonResponse(answer, status_code=202 if result.readable else 400)
