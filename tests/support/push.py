"""An in-process app with both push endpoints open, and a local SNS signer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from api.app import create_app
from consumers.sns import SnsVerifier
from service.clock import wall_clock_ms
from service.runtime import Runtime
from service.settings import Settings
from tests.support import ses
from tests.support.sns import LocalSigner, notification

T = ses.SENT_AT
FIREHOSE_KEY = "fh-key-for-tests"
FIREHOSE_KEY_HEADER = {"X-Amz-Firehose-Access-Key": FIREHOSE_KEY}


def open_settings(**overrides: Any) -> Settings:
    """Both push endpoints opened, as a deployment that uses them configures them."""
    values: dict[str, Any] = {
        "api_token": "api-secret",
        "sns_topic_arns": "*",
        "firehose_access_key": FIREHOSE_KEY,
        **overrides,
    }
    return Settings(_env_file=None, **values)


class Harness:
    def __init__(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        signer: LocalSigner,
        admin: httpx.AsyncClient,
    ) -> None:
        self.client = client
        self.admin = admin  # the admin routes: /metrics, whole /readyz, /-/reload
        self.runtime = runtime
        self.signer = signer
        self.confirmed: list[str] = []


async def harness_for(settings: Settings) -> AsyncIterator[Harness]:
    signer = LocalSigner()
    holder: dict[str, Runtime] = {}
    app = create_app(settings, on_start=lambda runtime: holder.setdefault("runtime", runtime))
    async with app.router.lifespan_context(app):
        runtime = holder["runtime"]
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=FIREHOSE_KEY_HEADER
            ) as client,
            admin_client(app) as admin,
        ):
            harness = Harness(client, runtime, signer, admin)
            runtime.sns_verifier = SnsVerifier(fetch=signer.fetch)

            async def confirm(url: str) -> None:
                harness.confirmed.append(url)

            runtime.confirm_subscription = confirm
            yield harness


@asynccontextmanager
async def in_process(
    settings: Settings, clock_ms: Callable[[], int] = wall_clock_ms
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The app for ``settings``, started, with a client of its public routes and
    one of its admin routes."""
    app = create_app(settings, clock_ms=clock_ms)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as public,
            admin_client(app) as admin,
        ):
            yield public, admin


def admin_client(app: FastAPI) -> httpx.AsyncClient:
    """A client of ``app``'s admin routes (``api.admin``), in process."""
    transport = httpx.ASGITransport(app=app.state.admin_app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


def signed(harness: Harness, record: dict, message_id: str = "mid-1", version: str = "2") -> bytes:
    return orjson.dumps(
        harness.signer.sign(notification(orjson.dumps(record).decode(), message_id), version)
    )
