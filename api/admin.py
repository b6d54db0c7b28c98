"""The admin port (``SES_TRACKER_ADMIN_PORT``): what operators and their tools ask.

``GET /metrics``, ``GET /healthz``, ``GET /readyz`` (whole: store address, failure
texts, forwarding hosts) and ``POST /-/reload``, on ``SES_TRACKER_HOST``'s address
and a port of its own, so an Ingress or load balancer in front of the public port
never publishes them, and a NetworkPolicy can admit Prometheus and the kubelet to
this one alone. No Host check and no token: the port is the protection. What a browser sends is
refused (``403``): a request with ``Origin`` or ``Sec-Fetch-Mode`` (every current
browser sends one of them, on every request) comes from a page, and no page has
business here. Prometheus, the kubelet and curl send neither. That keeps a page
on another site, or one reached by DNS rebinding, from reading the whole
``/readyz`` or asking for a reload through a visitor's browser.

One process (``serve``): a second uvicorn server in the same event loop, serving
this app over the same runtime. ``serve --workers N``: each worker serves it on a
private Unix socket, and the parent serves the admin port itself, answering from
all of them (``api.fleet``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.responses import OrjsonResponse
from api.routes import health, metrics, reload


def bare_admin_app() -> FastAPI:
    """An admin app without routes: no docs or schema, browsers refused. This
    process's (``create_admin_app``) and the parent's of ``--workers`` (``api.fleet``)."""
    admin = FastAPI(
        title="ses-tracker admin",
        default_response_class=OrjsonResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    admin.state.is_admin = True
    admin.add_middleware(NoBrowsers)
    return admin


def create_admin_app() -> FastAPI:
    """The admin routes; ``state.runtime`` is set by the public app's lifespan."""
    admin = bare_admin_app()
    admin.include_router(health.router)
    admin.include_router(metrics.router)
    admin.include_router(reload.router)
    return admin


class NoBrowsers:
    """ASGI middleware: ``403`` to any request a browser made (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope["headers"]}
            if b"origin" in names or b"sec-fetch-mode" in names:
                refused = OrjsonResponse(
                    {"error": "the admin port answers tools, not browsers"}, status_code=403
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AdminListenError(OSError):
    """The admin port cannot be listened on; the message says which and why."""


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (before any server starts, so a port in
    use fails start-up with its reason instead of half a service)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise AdminListenError(
            f"cannot listen on the admin port {host}:{port}: {exc.strerror or exc}; "
            "set SES_TRACKER_ADMIN_PORT to a free port (0 turns it off)"
        ) from None
    sock.set_inheritable(True)
    return sock


def listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, readable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(64)
    return sock


class UnsignalledServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the main one (or to the
    supervisor): it stops when told to."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def admin_server(app: FastAPI) -> UnsignalledServer:
    """A uvicorn server for an admin app (this one, or the fleet's): no lifespan,
    no access log, no proxy headers; a scrape or probe in flight at shutdown gets a
    few seconds, never more, as an open connection must not hold the drain."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return UnsignalledServer(config)


class AdminServer:
    """``app`` served on an already listening socket, in this event loop."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self._server = admin_server(app)
        self._sock = sock
        # uvicorn closes the socket at shutdown; the file of a Unix one stays.
        self._path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="admin")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # its error, if it has one
            raise RuntimeError("the admin server stopped as it started")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        # Waited for, not awaited: a cancellation of the caller stays the caller's.
        _, late = await asyncio.wait({self._task}, timeout=10)
        for task in late:
            task.cancel()
        if self._path:
            with contextlib.suppress(OSError):
                os.unlink(self._path)


@contextlib.asynccontextmanager
async def serving_admin(app: FastAPI, sock: socket.socket | None) -> AsyncIterator[None]:
    """``app`` served on ``sock`` for the block (nothing when ``sock`` is None)."""
    if sock is None:
        yield
        return
    server = AdminServer(app, sock)
    await server.start()
    try:
        yield
    finally:
        await server.stop()
