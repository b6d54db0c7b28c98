"""Fan-out of live frames to websocket clients, never slowed by a slow one.

The merge path only appends its transitions to a bounded list (``publish``); every
``BATCH_S`` the flush task matches them to the filters clients asked for, batches,
and serializes once per distinct filter (clients that asked for the same thing share
one group); a stats frame is computed and serialized once a second for everyone.
Matching looks each transition up under the few filter shapes in use (which of
message id, recipient, domain and status a filter sets), so its cost is per
transition and match, never per filter.

Each client has a bounded queue of frames and one writer task whose sends time out.
Nothing on the broadcast path awaits a socket: a client whose queue is full, or
whose send does not complete in time, is closed with 1013 (try again later) and
counted. Frames for one client therefore come at most one per ``BATCH_S``. The
number of clients is capped, in all and per client address: a client past a cap is
closed right after the handshake (1013 past the total, 1008 past its own) and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket

from service.dimensions import domain_of
from service.state import Transition
from service.tasks import cancel_and_wait
from service.timestamps import format_ms

log = structlog.get_logger(__name__)

BATCH_S = 0.05
STATS_EVERY_S = 1.0
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
# Connected clients, in all and per client address (as the rate limits see it).
# Each holds a queue of up to SES_TRACKER_LIVE_QUEUE_FRAMES frames and two tasks.
MAX_CLIENTS = 1_000
MAX_CLIENTS_PER_ADDRESS = 20
# Transitions waiting for the next flush; past this the oldest are left out (and
# counted): live frames are a view, the store has every change.
MAX_PENDING = 100_000

# A filter's key: (message_id, recipient, domain, status), None where unset.
FilterKey = tuple[str | None, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class LiveFilter:
    message_id: str | None = None
    recipient: str | None = None
    domain: str | None = None
    status: str | None = None

    @property
    def key(self) -> FilterKey:
        return (self.message_id, self.recipient, self.domain, self.status)

    @property
    def shape(self) -> tuple[bool, bool, bool, bool]:
        """Which fields the filter sets."""
        return (
            self.message_id is not None,
            self.recipient is not None,
            self.domain is not None,
            self.status is not None,
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


class FilterIndex:
    """Filters by their exact key; a transition is matched by building, for each
    shape in use, the key a filter of that shape would need, and looking it up.

    A filter matches when every field it sets equals the transition's, so the
    filters a transition matches are exactly those keys: at most 16 lookups per
    transition (one per shape in use), whatever the number of filters.
    """

    def __init__(self) -> None:
        self._filters: dict[FilterKey, LiveFilter] = {}
        self._shapes: Counter[tuple[bool, bool, bool, bool]] = Counter()
        # Dictionary lookups made by match(): the work, counted without a clock.
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._filters)

    def add(self, live_filter: LiveFilter) -> None:
        if live_filter.key not in self._filters:
            self._filters[live_filter.key] = live_filter
            self._shapes[live_filter.shape] += 1

    def remove(self, live_filter: LiveFilter) -> None:
        if self._filters.pop(live_filter.key, None) is not None:
            self._shapes[live_filter.shape] -= 1
            if not self._shapes[live_filter.shape]:
                del self._shapes[live_filter.shape]

    def match(self, transitions: Sequence[Transition]) -> dict[LiveFilter, list[dict[str, Any]]]:
        """Each filter's items, for the filters at least one transition matches."""
        matched: dict[LiveFilter, list[dict[str, Any]]] = {}
        shapes = list(self._shapes)
        for transition in transitions:
            fields = (
                transition.message_id,
                transition.recipient,
                domain_of(transition.recipient),
                transition.to_status,
            )
            item: dict[str, Any] | None = None
            for live_filter in self._lookup(fields, shapes):
                item = item or _item(transition)  # once, however many filters want it
                matched.setdefault(live_filter, []).append(item)
        return matched

    def _lookup(
        self, fields: FilterKey, shapes: list[tuple[bool, bool, bool, bool]]
    ) -> Iterator[LiveFilter]:
        for shape in shapes:
            self.lookups += 1
            key = (
                fields[0] if shape[0] else None,
                fields[1] if shape[1] else None,
                fields[2] if shape[2] else None,
                fields[3] if shape[3] else None,
            )
            live_filter = self._filters.get(key)
            if live_filter is not None:
                yield live_filter


class LiveClient:
    def __init__(self, websocket: WebSocket, queue_frames: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self.closed = asyncio.Event()


class Broadcaster:
    """The websocket clients of ``/v1/live`` and what they are sent: transitions
    batched every 50 ms, matched to each client's filter through ``FilterIndex``,
    and statistics every second. Bounded: clients in all and per address, each
    client's queue and send time; a slow client is closed, never waited for.
    """

    def __init__(
        self,
        stats: Callable[[], Awaitable[dict[str, Any]]],
        *,
        queue_frames: int = 64,
        send_timeout_s: float = 5.0,
        max_clients: int = MAX_CLIENTS,
        max_per_address: int = MAX_CLIENTS_PER_ADDRESS,
    ) -> None:
        self._stats = stats
        self._queue_frames = queue_frames
        self._send_timeout_s = send_timeout_s
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self._groups: dict[LiveFilter, set[LiveClient]] = {}
        self.index = FilterIndex()
        self._pending: list[Transition] = []
        self._per_address: Counter[str] = Counter()
        self._clients = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.dropped_slow = 0
        # Handshakes closed at once, by cap: "total" or "per_address".
        self.refused: Counter[str] = Counter()
        self.dropped_transitions = 0

    @property
    def clients(self) -> int:
        """Clients admitted (their handshake may still be under way)."""
        return self._clients

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="live-flush"),
            asyncio.create_task(self._stats_loop(), name="live-stats"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        for group in list(self._groups.values()):
            for client in list(group):
                await self._close(client, 1001)

    def publish(self, transitions: Sequence[Transition]) -> None:
        """Feed subscriber, on the merge path: queue for the flush task; never waits,
        never matches."""
        if not self._groups:
            return
        self._pending.extend(transitions)
        excess = len(self._pending) - MAX_PENDING
        if excess > 0:
            del self._pending[:excess]
            self.dropped_transitions += excess
            log.warning("live_transitions_dropped", count=excess)

    async def serve(self, websocket: WebSocket, live_filter: LiveFilter, address: str) -> None:
        """Accept one client and run it until it disconnects or is dropped; past a
        cap, accept and close at once (1013 or 1008), counted."""
        refusal = self._refusal(address)
        if refusal is not None:
            reason, code = refusal
            self.refused[reason] += 1
            log.warning("live_client_refused", reason=reason)
            # Accepted first: a close before the handshake reaches the client as a
            # bare 403, without the code that says to come back later.
            with contextlib.suppress(Exception):  # a peer gone already needs no answer
                await websocket.accept()
                await asyncio.wait_for(websocket.close(code=code), timeout=1.0)
            return
        # Counted before the first await, so handshakes under way count too.
        self._clients += 1
        self._per_address[address] += 1
        try:
            await websocket.accept()
            await self._run(LiveClient(websocket, self._queue_frames), live_filter)
        finally:
            self._clients -= 1
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def _refusal(self, address: str) -> tuple[str, int] | None:
        # Its own cap first: a client over it is told so, however full the rest is.
        if self._per_address[address] >= self.max_per_address:
            return "per_address", POLICY_VIOLATION
        if self._clients >= self.max_clients:
            return "total", TRY_AGAIN_LATER
        return None

    def _join(self, client: LiveClient, live_filter: LiveFilter) -> None:
        self._groups.setdefault(live_filter, set()).add(client)
        self.index.add(live_filter)

    def _leave(self, client: LiveClient, live_filter: LiveFilter) -> None:
        group = self._groups.get(live_filter)
        if group is not None:
            group.discard(client)
            if not group:
                del self._groups[live_filter]
                self.index.remove(live_filter)

    async def _run(self, client: LiveClient, live_filter: LiveFilter) -> None:
        self._join(client, live_filter)
        writer = asyncio.create_task(self._write(client), name="live-writer")
        reader = asyncio.create_task(self._read_until_closed(client), name="live-reader")
        closed = asyncio.ensure_future(client.closed.wait())
        try:
            await asyncio.wait({writer, reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((writer, reader, closed))
            self._leave(client, live_filter)

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
            self.flush()

    def flush(self) -> None:
        """Match what is pending to the filters and offer each group its frame."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for live_filter, items in self.index.match(pending).items():
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
