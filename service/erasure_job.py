"""Erasing a recipient everywhere, as a background job with progress.

``DELETE /v1/recipients/{address}`` (:func:`request`) leaves a tombstone first, so
from then on no merge stores the address in a message sent before now
(``service.tombstones``), then queues a job and answers ``202`` with where to
follow it (``GET /v1/erasures/{id}``). Every ``serve`` process runs an
:class:`ErasureRunner`; the one holding the store's erasure lease works the queue,
oldest first:

1. records: a page at a time of what the address's search index lists for
   messages sent before the erasure (``Erasing.erasure_candidates``), each record
   rewritten and its index entry dropped in one atomic step
   (``Erasing.erase_record``), progress saved after each page, so a process that
   dies mid-job leaves it to the next lease holder, which goes on with what is
   still indexed;
2. what is left under the address: index entries, its suppression;
3. every other part that quotes recipients (``reaches``: the forwarding outbox,
   the live transitions stream, alert records), each its own ``erase_address``.

When done the job forgets the address and keeps only counts, for ``JOB_KEEP_S``.
The change log and the statistics it feeds never held an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import structlog

from service.outages import OUTAGES, STORE
from service.stores.base import Store, StoreUnavailable

log = structlog.get_logger(__name__)

JOB_KEEP_S = 30 * 86_400
PAGE = 100
LEASE_MS = 15_000
IDLE_POLL_S = 1.0
RETRY_S = 5.0
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
# A job failing this often with an unexpected error is given up (and says so), so
# one poison job cannot hold the queue for ever.
MAX_ATTEMPTS = 5
JOB_ID_BYTES = 12

Reach = Callable[[str], Awaitable[int]]


class LeaseLost(Exception):
    """Another process holds the erasure lease now: it goes on with the job."""


@dataclass(slots=True)
class ErasureJob:
    id: str
    address: str | None  # None once done: the job keeps only counts
    requested_at: int  # ms; messages sent before this are erased
    status: str = QUEUED
    started_at: int | None = None
    finished_at: int | None = None
    messages: int = 0  # records that named the address
    index_entries: int = 0  # what step 2 found left
    reached: dict[str, int] = field(default_factory=dict)  # part -> items rewritten
    attempts: int = 0
    error: str | None = None  # why it failed, when it did
    tombstoned: bool = False  # the request recorded the tombstone whole

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> ErasureJob:
        return cls(**orjson.loads(data))

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/erasures/{id}`` answers: progress, never the address."""
        return {
            "id": self.id,
            "status": self.status,
            "requested_at": self.requested_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "messages": self.messages,
            "index_entries": self.index_entries,
            "reached": dict(self.reached),
            "error": self.error,
        }


def new_id() -> str:
    return secrets.token_urlsafe(JOB_ID_BYTES)


async def request(store: Store, address: str, now_ms: int) -> ErasureJob:
    """Queue the erasure of ``address``, then tombstone it; the job to follow. In
    that order: a tombstone that failed half way (503) is recorded again by the
    job, which then tombstones first (not otherwise: that would also drop a
    suppression recorded since, by a message sent after the erasure)."""
    job = ErasureJob(id=new_id(), address=address, requested_at=now_ms)
    await store.save_erasure(job.id, job.to_bytes(), queued=True, keep_s=JOB_KEEP_S)
    await store.tombstone(address, now_ms)
    job.tombstoned = True
    await store.save_erasure(job.id, job.to_bytes(), queued=True, keep_s=JOB_KEEP_S)
    return job


async def load(store: Store, job_id: str) -> ErasureJob | None:
    data = await store.load_erasure(job_id)
    if data is None:
        return None
    try:
        return ErasureJob.from_bytes(data)
    except (ValueError, TypeError):
        return None  # not a job's state (damaged): as if gone


class ErasureRunner:
    """Works the erasure queue where this process holds the lease; in every process,
    reads the tombstones again now and then (a process that only forwards must
    know them too)."""

    def __init__(
        self,
        store: Store,
        reaches: Sequence[tuple[str, Reach]],
        clock_ms: Callable[[], int],
        *,
        holder: str | None = None,
        page: int = PAGE,
    ) -> None:
        self.store = store
        self.reaches = list(reaches)
        self.clock_ms = clock_ms
        self.holder = holder or secrets.token_hex(8)
        self.page = page
        self.finished = 0
        self.failures = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was queued here: start it now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        task = asyncio.current_task()
        while True:
            # redis-py may swallow a cancellation (turning it into a connection
            # error), so a pending cancel is honoured here, every turn.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            delay = IDLE_POLL_S
            try:
                await self.store.refresh_tombstones()
                await self.work_queue()
                OUTAGES.ok(STORE)
            except StoreUnavailable as exc:
                OUTAGES.failed(STORE, exc, part="erasures")
                delay = RETRY_S
            except LeaseLost:
                log.info("erasure_lease_lost")
            except Exception:
                self.failures += 1
                log.exception("erasure_runner_failed", retry_s=RETRY_S)
                delay = RETRY_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def work_queue(self) -> int:
        """Run every queued job while holding the lease; how many finished."""
        finished = 0
        while await self.store.hold_erasure_lease(self.holder, LEASE_MS):
            queued = await self.store.queued_erasures(1)
            if not queued:
                break
            job = await load(self.store, queued[0])
            if job is None or job.address is None:
                # Expired or finished elsewhere: off the queue, its state as it is.
                data = job.to_bytes() if job is not None else b"{}"
                await self.store.save_erasure(queued[0], data, queued=False, keep_s=JOB_KEEP_S)
                continue
            try:
                await self.run(job)
            except (StoreUnavailable, LeaseLost):
                raise  # an outage, or another process's turn: the job waits
            except Exception as exc:
                await self._failed(job, exc)
                continue
            finished += 1
        return finished

    async def _failed(self, job: ErasureJob, exc: Exception) -> None:
        """An unexpected error: retried behind the rest of the queue, given up after
        MAX_ATTEMPTS (the address then forgotten by the job; the tombstone stays)."""
        self.failures += 1
        job.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.error("erasure_failed", job=job.id, attempts=job.attempts, error=job.error)
        if job.attempts < MAX_ATTEMPTS:
            # Behind the others: drop from the queue and queue again.
            await self._save(job, queued=False)
            await self._save(job, queued=True)
            return
        job.status, job.address, job.finished_at = FAILED, None, self.clock_ms()
        await self._save(job, queued=False)

    async def run(self, job: ErasureJob) -> ErasureJob:
        address = job.address
        assert address is not None
        job.status, job.attempts = RUNNING, job.attempts + 1
        job.started_at = job.started_at or self.clock_ms()
        await self._save(job, queued=True)
        if not job.tombstoned:
            # The request's own failed half way.
            await self.store.tombstone(address, job.requested_at)
            job.tombstoned = True
        while True:
            candidates = await self.store.erasure_candidates(address, job.requested_at, self.page)
            if not candidates:
                break
            for candidate in candidates:
                if await self.store.erase_record(candidate, address):
                    job.messages += 1
            await self._save(job, queued=True)  # renews the lease too
        job.index_entries = await self.store.forget_recipient(address, job.requested_at)
        for name, reach in self.reaches:
            await self._renew()
            job.reached[name] = await reach(address)
        job.status, job.address, job.finished_at = DONE, None, self.clock_ms()
        await self._save(job, queued=False)
        self.finished += 1
        log.info("recipient_erased", job=job.id, messages=job.messages, reached=job.reached)
        return job

    async def _renew(self) -> None:
        if not await self.store.hold_erasure_lease(self.holder, LEASE_MS):
            raise LeaseLost(self.holder)

    async def _save(self, job: ErasureJob, queued: bool) -> None:
        # Only while holding the lease: a runner that lost it (paused past it) must
        # not queue again a job another finished meanwhile.
        await self._renew()
        await self.store.save_erasure(job.id, job.to_bytes(), queued=queued, keep_s=JOB_KEEP_S)
