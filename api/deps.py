"""Dependencies injected into routes, as ``Annotated`` aliases."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from starlette.requests import HTTPConnection

from api.auth import foreign_origin, token_principal
from api.exports import ExportSlots
from api.hosts import FORWARDED, PEER
from service.alerts.engine import Alerting
from service.dimensions import Dimensions
from service.peers import client_key, is_loopback
from service.pipeline import Pipeline
from service.runtime import Runtime
from service.settings import Settings
from service.stores import Store


def get_runtime(connection: HTTPConnection) -> Runtime:
    return connection.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_store(runtime: RuntimeDep) -> Store:
    return runtime.store


def get_pipeline(runtime: RuntimeDep) -> Pipeline:
    return runtime.pipeline


def get_alerting(runtime: RuntimeDep) -> Alerting:
    return runtime.alerting


def get_clock(runtime: RuntimeDep) -> Callable[[], int]:
    return runtime.clock_ms


def get_dimensions(runtime: RuntimeDep) -> Dimensions:
    return runtime.pipeline.dimensions


def get_export_slots(connection: HTTPConnection) -> ExportSlots:
    return connection.app.state.exports


# Parameters several routes take, checked alike.
Instant = Annotated[
    str | None, Query(max_length=40, description="ISO-8601, e.g. 2026-11-23T10:00:00Z")
]
Address = Annotated[str, Path(min_length=3, max_length=320)]

SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
AlertingDep = Annotated[Alerting, Depends(get_alerting)]
# The service's wall clock (epoch ms): one for every part, so tests can set it.
ClockDep = Annotated[Callable[[], int], Depends(get_clock)]
DimensionsDep = Annotated[Dimensions, Depends(get_dimensions)]
ExportSlotsDep = Annotated[ExportSlots, Depends(get_export_slots)]


def presents_token(connection: HTTPConnection, settings: Settings) -> bool:
    """Whether the caller presents a token the service accepts, the API token or a
    read-only one (always true when no API token is set). Sessions are not read here:
    see ``api.auth.authenticate``, the one authentication step of the API."""
    return token_principal(connection) is not None


def require_token(request: Request, settings: SettingsDep) -> None:
    """401 unless the request presents a token (``Authorization: Bearer``)."""
    if not presents_token(request, settings):
        raise HTTPException(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})


def rate_limited(request: Request, runtime: RuntimeDep) -> None:
    """429 with Retry-After past the client's rate (SES_TRACKER_RATE_LIMIT_*).

    The client is the one uvicorn's proxy headers name when the TCP peer is a
    trusted proxy (FORWARDED_ALLOW_IPS), else the peer; IPv6 clients count by /64.
    Loopback is exempt (unless SES_TRACKER_RATE_LIMIT_LOOPBACK) only as the TCP
    peer itself, and never for a request whose X-Forwarded-For was believed: there
    a loopback client is whatever the chain says, not this machine.
    """
    limiter = runtime.rate_limiter
    if limiter is None:
        return
    client = request.client.host if request.client else "unknown"
    peer = request.scope.get(PEER, client)
    forwarded = request.scope.get(FORWARDED, False)
    if not runtime.settings.rate_limit_loopback and not forwarded and is_loopback(peer):
        return
    key = client_key(client)
    # api.body charges the same client for its body's size once it is read.
    request.state.rate_limit_client = key
    wait_s = limiter.take(key, time.monotonic())
    if wait_s > 0:
        raise HTTPException(
            429, "too many requests from this client", {"Retry-After": str(math.ceil(wait_s))}
        )


def same_origin_or_allowed(connection: HTTPConnection, settings: Settings) -> bool:
    """A browser's ``Origin`` is this service's own, or listed in ALLOWED_ORIGINS
    (``api.auth.foreign_origin``)."""
    return not foreign_origin(connection)
