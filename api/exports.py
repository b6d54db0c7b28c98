"""Streamed exports (``format=csv|ndjson``), a few at a time, one per client.

An export walks every match; the client's reading paces it (the response waits on
the socket), but each running export still holds a slot and reads the store, so a
handful may run at once, at most :data:`PER_CLIENT` for one client (its IPv4
address or IPv6 /64, as the rate limit counts it), and the next is told to retry
(429) instead of queueing behind them.

A reader too slow to finish cannot hold its slot either: an export is cut (the
connection closed before the response ends) past :data:`DEADLINE_S`, or once,
after the first :data:`GRACE_S`, it has delivered less than :data:`MIN_RATE_BPS`
on average (:class:`Pace`). A send the client does not read is not waited for
past that point: the wait itself is bounded.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import StreamingResponse
from starlette.types import Send

from service import export
from service.search import SearchQuery
from service.stores import Store
from service.view import ViewOptions

log = structlog.get_logger(__name__)

MAX_RUNNING = 4
PER_CLIENT = 1
# A 100,000-message CSV is ~30 MB: minutes at the slowest rate allowed.
DEADLINE_S = 900.0
MIN_RATE_BPS = 16 * 1024
GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class Pace:
    """How long an export may take, and how slowly it may be read. Pure."""

    deadline_s: float = DEADLINE_S
    min_rate_bps: float = MIN_RATE_BPS
    grace_s: float = GRACE_S

    def allowance_s(self, elapsed_s: float, delivered: int) -> float:
        """How much longer the export may take to have ``delivered`` bytes out (the
        bytes of the send under way included); 0 or less: cut it now."""
        by_rate = max(self.grace_s, delivered / self.min_rate_bps)
        return min(self.deadline_s, by_rate) - elapsed_s


class PacedStream(StreamingResponse):
    """A streaming response whose every send is bounded by its :class:`Pace`."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        pace: Pace,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: object,
    ) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.pace = pace
        self.clock = clock
        self.cut: str | None = None

    async def stream_response(self, send: Send) -> None:
        started = self.clock()
        delivered = 0
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async for chunk in self.body_iterator:
                body = chunk if isinstance(chunk, bytes) else bytes(chunk)
                delivered += len(body)
                allowed = self.pace.allowance_s(self.clock() - started, delivered)
                try:
                    if allowed <= 0:
                        raise TimeoutError
                    message = {"type": "http.response.body", "body": body, "more_body": True}
                    await asyncio.wait_for(send(message), allowed)
                except TimeoutError:
                    # Returning without the last body message makes the server close
                    # the connection: the client sees a cut export, not a whole one.
                    elapsed = self.clock() - started
                    self.cut = "deadline" if elapsed >= self.pace.deadline_s else "too slow"
                    log.warning(
                        "export_cut", reason=self.cut, elapsed_s=round(elapsed, 1), bytes=delivered
                    )
                    return
        finally:
            closing = getattr(self.body_iterator, "aclose", None)
            if closing is not None:
                await closing()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def client_of(connection: HTTPConnection) -> str:
    """The key a client's exports are counted under: the rate limit's when it keyed
    this request, else the peer's address."""
    keyed = getattr(connection.state, "rate_limit_client", None)
    if keyed:
        return str(keyed)
    return connection.client.host if connection.client else "unknown"


class ExportSlots:
    def __init__(
        self, limit: int = MAX_RUNNING, per_client: int = PER_CLIENT, pace: Pace | None = None
    ) -> None:
        self.limit = limit
        self.per_client = per_client
        self.pace = pace or Pace()
        self.running = 0
        self.by_client: dict[str, int] = {}

    def stream(
        self,
        store: Store,
        query: SearchQuery,
        fmt: str,
        options: ViewOptions,
        client: str = "unknown",
    ) -> StreamingResponse:
        if self.by_client.get(client, 0) >= self.per_client:
            raise HTTPException(429, "an export of yours is running; retry when it ends")
        if self.running >= self.limit:
            raise HTTPException(429, f"{self.limit} exports are running; retry when one ends")
        self.running += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running -= 1
                left = self.by_client.pop(client, 1) - 1
                if left:
                    self.by_client[client] = left

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in export.export_lines(store, query, fmt, options):
                    yield chunk
            finally:
                release()

        lines = body()
        # A response dropped before its body starts never runs that finally.
        weakref.finalize(lines, release)
        return PacedStream(
            lines,
            self.pace,
            media_type=export.MEDIA_TYPES[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="ses-tracker-messages.{fmt}"',
                "Cache-Control": "no-store",
            },
        )
