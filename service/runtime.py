"""The running service's parts, built from settings: store, pipeline, background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import structlog

from consumers.base import Source, supervise
from consumers.sns import SnsVerifier, confirm_over_https
from service import tombstones
from service.alerts.config import alert_config
from service.alerts.delivery import Deliverer
from service.alerts.engine import Alerting
from service.alerts.redis_store import RedisAlertStore
from service.alerts.store import AlertStore, MemoryAlertStore
from service.audit import Auditor, MemoryAuditLog, RedisAuditLog, keyed_hasher
from service.clock import wall_clock_ms
from service.dedupe import MemorySeenIds, RedisSeenIds, SeenIds
from service.erasure_job import ErasureRunner, Reach
from service.feed import TransitionFeed, erase_transitions, follow_redis
from service.forward.config import load_subscriptions
from service.forward.outbox import MemoryOutbox, Outbox, RedisOutbox
from service.forward.sender import Forwarder
from service.live_demand import LiveDemand
from service.metrics import Metrics
from service.mx import MxCache, MxResolver, dns_lookup
from service.outages import OUTAGES, STORE, cause_of
from service.outbound import Outbound
from service.parsing import ParsePool, processes_per_worker
from service.pipeline import Pipeline
from service.ratelimit import RateLimiter
from service.reload import ConfigFiles
from service.settings import Settings
from service.stores import CachedStore, MemoryStore, RedisStore, Store
from service.stores.base import StoreUnavailable
from service.stores.redis.erasures import erasure_key
from service.stores.redis.errors import REDIS_UNAVAILABLE
from service.stores.redis.keyspace import RedisKeyspace
from service.stores.redis.memory import RedisMemory
from service.stores.redis.store import StoreFormatError, StoreLayoutError
from service.tasks import cancel_and_wait, crash_reporter

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


def build_keyspace(settings: Settings) -> RedisKeyspace | None:
    """The Redis every Redis-backed part shares (``service.stores.redis.keyspace``); None
    without SES_TRACKER_REDIS_URL."""
    if not settings.redis_url:
        return None
    return RedisKeyspace.connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        slot_groups=settings.redis_slot_group_count(),
        connection=settings.redis_options(),
    )


def build_redis_store(settings: Settings, keyspace: RedisKeyspace) -> RedisStore:
    """With ``SES_TRACKER_FORWARD_FILE``, merges also append to the forwarding outbox."""
    forwarding = settings.forward_file is not None
    return RedisStore(
        keyspace,
        retention_s=settings.retention_s,
        feed_window_s=settings.feed_window_s,
        feed_when_watched=True,
        forward_keep_s=settings.forward_keep_s if forwarding else None,
        suppression_days=settings.suppression_days,
    )


def build_store(settings: Settings, keyspace: RedisKeyspace | None = None) -> Store:
    """Memory alone by default; with Redis, Redis is the truth behind a read cache.

    With ``SES_TRACKER_FORWARD_FILE``, merges also append to the forwarding outbox.
    """
    keyspace = keyspace or build_keyspace(settings)
    if keyspace is not None:
        return cached(settings, build_redis_store(settings, keyspace))
    return MemoryStore(
        max_messages=settings.memory_max_messages,
        max_bytes=settings.memory_max_bytes,
        retention_s=settings.retention_s,
        outbox=MemoryOutbox() if settings.forward_file is not None else None,
        suppression_days=settings.suppression_days,
    )


def cached(settings: Settings, truth: RedisStore) -> Store:
    if settings.cache_ttl_s > 0:
        return CachedStore(truth, ttl_s=settings.cache_ttl_s)
    return truth


def build_forwarder(
    settings: Settings, store: Store, keyspace: RedisKeyspace | None
) -> Forwarder | None:
    """The senders of SES_TRACKER_FORWARD_FILE's subscriptions; raises
    ForwardConfigError on a bad file."""
    if settings.forward_file is None:
        return None
    # Built even for a file with no subscriptions yet: a reload may add some.
    subscriptions = load_subscriptions(settings.forward_file)
    outbox: Outbox
    if keyspace is not None:
        outbox = RedisOutbox(keyspace)
    else:
        assert isinstance(store, MemoryStore) and store.outbox is not None
        outbox = store.outbox
    return Forwarder(
        subscriptions,
        outbox,
        Outbound.from_environ(allow_private=settings.forward_allow_private),
        allow_private=settings.forward_allow_private,
        # Changes read before an erasure reached the outbox are not posted either.
        forgotten=store.forgotten,
    )


def build_audit(store: Store, keyspace: RedisKeyspace | None) -> Auditor:
    """The audit log: beside the data with Redis, this process's own without; an
    address in it hashed under the key of the tombstones' hashes."""
    if keyspace is not None:
        return Auditor(
            RedisAuditLog(keyspace),
            keyed_hasher(lambda: erasure_key(keyspace.client, keyspace.keys)),
            wall_clock_ms,
        )
    key = store.erasure_key if isinstance(store, MemoryStore) else tombstones.new_key()

    async def load_key() -> bytes:
        return key

    return Auditor(MemoryAuditLog(), keyed_hasher(load_key), wall_clock_ms)


def build_erasures(runtime: Runtime) -> ErasureRunner:
    """The erasure jobs' runner, reaching every part that quotes recipients."""
    store, keyspace = runtime.store, runtime.keyspace
    reaches: list[tuple[str, Reach]] = [("alerts", runtime.alerting.alert_store.erase_address)]
    if keyspace is not None:
        # The outbox is there to clean whether or not this process forwards (a
        # backlog outlives a subscription file's edit).
        reaches.append(("forwarding", RedisOutbox(keyspace).erase_address))

        async def transitions(address: str) -> int:
            erased = 0
            for keys in keyspace.groups:
                erased += await erase_transitions(keyspace.client, keys.transitions, address)
            return erased

        reaches.append(("transitions", transitions))
    elif isinstance(outbox := getattr(store, "outbox", None), MemoryOutbox):
        reaches.append(("forwarding", outbox.erase_address))
    return ErasureRunner(store, reaches, runtime.clock_ms)


# Firehose retries a failed delivery for up to two hours (its longest retry duration).
FIREHOSE_RETRY_S = 7_200


def build_mx_resolver(settings: Settings, keyspace: RedisKeyspace | None) -> MxResolver | None:
    """With SES_TRACKER_RESOLVE_MX: MX answers cached in Redis when there is one."""
    if not settings.resolve_mx:
        return None
    cache = MxCache(keyspace)
    return MxResolver(dns_lookup(settings.nameservers), cache)


def build_seen_ids(keyspace: RedisKeyspace | None, kind: str, ttl_s: float) -> SeenIds:
    """Delivery ids remembered for ``ttl_s``: in Redis (every replica) when there is one."""
    if keyspace is None:
        return MemorySeenIds(ttl_s=ttl_s)
    return RedisSeenIds(keyspace, kind=kind, ttl_s=ttl_s)


def build_alerting(
    settings: Settings,
    store: Store,
    keyspace: RedisKeyspace | None = None,
    health_of: Callable[[], list[dict[str, Any]]] = list,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> Alerting:
    """Rules, sinks and alert state; raises AlertConfigError on bad settings."""
    config = alert_config(settings)
    alert_store: AlertStore
    if keyspace is not None:
        # Alert state lives beside the messages, on the message store's connections.
        alert_store = RedisAlertStore(
            keyspace,
            account_limits=config.accounts.limits,
        )
    else:
        alert_store = MemoryAlertStore(
            settings.alert_state_dir, account_limits=config.accounts.limits
        )
    # A sink that hangs costs its own sender this long per attempt, nothing else.
    client = Outbound.from_environ(allow_private=True)  # an Alertmanager may be private
    deliverer = Deliverer(client, secret=config.secret, attempts=4, max_wait_s=30.0)
    return Alerting(
        store,
        alert_store,
        config.rules,
        config.sinks,
        deliverer,
        overdue_after_s=settings.overdue_after_s,
        public_url=settings.public_url,
        health_of=health_of,
        clock_ms=clock_ms,
        catch_up_s=settings.catch_up_lag_s,
        accounts=config.accounts,
    )


def build_sources(settings: Settings, pipeline: Pipeline) -> list[Source]:
    """Every consumer the settings configure."""
    from consumers.kafka import KafkaSource
    from consumers.sqs import SqsSource

    sources: list[Source] = []
    if settings.kafka_bootstrap_servers:
        sources.append(
            KafkaSource(
                pipeline,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=settings.topics,
                group_id=settings.kafka_group_id,
                max_records=settings.kafka_max_records,
                session_timeout_ms=settings.kafka_session_timeout_ms,
                security=settings.kafka_security(),
            )
        )
    if settings.queue_urls:
        sources.append(
            SqsSource(
                pipeline,
                queue_urls=settings.queue_urls,
                endpoint_url=settings.aws_endpoint_url,
                pollers_per_queue=settings.sqs_pollers_per_queue,
                wait_time_s=settings.sqs_wait_time_s,
            )
        )
    return sources


class Runtime:
    """One process's service, built from settings: the store (Redis behind a read
    cache, or memory), the pipeline, the sources, alerting, forwarding, erasures,
    the live feed, the audit log, metrics and the background tasks that keep them
    (projection, demand for the live stream, MX, config polling).

    ``start`` spawns the tasks and sources; ``stop`` drains the sources (finish,
    make durable, acknowledge) and then cancels the rest (``service.tasks``).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        # The Redis store, when there is one: for what only it does (its format,
        # its projection, its transitions stream).
        self.redis: RedisStore | None
        if store is None:
            self.keyspace = build_keyspace(settings)
            self.redis = build_redis_store(settings, self.keyspace) if self.keyspace else None
            self.store = cached(settings, self.redis) if self.redis else build_store(settings)
        else:
            self.store = store
            self.redis = store if isinstance(store, RedisStore) else None
            self.keyspace = self.redis.keyspace if self.redis is not None else None
        self.mx = build_mx_resolver(settings, self.keyspace)
        self.forwarder = build_forwarder(settings, self.store, self.keyspace)
        dimensions = settings.dimensions()
        if self.mx is not None:
            dimensions = replace(dimensions, resolved=self.mx.providers, on_unknown=self.mx.note)
        self.pipeline = Pipeline(
            self.store,
            max_payload_bytes=settings.max_body_bytes,
            max_future_s=settings.max_future_s,
            clock_ms=clock_ms,
            dimensions=dimensions,
            history_days=settings.history_days,
            hourly_days=settings.history_hourly_days,
            # The cores shared out among `serve --workers` processes.
            parsing=ParsePool(processes_per_worker(settings.worker_count())),
        )
        self.sources = build_sources(settings, self.pipeline)
        # HTTP sources: SNS subscriptions and Firehose deliveries (api/routes/ingest.py).
        self.sns_verifier = SnsVerifier()
        self.confirm_subscription: Callable[[str], Awaitable[None]] = confirm_over_https
        self.rate_limiter = (
            RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None
        )
        self.seen_sns_ids = build_seen_ids(self.keyspace, "sns", settings.sns_max_age_s)
        self.seen_firehose_ids = build_seen_ids(self.keyspace, "firehose", FIREHOSE_RETRY_S)
        # The websocket broadcaster (api.live), attached by the app.
        self.live: Any = None
        self.feed = TransitionFeed()
        self.alerting = build_alerting(
            settings, self.store, self.keyspace, self._source_health, clock_ms
        )
        self.pipeline.on_account_event(self.alerting.on_account_event)
        self.metrics = Metrics(
            pipeline=self.pipeline,
            store=self.store,
            sources=self.sources,
            alerting=self.alerting,
            event_lags=self.event_lags,
            forwarding=self.forwarding,
        )
        self.erasures = build_erasures(self)
        self.metrics.erasures = self.erasures
        self.audit = build_audit(self.store, self.keyspace)
        self.metrics.audit = self.audit
        self.config_files = ConfigFiles(settings, self.alerting, self.forwarder, self.audit)
        self.metrics.config_files = self.config_files
        self.redis_memory = RedisMemory(self.keyspace) if self.keyspace is not None else None
        # With Redis, merges write the live stream only while a page is open somewhere.
        self.live_demand = (
            LiveDemand(self.keyspace, self.feed.wanted) if self.keyspace is not None else None
        )
        self.metrics.redis_memory = self.redis_memory
        self._source_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the API; a crash is logged, never silent."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    async def start(self) -> None:
        settings = self.settings
        # One line saying what this process will do, so a misconfiguration shows.
        log.info(
            "service_starting",
            store=self.store.describe(),
            sources=[source.name for source in self.sources],
            alert_sinks=[sink.kind for sink in self.alerting.sinks],
            api_token=settings.api_token is not None,
            sns_endpoint="open" if settings.allowed_topic_arns else "closed",
            firehose_endpoint="open" if settings.firehose_access_key else "closed",
            rate_limit_per_s=settings.rate_limit_per_s or None,
        )
        redis = self.redis
        unreachable = await self._unreachable()
        if unreachable is not None:
            # Not fatal: /readyz reports it and the store reconnects on its own.
            log.error("store_unreachable", store=self.store.describe(), cause=unreachable)
        elif redis is not None:
            try:
                await redis.claim_format()
            except StoreLayoutError as exc:
                log.error("store_layout_mismatch", error=str(exc))
                raise
            except StoreFormatError as exc:
                log.error("store_format_too_new", error=str(exc))
                raise
        if redis is None:
            self.pipeline.on_transitions(self.feed.publish)
        else:
            self.spawn("transition-feed", follow_redis(redis, self.feed, asyncio.sleep))
        if self.live_demand is not None:
            self.spawn("live-demand", self.live_demand.run())
            self.spawn("statistics-projection", redis.projection.run_forever())
        if self.redis_memory is not None:
            self.spawn("redis-memory", self.redis_memory.run())
        self.spawn("alert-evaluator", self.alerting.run_evaluator())
        self.spawn("erasures", self.erasures.run_forever())
        if self.mx is not None:
            self.spawn("mx-resolver", self.mx.run())
        if self.forwarder is not None:
            self.spawn("forwarder", self.forwarder.run())
        if self.config_files.watching and settings.config_poll_s > 0:
            self.spawn("config-watch", self.config_files.watch(settings.config_poll_s))
        for sink in self.alerting.sinks:
            self.spawn(f"alert-sender:{sink.id}", self.alerting.run_sender(sink))
        for source in self.sources:
            task = asyncio.create_task(supervise(source), name=f"source:{source.name}")
            task.add_done_callback(_report_crash)
            self._source_tasks.append(task)

    async def _unreachable(self) -> str | None:
        """Why the store cannot be reached at start-up (None: it can)."""
        if self.keyspace is None:
            return None if await self.store.ping() else "unreachable"
        try:
            await self.keyspace.client.ping()
        except REDIS_UNAVAILABLE as exc:
            OUTAGES.failed(STORE, exc, part="start-up")
            return cause_of(exc)
        return None

    async def stop(self, drain_s: float = 15.0) -> None:
        """Drain sources (finish, make durable, acknowledge), then stop the rest."""
        for source in self.sources:
            source.stop()
        if self._source_tasks:
            _, late = await asyncio.wait(self._source_tasks, timeout=drain_s)
            for task in late:
                log.error("source_drain_timed_out", task=task.get_name())
            await cancel_and_wait(self._source_tasks)
        redis = self.redis
        if redis is not None:
            # What the drained sources merged, counted now rather than by the next
            # lease holder (best effort: the log keeps it either way).
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                await asyncio.wait_for(redis.projection.sweep(), 5.0)
        if self.forwarder is not None:
            self.forwarder.stop()
        await cancel_and_wait(self._tasks)
        await self.alerting.stop()
        if self.forwarder is not None:
            await self.forwarder.aclose()
        await self.store.close()
        log.info("service_stopped")

    def _source_health(self) -> list[dict[str, Any]]:
        health = [{"name": source.name, **source.status()} for source in self.sources]
        pushed = self.pipeline.pushed_lag.seconds()
        if pushed:
            # HTTP pushes are no source task, but can be behind too (Firehose
            # redelivering after an endpoint outage).
            health.append({"name": "push", "state": "receiving", "connected": True,
                           "failure": None, "event_lag_s": pushed})  # fmt: skip
        return health

    def forwarding(self, detailed: bool = True) -> list[dict[str, Any]]:
        """Each subscription as this replica sees it: sent, failed, queued and the age
        of the oldest waiting change (README, Forwarding). Errors name hosts, so
        they are left out unless ``detailed``."""
        if self.forwarder is None:
            return []
        now_ms = wall_clock_ms()
        return [
            {
                "name": subscription.name,
                "host": subscription.host if detailed else None,
                "sending": figures.sending,
                "sent": figures.sent,
                "failed": figures.failed,
                "queued": figures.queued,
                "oldest_s": None
                if figures.oldest_ms is None
                else max(0.0, (now_ms - figures.oldest_ms) / 1000),
                "last_error": figures.last_error if detailed else None,
            }
            for subscription in self.forwarder.subscriptions
            for figures in (self.forwarder.figures[subscription.name],)
        ]

    def event_lags(self) -> dict[str, dict[str, float]]:
        """Event-time lag in seconds by source and position (``service.lag``)."""
        lags: dict[str, dict[str, float]] = {}
        for source in self.sources:
            if source.event_lag is not None:
                lags[source.name] = source.event_lag.seconds()
        pushed = self.pipeline.pushed_lag.seconds()
        if pushed:
            lags["push"] = pushed
        return lags

    def catching_up(self) -> dict[str, float]:
        """``<source> <position>`` -> lag, for those behind by more than the setting."""
        return {
            f"{name} {position}": lag_s
            for name, positions in self.event_lags().items()
            for position, lag_s in positions.items()
            if lag_s > self.settings.catch_up_lag_s
        }

    def sources_healthy(self) -> bool:
        return all(source.healthy for source in self.sources)


# A crash of a task this runtime spawned (a source, a loop), said with its traceback.
_report_crash = crash_reporter("background_task_crashed")
