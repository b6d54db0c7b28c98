"""Fan-out of live frames to websocket clients, never slowed by a slow one.

Transitions from the feed are filtered per distinct filter (clients that asked for
the same thing share one group), batched, and serialized once per group every
``BATCH_S``; a stats frame is computed and serialized once a second for everyone.
Each client has a bounded queue of frames and one writer task whose sends time out.
Nothing on the broadcast path awaits a socket: a client whose queue is full, or
whose send does not complete in time, is closed with 1013 (try again later) and
counted. Frames for one client therefore come at most one per ``BATCH_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket

from service.dimensions import domain_of
from service.state import Transition
from service.timestamps import format_ms

log = structlog.get_logger(__name__)

BATCH_S = 0.05
STATS_EVERY_S = 1.0
TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class LiveFilter:
    message_id: str | None = None
    recipient: str | None = None
    domain: str | None = None
    status: str | None = None

    def matches(self, transition: Transition, domain: str) -> bool:
        return (
            (self.message_id is None or transition.message_id == self.message_id)
            and (self.recipient is None or transition.recipient == self.recipient)
            and (self.domain is None or domain == self.domain)
            and (self.status is None or transition.to_status == self.status)
        )


def _item(transition: Transition) -> dict[str, Any]:
    return {
        "message_id": transition.message_id,
        "recipient": transition.recipient,
        "from": transition.from_status,
        "to": transition.to_status,
        "at": format_ms(transition.at),
        "latency_ms": transition.latency_ms,
    }


class LiveClient:
    def __init__(self, websocket: WebSocket, queue_frames: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self.closed = asyncio.Event()


class Broadcaster:
    def __init__(
        self,
        stats: Callable[[], Awaitable[dict[str, Any]]],
        *,
        queue_frames: int = 64,
        send_timeout_s: float = 5.0,
    ) -> None:
        self._stats = stats
        self._queue_frames = queue_frames
        self._send_timeout_s = send_timeout_s
        self._groups: dict[LiveFilter, set[LiveClient]] = {}
        self._pending: dict[LiveFilter, list[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.dropped_slow = 0

    @property
    def clients(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="live-flush"),
            asyncio.create_task(self._stats_loop(), name="live-stats"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for group in list(self._groups.values()):
            for client in list(group):
                await self._close(client, 1001)

    def publish(self, transitions: Sequence[Transition]) -> None:
        """Feed subscriber: filter into each group's pending batch; never waits."""
        if not self._groups:
            return
        # Each transition's item and domain once, however many groups want it.
        entries = [(t, domain_of(t.recipient), _item(t)) for t in transitions]
        for live_filter in self._groups:
            matching = [item for t, domain, item in entries if live_filter.matches(t, domain)]
            if matching:
                self._pending.setdefault(live_filter, []).extend(matching)

    async def serve(self, websocket: WebSocket, live_filter: LiveFilter) -> None:
        """Run one accepted client until it disconnects or is dropped."""
        client = LiveClient(websocket, self._queue_frames)
        self._groups.setdefault(live_filter, set()).add(client)
        writer = asyncio.create_task(self._write(client), name="live-writer")
        reader = asyncio.create_task(self._read_until_closed(client), name="live-reader")
        try:
            await asyncio.wait(
                {writer, reader, asyncio.ensure_future(client.closed.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (writer, reader):
                task.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
            group = self._groups.get(live_filter)
            if group is not None:
                group.discard(client)
                if not group:
                    del self._groups[live_filter]
                    self._pending.pop(live_filter, None)

    def _offer(self, client: LiveClient, frame: bytes) -> None:
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._drop(client, "queue full")

    def _drop(self, client: LiveClient, why: str) -> None:
        if client.closed.is_set():
            return
        self.dropped_slow += 1
        log.warning("live_client_dropped", reason=why)
        closing = asyncio.ensure_future(self._close(client, TRY_AGAIN_LATER))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _close(self, client: LiveClient, code: int) -> None:
        if client.closed.is_set():
            return
        client.closed.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.websocket.close(code=code), timeout=1.0)

    async def _write(self, client: LiveClient) -> None:
        while True:
            frame = await client.queue.get()
            try:
                await asyncio.wait_for(
                    client.websocket.send_text(frame.decode()), timeout=self._send_timeout_s
                )
            except TimeoutError:
                self._drop(client, "send timed out")
                return
            except Exception:  # the peer went away; the reader ends the session
                client.closed.set()
                return

    async def _read_until_closed(self, client: LiveClient) -> None:
        while True:
            message = await client.websocket.receive()
            if message["type"] == "websocket.disconnect":
                client.closed.set()
                return

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(BATCH_S)
            if not self._pending:
                continue
            pending, self._pending = self._pending, {}
            for live_filter, items in pending.items():
                frame = orjson.dumps({"type": "transitions", "items": items})
                for client in list(self._groups.get(live_filter, ())):
                    self._offer(client, frame)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            if not self._groups:
                continue
            try:
                frame = orjson.dumps({"type": "stats", **(await self._stats())})
            except Exception:  # the store may be down; the next second tries again
                log.warning("live_stats_unavailable", exc_info=True)
                continue
            for group in list(self._groups.values()):
                for client in list(group):
                    self._offer(client, frame)
