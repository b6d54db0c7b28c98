"""The one authentication step: who is calling, and may they change state.

A request presents one of:
- ``Authorization: Bearer <token>``: the API token (scope ``write``) or a read-only
  token (scope ``read``); a websocket may pass ``?token=`` instead, as browsers cannot
  set headers on one (nothing else reads a token from a URL);
- the session cookie (``st_session``) that ``POST /v1/session`` set, carrying the
  scope and name of the token that opened it.

Every ``/v1`` route but the push endpoints and ``/v1/session`` itself depends on
:func:`authenticate`, which also refuses, by the request's method, every
state-changing call from a read scope or from a foreign browser origin (the CSRF
defence). A route added to those routers cannot forget it, and
``tests/integration/test_access.py`` walks the OpenAPI schema to prove it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from api.hosts import PEER, HostPolicy
from service import audit
from service.access import Keyring, Scope, SessionClaims
from service.peers import is_loopback
from service.sessions import Revocations

SESSION_COOKIE = "st_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: ``name`` is ``api``, a read token's name, or None when
    the service is open (no API token set)."""

    scope: Scope
    name: str | None
    session: SessionClaims | None = None


OPEN = Principal("write", None)


def keyring_of(connection: HTTPConnection) -> Keyring:
    return connection.app.state.keyring


def revocations_of(connection: HTTPConnection) -> Revocations:
    return connection.app.state.revocations


def _now_ms(connection: HTTPConnection) -> int:
    return connection.app.state.runtime.clock_ms()


def bearer_of(connection: HTTPConnection) -> str | None:
    """The token a request presents, or None when it presents none."""
    scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return presented
    if connection.scope["type"] == "websocket" and "token" in connection.query_params:
        return connection.query_params["token"]
    return None


def token_principal(connection: HTTPConnection) -> Principal | None:
    """The caller by the token it presents (no session): OPEN when the service is
    open, None without a valid token."""
    keyring = keyring_of(connection)
    if keyring.open:
        return OPEN
    presented = bearer_of(connection)
    grant = keyring.match(presented) if presented is not None else None
    return None if grant is None else Principal(grant.scope, grant.name)


async def session_claims(connection: HTTPConnection) -> SessionClaims | None:
    """The request's session, signed, unexpired and not signed out; else None."""
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    now_ms = _now_ms(connection)
    claims = keyring_of(connection).verify(cookie, now_ms)
    if claims is None or await revocations_of(connection).revoked(claims.id, now_ms):
        return None
    return claims


async def principal_of(connection: HTTPConnection) -> Principal | None:
    """Who the request acts as, or None: unauthenticated.

    A presented token decides alone (a wrong one is refused even beside a valid
    cookie, so a script's mistake is never hidden by a browser's session).
    """
    if keyring_of(connection).open:
        return OPEN
    if bearer_of(connection) is not None:
        return token_principal(connection)
    claims = await session_claims(connection)
    if claims is None:
        return None
    return Principal(claims.scope, claims.name, claims)


def foreign_origin(connection: HTTPConnection) -> bool:
    """A browser's ``Origin`` is not one that may change state here: neither the
    public URL's origin, an allowed host's, a loopback page's, nor in
    SES_TRACKER_ALLOWED_ORIGINS (``api.hosts.HostPolicy``). Never compared with the
    request's own ``Host``: a DNS-rebinding page chooses that.

    Browsers send Origin on cross-origin requests and every websocket handshake;
    clients that are not browsers send none and are not affected.
    """
    origin = connection.headers.get("origin")
    if origin is None:
        return False
    policy: HostPolicy = connection.app.state.hosts
    return not policy.origin_allowed(origin, is_loopback(connection.scope.get(PEER)))


def refuse_unless_may_change(request: Request, principal: Principal) -> None:
    """403 for a state-changing method from a read scope or a foreign origin."""
    if request.method in SAFE_METHODS:
        return
    if foreign_origin(request):
        raise HTTPException(403, "this origin may not change state here")
    if principal.scope != "write":
        raise HTTPException(
            403, f"read-only access ({principal.name}) cannot change state: use the API token"
        )


async def authenticate(request: Request) -> Principal:
    """The dependency of every token-guarded route: 401 without a valid token or
    session, 403 on a state-changing method it may not use. The principal is kept on
    ``request.state.principal`` (for audit and logs)."""
    principal = await principal_of(request)
    if principal is None:
        raise HTTPException(
            401,
            "missing or invalid bearer token or session",
            {"WWW-Authenticate": "Bearer"},
        )
    refuse_unless_may_change(request, principal)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def actor_of(request: Request) -> str:
    """Who the audit log says asked: the token's name (``api``, a read token's), or
    ``open`` when the service has no token."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return (principal.name if principal is not None else None) or audit.OPEN_ACTOR
