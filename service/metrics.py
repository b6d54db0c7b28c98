"""Prometheus metrics, built so that ingestion pays almost nothing for them.

Counts (records, events by type, rejections by reason, consumer lag, store size)
already live in the pipeline and the sources; a collector reads them when Prometheus
scrapes. Only what must be seen as it happens is observed on the way: how long each
store merge took (once per batch) and the latency each status transition reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.dimensions import NONE, domain_of
from service.outages import OUTAGES
from service.providers import OTHER as OTHER_PROVIDER
from service.state import MessageWrite, Transition

if TYPE_CHECKING:
    from consumers.base import Source
    from service.alerts.engine import Alerting
    from service.pipeline import Pipeline
    from service.stores import Store

# The step each transition's latency measures (from send to this status).
_LATENCY_OF = {
    "delivered": "send_to_delivery",
    "delayed": "send_to_first_delay",
    "bounced": "send_to_bounce",
    "complained": "send_to_complaint",
}
MAX_CONFIGURATION_SET_LABELS = 50
OTHER_LABEL = "(other)"


def _configuration_set(groups: tuple[str, ...]) -> str:
    for group in groups:
        if group.startswith("configuration_set="):
            return group.partition("=")[2]
    return NONE


_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600)


# How the parent of ``serve --workers`` answers a gauge from its workers' values
# (api.fleet; counters and histograms are summed). "sum": each worker holds its own
# share (its clients, its partitions); "max": each reads the same shared figure, or
# the worst one counts (lag, an outbox read from Redis, the lease one worker holds);
# "min": any worker failing shows (up, a reload that failed). A gauge missing here
# fails tests/unit/test_fleet_metrics.py.
GAUGE_AGGREGATION: dict[str, str] = {
    "ses_tracker_alert_leader": "max",
    "ses_tracker_alert_outbox": "max",
    "ses_tracker_config_reload_last_success_seconds": "min",
    "ses_tracker_config_reload_success": "min",
    "ses_tracker_consumer_up": "min",
    "ses_tracker_dependency_up": "min",
    "ses_tracker_event_lag_seconds": "max",
    "ses_tracker_forward_oldest_seconds": "max",
    "ses_tracker_forward_queued": "max",
    "ses_tracker_kafka_dlq_blocked_partitions": "sum",
    "ses_tracker_kafka_lag": "max",
    "ses_tracker_kafka_stalled_partitions": "sum",
    "ses_tracker_memory_store_bytes": "sum",
    "ses_tracker_memory_store_max_bytes": "max",
    "ses_tracker_memory_store_messages": "sum",
    "ses_tracker_redis_memory_max_bytes": "max",
    "ses_tracker_redis_memory_used_bytes": "max",
    "ses_tracker_parse_pool_busy": "sum",
    "ses_tracker_projection_delay_seconds": "max",
    "ses_tracker_projection_leases": "sum",
    "ses_tracker_websocket_clients": "sum",
}


class Metrics:
    """One registry per runtime (tests run several apps in one process).

    Given what it measures: the pipeline, the store, the sources, alerting, and,
    once the app has one, the websocket broadcaster (``live``).
    """

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        store: Store,
        sources: Sequence[Source],
        alerting: Alerting,
        event_lags: Callable[[], dict[str, dict[str, float]]] = dict,
        forwarding: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.sources = sources
        # Event-time lag by source and position (Runtime.event_lags).
        self.event_lags = event_lags
        # Forwarding subscriptions' figures (Runtime.forwarding).
        self.forwarding = forwarding
        self.alerting = alerting
        self.live: Any = None
        # The erasure jobs' runner (service.erasure_job), attached by the runtime.
        self.erasures: Any = None
        self.audit: Any = None
        # The files re-read while running (service.reload), attached by the runtime.
        self.config_files: Any = None
        # Each Redis master's memory (service.stores.redis.memory), with Redis.
        self.redis_memory: Any = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.merge_seconds = Histogram(
            "ses_tracker_store_merge_seconds",
            "Time to merge one batch into the store (one round trip with Redis).",
            ["store"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.latency_seconds = Histogram(
            "ses_tracker_email_latency_seconds",
            "Send-to-step latency of recipients reaching a status, from SES's timestamps.",
            ["step"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.recipient_statuses = Counter(
            "ses_tracker_recipient_statuses",
            "Recipients reaching a status (a new recipient counts under sent first), by mailbox"
            " provider and configuration set (the first 50 sets this process saw, then"
            " '(other)').",
            ["status", "provider", "configuration_set"],
            registry=self.registry,
        )
        self._status_children: dict[tuple[str, str, str], Any] = {}
        self._configuration_sets: set[str] = set()
        pipeline.on_changes(self.count_statuses)
        self.registry.register(_PipelineCollector(self))
        store_kind = type(store).__name__
        merge_child = self.merge_seconds.labels(store=store_kind)
        pipeline.merge_timers.append(merge_child.observe)
        pipeline.on_transitions(self.observe_transitions)
        self._latency_children = {
            status: self.latency_seconds.labels(step=step) for status, step in _LATENCY_OF.items()
        }

    def count_statuses(
        self, transitions: Sequence[Transition], writes: Sequence[MessageWrite]
    ) -> None:
        by_id = {write.message_id: write for write in writes}
        children = self._status_children
        for transition in transitions:
            write = by_id.get(transition.message_id)
            configuration_set = self._label(_configuration_set(write.groups) if write else NONE)
            providers = write.providers if write else {}
            provider = providers.get(domain_of(transition.recipient), OTHER_PROVIDER)
            statuses = (transition.to_status,)
            if transition.from_status is None and transition.to_status != "sent":
                statuses = ("sent", transition.to_status)
            for status in statuses:
                key = (status, provider, configuration_set)
                child = children.get(key)
                if child is None:
                    child = children[key] = self.recipient_statuses.labels(*key)
                child.inc()

    def _label(self, configuration_set: str) -> str:
        """Bounded: configuration sets come from senders' tags."""
        if configuration_set in self._configuration_sets:
            return configuration_set
        if len(self._configuration_sets) >= MAX_CONFIGURATION_SET_LABELS:
            return OTHER_LABEL
        self._configuration_sets.add(configuration_set)
        return configuration_set

    def observe_transitions(self, transitions: Sequence[Transition]) -> None:
        children = self._latency_children
        # A recipient first seen already delivered counts too: many SES setups do not
        # publish Send events, and mail.timestamp gives the send time regardless.
        for transition in transitions:
            child = children.get(transition.to_status)
            # No latency without a send time (an event that lacked mail.timestamp).
            if child is not None and transition.latency_ms is not None:
                child.observe(transition.latency_ms / 1000)


class _PipelineCollector(Collector):
    def __init__(self, measured: Metrics) -> None:
        self.measured = measured

    def collect(self) -> Iterator[Metric]:
        measured = self.measured
        pipeline = measured.pipeline
        records = CounterMetricFamily(
            "ses_tracker_records", "Records read, by source.", labels=["source"]
        )
        events = CounterMetricFamily(
            "ses_tracker_events",
            "Events merged into the store, by source and type.",
            labels=["source", "type"],
        )
        rejected = CounterMetricFamily(
            "ses_tracker_records_rejected",
            "Records rejected as malformed, by source and reason code.",
            labels=["source", "reason"],
        )
        ignored = CounterMetricFamily(
            "ses_tracker_records_ignored",
            "Records with no delivery state, by source.",
            labels=["source"],
        )
        dropped = CounterMetricFamily(
            "ses_tracker_recipients_dropped",
            "Recipients dropped from kept events, by source and reason code "
            "(too_many: past the per-event cap; bad_address: not an address).",
            labels=["source", "reason"],
        )
        refused = CounterMetricFamily(
            "ses_tracker_merges_refused",
            "Messages the store refused to merge for what they hold (poison: parked, "
            "not retried), by source; an outage shows in ses_tracker_consumer_up instead.",
            labels=["source"],
        )
        for source, counters in pipeline.counters.items():
            records.add_metric([source], counters.records)
            refused.add_metric([source], counters.merge_refused)
            for reason, count in counters.dropped_reasons.items():
                dropped.add_metric([source, reason], count)
            ignored.add_metric([source], counters.ignored)
            for kind, count in counters.by_type.items():
                events.add_metric([source, kind], count)
            for reason, count in counters.reasons.items():
                rejected.add_metric([source, reason], count)
        yield from (records, events, rejected, ignored, dropped, refused)

        up = GaugeMetricFamily(
            "ses_tracker_consumer_up",
            "1 when the consumer is connected and healthy.",
            labels=["consumer"],
        )
        lag = GaugeMetricFamily(
            "ses_tracker_kafka_lag",
            "Records behind the end of each partition.",
            labels=["partition"],
        )
        dead = CounterMetricFamily(
            "ses_tracker_dead_lettered",
            "Records parked in a dead-letter topic or left for redrive.",
            labels=["consumer"],
        )
        blocked = GaugeMetricFamily(
            "ses_tracker_kafka_dlq_blocked_partitions",
            "Partitions paused because their dead letters could not be parked.",
        )
        dlq_failures = CounterMetricFamily(
            "ses_tracker_kafka_dead_letter_failures",
            "Dead letters the DLQ topic refused (their partition was paused and retried).",
        )
        stalled = GaugeMetricFamily(
            "ses_tracker_kafka_stalled_partitions",
            "Partitions behind the broker whose position has not moved for a minute.",
        )
        resets = CounterMetricFamily(
            "ses_tracker_kafka_checkpoints_reset",
            "Stored checkpoints found outside their partition's log and not used.",
        )
        event_lag = GaugeMetricFamily(
            "ses_tracker_event_lag_seconds",
            "How far behind real time each source reads, by the events' own time: now minus"
            " the newest event read while more waits, else that event's age when read.",
            labels=["source", "position"],
        )
        for name, positions in measured.event_lags().items():
            for position, seconds in positions.items():
                event_lag.add_metric([name, position], seconds)
        for source in measured.sources:
            up.add_metric([source.name], 1.0 if source.healthy else 0.0)
            status = source.status()
            if "stalled" in status:
                stalled.add_metric([], len(status["stalled"]))
                resets.add_metric([], status["checkpoints_reset"])
            if "dlq_blocked" in status:
                blocked.add_metric([], len(status["dlq_blocked"]))
                dlq_failures.add_metric([], getattr(source, "dead_letter_failures", 0))
            for partition, behind in status.get("lag", {}).items():
                lag.add_metric([partition], behind)
            parked = status.get("dead_lettered", status.get("left_for_redrive"))
            if parked is not None:
                dead.add_metric([source.name], parked)
        yield from (up, lag, dead, blocked, dlq_failures, stalled, resets, event_lag)

        if measured.live is not None:
            clients = GaugeMetricFamily(
                "ses_tracker_websocket_clients", "Connected /v1/live clients."
            )
            clients.add_metric([], measured.live.clients)
            dropped = CounterMetricFamily(
                "ses_tracker_websocket_dropped", "Clients closed (1013) for reading too slowly."
            )
            dropped.add_metric([], measured.live.dropped_slow)
            refused = CounterMetricFamily(
                "ses_tracker_websocket_refused",
                "Clients closed at the handshake by a cap: total (1013), per_address (1008).",
                labels=["cap"],
            )
            for cap, count in measured.live.refused.items():
                refused.add_metric([cap], count)
            yield from (clients, dropped, refused)

        parsing = measured.pipeline.parsing
        busy = GaugeMetricFamily(
            "ses_tracker_parse_pool_busy", "Large payloads admitted to or waiting for a parse."
        )
        busy.add_metric([], parsing.busy)
        parse_refused = CounterMetricFamily(
            "ses_tracker_parse_refused", "HTTP bodies answered 429: every parse slot was taken."
        )
        parse_refused.add_metric([], parsing.refused)
        yield from (busy, parse_refused)

        yield from _alert_metrics(measured.alerting)
        yield from _forward_metrics(measured.forwarding())

        if measured.erasures is not None:
            yield from _erasure_metrics(measured.erasures, measured.store)
        if measured.audit is not None:
            yield from _audit_metrics(measured.audit)
        if measured.config_files is not None:
            yield from _reload_metrics(measured.config_files)
        if measured.redis_memory is not None:
            yield from _redis_memory_metrics(measured.redis_memory)
        yield from _dependency_metrics()

        store = measured.store
        # The Redis store's statistics projection (a cache in front hands it through).
        projection = getattr(store, "projection", None)
        if projection is not None:
            yield from _projection_metrics(projection)
        stored = getattr(store, "__len__", None)
        if stored is not None:
            size = GaugeMetricFamily(
                "ses_tracker_memory_store_messages", "Messages held by the in-memory store."
            )
            size.add_metric([], len(store))  # type: ignore[arg-type]
            held = GaugeMetricFamily(
                "ses_tracker_memory_store_bytes",
                "Estimated bytes held by the in-memory store (bounded by MEMORY_MAX_BYTES).",
            )
            held.add_metric([], getattr(store, "bytes", 0))
            limit = GaugeMetricFamily(
                "ses_tracker_memory_store_max_bytes",
                "The in-memory store's limit (MEMORY_MAX_BYTES): past it, the least recently "
                "updated messages are evicted.",
            )
            limit.add_metric([], getattr(store, "max_bytes", 0))
            yield limit
            dropped = CounterMetricFamily(
                "ses_tracker_memory_store_dropped",
                "What the in-memory store let go past its share of MEMORY_MAX_BYTES: the "
                "oldest suppressions, and outbox entries before every subscription had them.",
                labels=["kind"],
            )
            dropped.add_metric(["suppressions"], getattr(store, "suppressions_dropped", 0))
            outbox = getattr(store, "outbox", None)
            dropped.add_metric(["forward_outbox"], getattr(outbox, "lost", 0))
            yield from (size, held, dropped)


def _dependency_metrics() -> Iterator[Metric]:
    """Outages of what the service depends on (service.outages)."""
    up = GaugeMetricFamily(
        "ses_tracker_dependency_up",
        "1 while the dependency answers, 0 from its first failure to its next success.",
        labels=["dependency"],
    )
    failures = CounterMetricFamily(
        "ses_tracker_dependency_failures",
        "Calls to the dependency that failed for an outage (each logged once per outage).",
        labels=["dependency"],
    )
    for name, dependency in sorted(OUTAGES.dependencies.items()):
        up.add_metric([name], 1 if dependency.up else 0)
        failures.add_metric([name], dependency.failures)
    yield from (up, failures)


def _redis_memory_metrics(memory: Any) -> Iterator[Metric]:
    """Each Redis master's memory, as last sampled (service.stores.redis.memory)."""
    used = GaugeMetricFamily(
        "ses_tracker_redis_memory_used_bytes",
        "Memory a Redis master uses (INFO used_memory), sampled every 15 s.",
        labels=["node"],
    )
    limit = GaugeMetricFamily(
        "ses_tracker_redis_memory_max_bytes",
        "A Redis master's maxmemory; 0 when it has none. Under noeviction, a master at "
        "its limit refuses every merge.",
        labels=["node"],
    )
    for node, (used_bytes, max_bytes) in sorted(memory.nodes.items()):
        used.add_metric([node], used_bytes)
        limit.add_metric([node], max_bytes)
    yield from (used, limit)


def _reload_metrics(config_files: Any) -> Iterator[Metric]:
    """Re-reads of the rules and forwarding files (service.reload)."""
    success = GaugeMetricFamily(
        "ses_tracker_config_reload_success",
        "1 when the file's last read was applied; 0 when it failed and the running "
        "configuration was kept (log line config_reload_failed says why).",
        labels=["file"],
    )
    last = GaugeMetricFamily(
        "ses_tracker_config_reload_last_success_seconds",
        "When the file was last read and applied (Unix time).",
        labels=["file"],
    )
    for name, ok, at_s in config_files.figures():
        success.add_metric([name], 1.0 if ok else 0.0)
        last.add_metric([name], at_s)
    reloads = CounterMetricFamily(
        "ses_tracker_config_reloads", "Reads of a changed or asked-for file, by result.",
        labels=["file", "result"],
    )  # fmt: skip
    for (name, result), count in sorted(config_files.reloads.items()):
        reloads.add_metric([name, result], count)
    yield from (success, last, reloads)


def _erasure_metrics(erasures: Any, store: Any) -> Iterator[Metric]:
    """Erasure jobs (service.erasure_job) and the merges they made strip again."""
    finished = CounterMetricFamily(
        "ses_tracker_erasures_finished", "Erasure jobs this process finished."
    )
    finished.add_metric([], erasures.finished)
    failed = CounterMetricFamily(
        "ses_tracker_erasure_failures",
        "Erasure job attempts that failed with an unexpected error (retried; logged).",
    )
    failed.add_metric([], erasures.failures)
    restripped = CounterMetricFamily(
        "ses_tracker_merge_calls_restripped",
        "Merge calls sent again because an erasure changed the tombstones meanwhile.",
    )
    restripped.add_metric([], getattr(store, "stale_erasure_calls", 0))
    yield from (finished, failed, restripped)


def _audit_metrics(auditor: Any) -> Iterator[Metric]:
    """The audit log's entries (service.audit): recorded, and lost to an outage."""
    entries = CounterMetricFamily(
        "ses_tracker_audit_entries",
        "Audit log entries this process recorded, and those it could not write (logged).",
        labels=["result"],
    )
    entries.add_metric(["recorded"], auditor.recorded)
    entries.add_metric(["failed"], auditor.failed)
    yield entries


def _projection_metrics(projection: Any) -> Iterator[Metric]:
    """The statistics projection of the change log (service.stores.redis.projection)."""
    figures = (
        (CounterMetricFamily, "ses_tracker_projection_entries_applied",
         "Change log entries this process applied to its projection.",
         projection.applied_entries),
        (CounterMetricFamily, "ses_tracker_projection_runs",
         "Projection runs (one atomic step each).", projection.runs),
        (CounterMetricFamily, "ses_tracker_projection_fell_behind",
         "Runs that found change log entries trimmed before they were applied (a"
         " projection stalled longer than the log is kept): those statistics are short.",
         projection.lost),
        (CounterMetricFamily, "ses_tracker_projection_skipped",
         "Log entries or targets a projection could not apply and passed over.",
         projection.skipped),
        (GaugeMetricFamily, "ses_tracker_projection_leases",
         "Slot groups whose projection this process holds the lease of (0 or 1 without a"
         " cluster; one process of a fleet holds each).", projection.leases),
        (GaugeMetricFamily, "ses_tracker_projection_delay_seconds",
         "Seconds from a merge to its statistics being applied, for the oldest entry of"
         " this process's last run.", projection.last_delay_s),
    )  # fmt: skip
    for family, name, documentation, value in figures:
        metric = family(name, documentation, labels=["projection"])
        metric.add_metric(["stats"], value)
        yield metric


def _forward_metrics(subscriptions: list[dict[str, Any]]) -> Iterator[Metric]:
    if not subscriptions:
        return
    sent = CounterMetricFamily(
        "ses_tracker_forward_items_sent",
        "Changes delivered to a forwarding subscription by this replica.",
        labels=["subscription"],
    )
    failed = CounterMetricFamily(
        "ses_tracker_forward_post_failures",
        "Forwarding posts that failed (each is retried).",
        labels=["subscription"],
    )
    queued = GaugeMetricFamily(
        "ses_tracker_forward_queued",
        "Outbox entries (merges) a subscription has not yet acknowledged.",
        labels=["subscription"],
    )
    oldest = GaugeMetricFamily(
        "ses_tracker_forward_oldest_seconds",
        "Age of the oldest change waiting for a subscription (0 with none).",
        labels=["subscription"],
    )
    for subscription in subscriptions:
        name = [subscription["name"]]
        sent.add_metric(name, subscription["sent"])
        failed.add_metric(name, subscription["failed"])
        queued.add_metric(name, subscription["queued"])
        oldest.add_metric(name, subscription["oldest_s"] or 0.0)
    yield from (sent, failed, queued, oldest)


def _alert_metrics(alerting: Alerting) -> Iterator[Metric]:
    notices = CounterMetricFamily(
        "ses_tracker_alert_deliveries",
        "Alert posts by sink kind and outcome (delivered, retrying, refused, given_up).",
        labels=["sink", "outcome"],
    )
    for (kind, outcome), count in alerting.deliveries.items():
        notices.add_metric([kind, outcome], count)
    evaluations = CounterMetricFamily(
        "ses_tracker_alert_evaluations", "Rule evaluations run by this replica."
    )
    evaluations.add_metric([], alerting.evaluations)
    errors = CounterMetricFamily(
        "ses_tracker_alert_evaluation_errors", "Rule evaluations that failed (store errors)."
    )
    errors.add_metric([], alerting.evaluation_errors)
    leading = GaugeMetricFamily(
        "ses_tracker_alert_leader", "1 when this replica holds the alert lease."
    )
    leading.add_metric([], 1.0 if alerting.leading else 0.0)
    held = CounterMetricFamily(
        "ses_tracker_alert_resolutions_held",
        "Window alerts kept firing because a source was catching up when they cleared.",
    )
    held.add_metric([], alerting.held)
    backlog = GaugeMetricFamily(
        "ses_tracker_alert_outbox",
        "Alert notices waiting for a sink (including the one being posted).",
        labels=["sink"],
    )
    for sink, waiting in alerting.backlog.items():
        backlog.add_metric([sink], waiting)
    dropped = CounterMetricFamily(
        "ses_tracker_account_events_dropped",
        "Account-level events dropped: not_listed (SES_TRACKER_ACCOUNT_IDS), not_an_account_id.",
        labels=["reason"],
    )
    for reason, count in alerting.accounts_dropped.items():
        dropped.add_metric([reason.value], count)
    yield from (notices, evaluations, errors, leading, backlog, held, dropped)
