"""`ses-tracker serve` as a child process for the benchmarks."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.process import clean_environment
from tests.support.servers import free_port, wait_for_port


@asynccontextmanager
async def served(settings: dict[str, str] | None = None) -> AsyncIterator[int]:
    """Start `ses-tracker serve` (no SES_TRACKER_* of this shell), yield its port,
    stop it with SIGTERM (it drains) when done."""
    port = free_port()
    env = clean_environment()
    env.update(SES_TRACKER_PORT=str(port), SES_TRACKER_LOG_LEVEL="warning", **(settings or {}))
    script = Path(sys.executable).parent / "ses-tracker"
    server = await asyncio.create_subprocess_exec(
        str(script), "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(wait_for_port, port, 20.0)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 40)
