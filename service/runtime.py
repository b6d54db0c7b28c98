"""The running service's parts, built from settings: store, pipeline, background tasks."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import structlog

from service.pipeline import Pipeline
from service.settings import Settings
from service.stores import CachedStore, MemoryStore, RedisStore, Store

log = structlog.get_logger(__name__)


# Parsing allocates a tree of short-lived dicts and lists per record, so with the
# default threshold (700) the young generation is collected every few records. A
# larger one roughly halves parse cost (bench/bench_pipeline.py); full collections
# keep their usual proportional trigger.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Collector settings for the ingest hot path; call once at start-up."""
    gc.collect()
    gc.freeze()  # start-up objects live forever: keep them out of every collection
    gc.set_threshold(*GC_THRESHOLDS)


def build_store(settings: Settings) -> Store:
    """Memory alone by default; with Redis, Redis is the truth behind a read cache."""
    if settings.redis_url:
        truth = RedisStore.from_url(settings.redis_url, retention_s=settings.retention_s)
        if settings.cache_ttl_s > 0:
            return CachedStore(truth, ttl_s=settings.cache_ttl_s)
        return truth
    return MemoryStore(max_messages=settings.memory_max_messages, retention_s=settings.retention_s)


class Runtime:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else build_store(settings)
        self.pipeline = Pipeline(self.store, max_payload_bytes=settings.max_body_bytes)
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the API; a crash is logged, never silent."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    async def start(self) -> None:
        log.info("service_starting", store=self.store.describe())
        if not await self.store.ping():
            # Not fatal: /readyz reports it and the store reconnects on its own.
            log.error("store_unreachable", store=self.store.describe())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()
        log.info("service_stopped")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task_crashed", task=task.get_name(), exc_info=task.exception())
