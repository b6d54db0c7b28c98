"""Big payloads parsed in worker processes, behind a bounded admission.

A payload over :data:`OFFLOAD_BYTES` is parsed in a process pool, so its parse
holds neither the event loop nor this process's GIL: health checks, websockets,
small posts, Kafka heartbeats and SQS polls go on meanwhile, and parses of several
big payloads run on several cores. Shipping a result back costs less than the
parse it saves (1.5 MiB of typical records: 40 ms to parse, 20 ms to unpickle the
result here; a hostile shape's result is a hundred issues at most, its parse up to
0.4 s per MiB), so every payload past the threshold goes to the pool.

At most ``capacity`` such parses are admitted at once (running or waiting for a
process). Past that, a caller that can be told to come back (an HTTP request) gets
:class:`ParseQueueFull`, answered ``429`` with ``Retry-After``; one that cannot (a
Kafka or SQS consumer, a replay) waits for room, first come first served, so
nothing is dropped and the consumer simply reads more slowly (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from service.cpus import usable_cpus
from service.events import ParseResult

log = structlog.get_logger(__name__)

# Payloads up to this size are parsed inline (well under a millisecond per 64 KiB
# of records): handing them to a process would cost more than the parse.
OFFLOAD_BYTES = 64 * 1024
# A first guess of one big parse's duration, until parses are timed.
_FIRST_GUESS_S = 0.5
# Retry-After is clamped to this: past it a client should just try again.
MAX_RETRY_AFTER_S = 60
# The collector settings of service.runtime.GC_THRESHOLDS, in each worker process
# (parsing allocates a tree of short-lived objects per record).
_WORKER_GC_THRESHOLDS = (10_000, 10, 10)


class ParseQueueFull(Exception):
    """Every parse slot is taken: come back in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"parser busy, retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def processes_per_worker(workers: int, cores: int | None = None) -> int:
    """Parse processes for one of ``workers`` server processes: the usable cores
    (``service.cpus``: affinity and CPU quota, not the node's count) shared out."""
    return max(1, (cores if cores is not None else usable_cpus()) // max(1, workers))


class ParsePool:
    """Bounded admission in front of a process pool of ``processes`` parsers."""

    def __init__(self, processes: int, capacity: int | None = None) -> None:
        self.processes = max(1, processes)
        # One running and one waiting per process: enough to keep every process
        # busy, and a bounded number of big bodies held in memory.
        self.capacity = capacity if capacity is not None else 2 * self.processes
        self._admitted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_s = _FIRST_GUESS_S
        self.refused = 0
        self.parsed = 0

    @property
    def busy(self) -> int:
        """Parses admitted (running or queued for a process) plus callers waiting."""
        return self._admitted + len(self._waiters)

    async def run(self, parse: Callable[[], ParseResult], *, wait: bool) -> ParseResult:
        """``parse()`` in a worker process, once admitted.

        ``parse`` must pickle (a ``functools.partial`` of a module-level function
        with bytes and numbers does). With ``wait`` false a full pool raises
        :class:`ParseQueueFull` at once; with it true the caller waits its turn.
        """
        await self._admit(wait)
        try:
            started = time.monotonic()
            result = await _in_pool(self.processes, parse)
            # A moving mean of one admitted parse's latency, for Retry-After.
            self._mean_s += (time.monotonic() - started - self._mean_s) / 8
            self.parsed += 1
            return result
        finally:
            self._release()

    def retry_after_s(self) -> int:
        """About when a slot frees for a newcomer: with the pool full, one frees every
        ``mean latency / capacity`` seconds (Little's law), after those waiting."""
        ahead = self._mean_s * (len(self._waiters) + 1) / max(1, self.capacity)
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(ahead)))

    async def _admit(self, wait: bool) -> None:
        if self._admitted < self.capacity and not self._waiters:
            self._admitted += 1
            return
        if not wait:
            self.refused += 1
            raise ParseQueueFull(self.retry_after_s())
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            # _release hands its slot straight to the first waiter (_admitted stays).
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            raise

    def _release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._admitted -= 1


# One executor per size, per process: every pipeline of a server process shares it,
# and it starts its processes only when the first big payload comes.
_executors: dict[int, Executor] = {}


def _worker_init() -> None:
    gc.set_threshold(*_WORKER_GC_THRESHOLDS)


def _executor(processes: int) -> Executor:
    executor = _executors.get(processes)
    if executor is None:
        try:
            # forkserver, not fork: this process has threads (a fork could copy a
            # held lock); the server preloads the parser so each worker starts warm.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["service.parser"])
            executor = ProcessPoolExecutor(processes, mp_context=context, initializer=_worker_init)
        except (OSError, ValueError, NotImplementedError) as exc:
            # No process support here (no shared-memory semaphores): one thread,
            # as before, so big parses still leave the event loop.
            log.warning("parse_processes_unavailable", error=str(exc))
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse")
        _executors[processes] = executor
    return executor


async def _in_pool(processes: int, parse: Callable[[], ParseResult]) -> ParseResult:
    loop = asyncio.get_running_loop()
    for attempt in (1, 2):
        executor = _executor(processes)
        try:
            return await loop.run_in_executor(executor, parse)
        except BrokenProcessPool:
            # A worker died (killed for memory, say): the pool is unusable from now
            # on, so a fresh one replaces it; a second death is the payload's doing.
            log.error("parse_pool_broken", attempt=attempt)
            if _executors.get(processes) is executor:
                del _executors[processes]
            executor.shutdown(wait=False, cancel_futures=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
