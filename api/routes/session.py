"""One sign-in for browsers: a token posted once, a signed session cookie after.

The page asks for the token once, posts it here and never keeps it; its API calls
and websocket then carry the cookie. The cookie is ``HttpOnly`` (scripts cannot
read it), ``SameSite=Strict`` (no other site's page or link sends it) and ``Secure``
when the service is reached over https; it holds a signed session id, never the
token (service.access). Sign-out revokes the id server-side (service.sessions).
"""

from __future__ import annotations

import orjson
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import Response

from api.auth import (
    SESSION_COOKIE,
    foreign_origin,
    keyring_of,
    principal_of,
    revocations_of,
    session_claims,
)
from api.body import read_limited
from api.deps import ClockDep, RuntimeDep, SettingsDep, rate_limited
from api.responses import OrjsonResponse
from api.schemas import ERRORS
from service import audit
from service.access import SESSION_TTL_MS
from service.settings import Settings
from service.timestamps import format_ms

router = APIRouter()
log = structlog.get_logger(__name__)

# A token is at most a few hundred characters; the body is JSON around one.
MAX_BODY_BYTES = 4_096
_JSON_TYPES = ("", "application/json")

_SIGN_IN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["token"],
                    "properties": {"token": {"type": "string", "maxLength": 1024}},
                }
            }
        },
    }
}


def _secure(request: Request, settings: Settings) -> bool:
    # uvicorn rewrites the scheme from X-Forwarded-Proto only for trusted proxies
    # (FORWARDED_ALLOW_IPS), so "https" here is the public URL's or a trusted word.
    public = (settings.public_url or "").lower()
    return public.startswith("https://") or request.url.scheme == "https"


def _refuse_foreign(request: Request) -> None:
    # Sign-in and sign-out change state too: another site must not sign a visitor
    # into its own account (login CSRF) or out of theirs.
    if foreign_origin(request):
        raise HTTPException(403, "this origin may not change state here")


async def _presented_token(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise HTTPException(415, 'send the token as JSON: {"token": "..."}')
    body = await read_limited(request, MAX_BODY_BYTES)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body is not JSON") from None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise HTTPException(422, 'the body needs a "token" string')
    return token


@router.post(
    "/session",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
    dependencies=[Depends(rate_limited)],
    openapi_extra=_SIGN_IN_BODY,
)
async def sign_in(
    request: Request, settings: SettingsDep, clock_ms: ClockDep, runtime: RuntimeDep
) -> Response:
    """Exchange a token (API or read-only) for a 12-hour session cookie.

    ``204`` with ``Set-Cookie``; ``401`` for a wrong token (no cookie). With no API
    token set the service is open: ``204`` and no cookie is needed.
    """
    _refuse_foreign(request)
    token = await _presented_token(request)
    keyring = keyring_of(request)
    if keyring.open:
        return Response(status_code=204)
    grant = keyring.match(token)
    if grant is None:
        log.info("session_refused", client=request.client.host if request.client else None)
        raise HTTPException(401, "wrong token")
    claims, cookie = keyring.open_session(grant, clock_ms())
    log.info("session_opened", scope=claims.scope, name=claims.name)
    await runtime.audit.record(
        claims.name or audit.OPEN_ACTOR, audit.SESSION_OPENED, "opened", detail=claims.scope
    )
    response = Response(status_code=204)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_TTL_MS // 1000,
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/session", responses=ERRORS)
async def who_am_i(request: Request) -> OrjsonResponse:
    """The caller's access: ``{"scope": "write"|"read", "name", "expires_at"}``.

    ``expires_at`` is the session's expiry, null for a token or an open service
    (``name`` null there too); ``401`` without a valid token or session.
    """
    principal = await principal_of(request)
    if principal is None:
        raise HTTPException(401, "not signed in", {"WWW-Authenticate": "Bearer"})
    session = principal.session
    return OrjsonResponse(
        {
            "scope": principal.scope,
            "name": principal.name,
            "expires_at": None if session is None else format_ms(session.expires_ms),
        }
    )


@router.delete("/session", status_code=204, response_class=Response, responses=ERRORS)
async def sign_out(
    request: Request, settings: SettingsDep, clock_ms: ClockDep, runtime: RuntimeDep
) -> Response:
    """Revoke the session (a replayed cookie is then ``401``) and clear the cookie.
    ``204`` also when there was none to revoke."""
    _refuse_foreign(request)
    claims = await session_claims(request)
    if claims is not None:
        await revocations_of(request).revoke(claims.id, claims.expires_ms, clock_ms())
        log.info("session_closed", scope=claims.scope, name=claims.name)
        await runtime.audit.record(
            claims.name or audit.OPEN_ACTOR, audit.SESSION_CLOSED, "signed out", detail=claims.scope
        )
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    return response
