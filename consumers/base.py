"""What every long-running source shares: a stop signal, health, durable apply.

A source's contract is at-least-once: it acknowledges input (commits a Kafka
offset, deletes an SQS message) only after ``Pipeline.apply`` returned, which
means the events are durable in the store. Until then a crash or a shutdown makes
the input come back; the merge is idempotent, so that costs nothing but time.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from service.lag import EventLag
from service.outages import OUTAGES, STORE
from service.stores import StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """The source was asked to stop before the work could be made durable."""


class Source(ABC):
    """A long-running consumer beside the API, started and drained by the runtime."""

    name: str

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self.connected = False
        self.failure: str | None = None
        # What it is doing, for /readyz: starting, connecting, joining group,
        # consuming, retrying, stopped.
        self.state = "starting"
        # How far behind real time its positions read (service.lag); None: not kept.
        self.event_lag: EventLag | None = None

    @abstractmethod
    async def run(self) -> None:
        """Consume until :meth:`stop` is called; then finish in-flight work and return."""

    def stop(self) -> None:
        """Ask the source to drain: stop fetching, finish, acknowledge, return from run."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def healthy(self) -> bool:
        return self.connected and self.failure is None

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "connected": self.connected, "failure": self.failure}

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def durably(self, work: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run ``work`` until the store takes it, backing off while the store is down.

        Raises :class:`Stopped` when asked to stop first: the caller then leaves its
        input unacknowledged, to be delivered again.
        """
        delay = 0.2
        while True:
            try:
                result = await work()
            except StoreUnavailable as exc:
                self.failure = f"store unavailable: {exc}"
                wait = max(delay, exc.retry_after_s)
                OUTAGES.failed(STORE, exc, part=f"source {self.name}")
            else:
                self.failure = None
                OUTAGES.ok(STORE)
                return result
            if self.stopping:
                raise Stopped(what)
            await self.sleep(wait)
            if self.stopping:
                raise Stopped(what)
            delay = min(delay * 2, 5.0)


async def supervise(source: Source, max_delay_s: float = 60.0) -> None:
    """Run a source until it is stopped, restarting it (with backoff) if it crashes.

    Sources retry their own broker and AWS errors; this catches the unexpected, so a
    bug in one batch does not leave the process serving with a dead consumer.
    """
    delay = 1.0
    while not source.stopping:
        try:
            await source.run()
            return
        except Exception:
            source.connected = False
            source.failure = "crashed; restarting"
            log.exception("source_crashed", source=source.name, restart_in_s=delay)
            await source.sleep(delay)
            delay = min(delay * 2, max_delay_s)
