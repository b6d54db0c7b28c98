"""The FastAPI application: routes, error shapes, lifespan of the runtime."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import service
from api.admin import create_admin_app, serving_admin
from api.auth import authenticate
from api.exports import ExportSlots
from api.hosts import HostGuard, HostPolicy
from api.live import Broadcaster
from api.responses import OrjsonResponse
from api.routes import (
    alerts,
    audit,
    events,
    health,
    ingest,
    live,
    messages,
    recipients,
    session,
    stats,
    suppressions,
)
from service.access import Keyring
from service.clock import wall_clock_ms
from service.parsing import ParseQueueFull
from service.peers import TrustedProxies
from service.runtime import Runtime
from service.sessions import MemoryRevocations, RedisRevocations, Revocations
from service.settings import Settings
from service.stores import StoreUnavailable

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
# Front-end libraries from the npm registry, vendored with their licence and pinned
# version (README, Front-end libraries).
SWAGGER_UI = "/static/vendor/swagger-ui-dist"

RuntimeHook = Callable[[Runtime], None]


def create_app(
    settings: Settings | None = None,
    *,
    on_start: RuntimeHook | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
    admin_listener: socket.socket | None = None,
) -> FastAPI:
    """Build the app; ``on_start`` may add background work (the demo simulator).

    ``clock_ms`` is the wall clock every part reads (tests set it near their events).
    The admin routes are a second app, ``state.admin_app``, over the same runtime
    (``api.admin``); given ``admin_listener``, the lifespan serves it there.
    """
    settings = settings or Settings()
    admin_app = create_admin_app()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, clock_ms=clock_ms)
        app.state.runtime = admin_app.state.runtime = runtime
        app.state.exports = ExportSlots()
        app.state.revocations = build_revocations(runtime)
        runtime.live = Broadcaster(
            lambda: stats.read_window(runtime.store, 300, clock_ms(), runtime.pipeline.dimensions),
            queue_frames=settings.live_queue_frames,
            send_timeout_s=settings.live_send_timeout_s,
        )
        runtime.metrics.live = runtime.live
        runtime.feed.subscribe(runtime.live.publish, wanted=lambda: runtime.live.clients > 0)
        # Up before the runtime starts and after it stops: probes and scrapes see
        # the start-up and the drain.
        async with serving_admin(admin_app, admin_listener):
            await runtime.start()
            runtime.live.start()
            if on_start is not None:
                on_start(runtime)
            try:
                yield
            finally:
                await runtime.live.stop()
                await runtime.stop()

    app = FastAPI(
        title="ses-tracker",
        version=service.__version__,
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
        # Served below from the vendored Swagger UI (works offline, no CDN); ReDoc
        # would need a CDN: off.
        docs_url=None,
        redoc_url=None,
    )
    # Every token a request may present, and the session key derived from them.
    app.state.keyring = Keyring(
        settings.api_token.get_secret_value() if settings.api_token else None,
        settings.read_token_entries(),
    )
    # One authentication step (api.auth): a token or a session; by the request's
    # method, a read scope or a foreign origin cannot change state.
    v1 = [Depends(authenticate)]
    app.include_router(events.router, prefix="/v1", dependencies=v1, tags=["ingest"])
    app.include_router(messages.router, prefix="/v1", dependencies=v1, tags=["messages"])
    app.include_router(stats.router, prefix="/v1", dependencies=v1, tags=["stats"])
    app.include_router(recipients.router, prefix="/v1", dependencies=v1, tags=["recipients"])
    app.include_router(suppressions.router, prefix="/v1", dependencies=v1, tags=["suppressions"])
    app.include_router(alerts.router, prefix="/v1", dependencies=v1, tags=["alerts"])
    app.include_router(audit.router, prefix="/v1", dependencies=v1, tags=["audit"])
    # Sign-in and sign-out: authenticates by the token posted, or the cookie.
    app.include_router(session.router, prefix="/v1", tags=["session"])
    # Checks the token or session itself (a websocket may pass it as ?token=).
    app.include_router(live.router, prefix="/v1", tags=["live"])
    # Authenticated by SNS signatures and the Firehose access key instead.
    app.include_router(ingest.router, prefix="/v1", tags=["ingest"])
    # /healthz and a /readyz without details (a token shows them); /metrics and the
    # rest are on the admin port.
    app.include_router(health.router, tags=["health"])
    app.state.admin_app = admin_app

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Outermost first (the last added runs first): the Host, Origin and content-type
    # checks see the TCP peer; then uvicorn's proxy headers (serve turns uvicorn's own
    # off) walk X-Forwarded-For from the right past the trusted proxies.
    app.state.hosts = HostPolicy.of(settings)
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    app.add_middleware(
        HostGuard, policy=app.state.hosts, proxies=TrustedProxies(settings.forwarded_allow_ips)
    )

    @app.get("/", include_in_schema=False)
    async def status_page() -> FileResponse:
        """The live status page: served to anyone (a SameSite=Strict cookie is not sent
        on a click from chat); its data calls carry the session the page signs in to."""
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        """Swagger UI from ``static/vendor/swagger-ui-dist`` (README, Front-end
        libraries): nothing loaded from elsewhere."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="ses-tracker API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(
            STATIC / "favicon.ico",
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # One error shape for every status, the framework's own 404/405/422 included.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        return OrjsonResponse(
            {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        # Where and why only: the offending input is the caller's and may be large.
        problems = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", "")}
            for error in exc.errors()[:20]
        ]
        text = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems)
        return OrjsonResponse({"error": f"invalid request: {text}", "problems": problems}, 422)

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> OrjsonResponse:
        # The route's template, not the path: a path may hold an address.
        route = request.scope.get("route")
        log.error("store_unavailable", path=getattr(route, "path", "?"), error=str(exc))
        return OrjsonResponse(
            {"error": "state store unavailable, retry later"},
            status_code=503,
            # Longer after a call that may still run in Redis (service.stores.redis.errors).
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
        )

    @app.exception_handler(ParseQueueFull)
    async def parser_busy(request: Request, exc: ParseQueueFull) -> OrjsonResponse:
        # Every parse slot is taken by big bodies: nothing was read, send it again.
        return OrjsonResponse(
            {"error": "parser busy with large bodies, retry later"},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    return app


def build_revocations(runtime: Runtime) -> Revocations:
    """Signed-out sessions: in Redis (every replica) when there is one."""
    if runtime.keyspace is None:
        return MemoryRevocations()
    return RedisRevocations(runtime.keyspace)
