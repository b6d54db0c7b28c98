"""Streamed exports (``format=csv|ndjson``), a few at a time.

An export walks every match; the client's reading paces it (the response waits on
the socket), but each running export still reads the store, so a handful may run
at once and the next is told to retry (429) instead of queueing behind them.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator

from fastapi import HTTPException
from starlette.responses import StreamingResponse

from service import export
from service.search import SearchQuery
from service.stores import Store
from service.view import ViewOptions

MAX_RUNNING = 2


class ExportSlots:
    def __init__(self, limit: int = MAX_RUNNING) -> None:
        self.limit = limit
        self.running = 0

    def stream(
        self, store: Store, query: SearchQuery, fmt: str, options: ViewOptions
    ) -> StreamingResponse:
        if self.running >= self.limit:
            raise HTTPException(429, f"{self.limit} exports are running; retry when one ends")
        self.running += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running -= 1

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in export.export_lines(store, query, fmt, options):
                    yield chunk
            finally:
                release()

        lines = body()
        # A response dropped before its body starts never runs that finally.
        weakref.finalize(lines, release)
        return StreamingResponse(
            lines,
            media_type=export.MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="ses-tracker-messages.{fmt}"',
                "Cache-Control": "no-store",
            },
        )
