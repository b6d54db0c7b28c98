"""Dependencies injected into routes, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.alerts.engine import Alerting
from service.pipeline import Pipeline
from service.runtime import Runtime
from service.settings import Settings
from service.stores import Store


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_store(runtime: RuntimeDep) -> Store:
    return runtime.store


def get_pipeline(runtime: RuntimeDep) -> Pipeline:
    return runtime.pipeline


def get_alerting(runtime: RuntimeDep) -> Alerting:
    return runtime.alerting


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
AlertingDep = Annotated[Alerting, Depends(get_alerting)]


def require_token(request: Request, settings: SettingsDep) -> None:
    """``Authorization: Bearer <SES_TRACKER_API_TOKEN>`` when a token is set."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # compare_digest even on a wrong scheme, so timing says nothing about the token.
    valid = hmac.compare_digest(presented.strip().encode(), expected)
    if scheme.lower() != "bearer" or not valid:
        raise HTTPException(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})
