from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.responses import Response

from api.deps import (
    ClockDep,
    DimensionsDep,
    ExportSlotsDep,
    Instant,
    SettingsDep,
    StoreDep,
)
from api.exports import client_of
from api.responses import OrjsonResponse
from api.schemas import ERRORS, MessageView, SearchAnswer
from service import search, state
from service.dimensions import domain_of
from service.parser import MAX_MESSAGE_ID_CHARS
from service.providers import PROVIDERS
from service.timestamps import TimestampError, parse_ms
from service.view import ViewOptions, message_summary, message_view

router = APIRouter()

MessageId = Annotated[str, Path(min_length=1, max_length=MAX_MESSAGE_ID_CHARS)]
Status = Annotated[str | None, Query(pattern="^(" + "|".join(state.STATUSES) + ")$")]
Value = Annotated[str | None, Query(min_length=1, max_length=256)]


@router.get("/messages", response_model=SearchAnswer, responses=ERRORS)
async def search_messages(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    clock_ms: ClockDep,
    exports: ExportSlotsDep,
    dimensions: DimensionsDep,
    recipient: Annotated[str | None, Query(min_length=1, max_length=320)] = None,
    status: Status = None,
    since: Instant = None,
    until: Instant = None,
    limit: Annotated[int, Query(ge=1, le=search.MAX_LIMIT)] = search.DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    overdue: bool = False,
    configuration_set: Value = None,
    identity: Value = None,
    provider: Annotated[str | None, Query(pattern="^(" + "|".join(PROVIDERS) + ")$")] = None,
    domain: Value = None,
    tag: Annotated[
        str | None, Query(max_length=400, pattern="^[^:]+:.*$", description="NAME:VALUE")
    ] = None,
    bounce_type: Annotated[
        str | None, Query(pattern="^(Permanent|Transient|Undetermined)$")
    ] = None,
    format: Annotated[str | None, Query(pattern="^(csv|ndjson)$")] = None,
) -> Response:
    """Messages sent in ``[since, until)``, newest first, filtered by recipient,
    status and any dimension.

    With ``recipient``, ``status`` is that recipient's; otherwise the message's.
    ``overdue=true`` keeps messages with a recipient still sent/delayed past
    ``SES_TRACKER_OVERDUE_AFTER_S``. ``format=csv|ndjson`` streams every match
    instead of one page (``limit`` and ``cursor`` do not apply).
    """
    try:
        until_ms = None if until is None else parse_ms(until)
        if overdue:
            deadline = clock_ms() - int(settings.overdue_after_s * 1000)
            until_ms = deadline if until_ms is None else min(until_ms, deadline)
        tag_name, _, tag_value = (tag or "").partition(":")
        query = search.SearchQuery(
            recipient=recipient,
            status=status,
            since_ms=None if since is None else parse_ms(since),
            until_ms=until_ms,
            limit=limit,
            after=None if cursor is None else search.decode_cursor(cursor),
            waiting=overdue,
            configuration_set=configuration_set,
            identity=None if identity is None else identity.lower(),
            tag=(tag_name, tag_value) if tag else None,
            domain=None if domain is None else domain.lower(),
            provider=provider,
            resolved=dimensions.resolved,
            bounce_type=bounce_type,
        )
    except (TimestampError, search.CursorError) as exc:
        raise HTTPException(422, str(exc)) from exc
    options = ViewOptions(clock_ms(), int(settings.overdue_after_s * 1000))
    if format is not None:
        return exports.stream(store, query, format, options, client=client_of(request))
    page = await store.search(query)
    return OrjsonResponse(
        {
            "items": [message_summary(h.message_id, h.record, options) for h in page.hits],
            "next_cursor": None
            if page.next_after is None
            else search.encode_cursor(page.next_after),
        }
    )


@router.get("/messages/{message_id}", response_model=MessageView, responses=ERRORS)
async def get_message(
    message_id: MessageId,
    store: StoreDep,
    settings: SettingsDep,
    clock_ms: ClockDep,
    dimensions: DimensionsDep,
) -> OrjsonResponse:
    record = await store.get(message_id)
    if record is None:
        raise HTTPException(404, f"unknown message id {message_id!r}")
    options = ViewOptions(clock_ms(), int(settings.overdue_after_s * 1000))
    # Every recipient's suppression in one batched read, not one round trip each.
    suppressed = await store.suppressions_of(sorted(record.recipients))
    providers = {a: dimensions.provider(domain_of(a)) for a in record.recipients}
    return OrjsonResponse(message_view(message_id, record, options, suppressed, providers))
