"""The service under a real uvicorn server, inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn

from api.admin import listen_tcp
from api.app import create_app
from service.clock import wall_clock_ms
from service.runtime import Runtime
from service.settings import Settings
from tests.support.servers import free_port, wait_for_port


class Server:
    def __init__(self, base: str, runtime: Runtime, admin: str) -> None:
        self.base = base
        self.ws = base.replace("http://", "ws://")
        self.runtime = runtime
        self.admin = admin  # the admin port's base: /metrics, whole /readyz, /-/reload


@asynccontextmanager
async def serving(
    settings: Settings,
    on_start: Callable[[Runtime], None] | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> AsyncIterator[Server]:
    """The app under a real uvicorn on a free port, in this event loop."""
    holder: dict[str, Runtime] = {}
    port = free_port()

    def started(runtime: Runtime) -> None:
        holder["runtime"] = runtime
        if on_start is not None:
            on_start(runtime)

    admin_port = free_port()
    admin = listen_tcp("127.0.0.1", admin_port)
    app = create_app(settings, on_start=started, clock_ms=clock_ms, admin_listener=admin)
    # As serve runs it: the app reads the proxy headers itself (api.app).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(wait_for_port, port)
        while "runtime" not in holder:  # noqa: ASYNC110 - set by the app's lifespan
            await asyncio.sleep(0.01)
        yield Server(
            f"http://127.0.0.1:{port}", holder["runtime"], f"http://127.0.0.1:{admin_port}"
        )
    finally:
        server.should_exit = True
        await task
