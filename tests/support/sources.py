"""Running a consumer in the test's event loop, and draining it."""

from __future__ import annotations

import asyncio

from consumers.base import Source


class RunningSource:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.task = asyncio.create_task(source.run())

    async def stop(self) -> None:
        self.source.stop()
        await asyncio.wait_for(self.task, 20)
