"""Alerting at run time: evaluate the rules on a timer, send the outbox, per sink.

Ingestion never waits on any of this. The evaluator reads what the merges already
counted (stats buckets, the pending index) on its own timer; each sink has its own
sender task reading the outbox; the pipeline's only hook is a callback that queues
account events. A sink that hangs or refuses holds up nothing but its own outbox.

With Redis, every replica runs the same tasks, but only the holder of the alert
lease evaluates and sends, and its commits are fenced by the lease: an alert fires
once however many replicas there are, and another replica takes over within a
lease period if the holder dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from service import state
from service.alerts.accounts import AccountPolicy, Dropped, clamped, loggable
from service.alerts.bounds import bounded
from service.alerts.delivery import Deliverer, FinalDeliveryError, RetryableDeliveryError
from service.alerts.evaluate import (
    WINDOW_RULES,
    AccountStatus,
    Inputs,
    OverdueMessage,
    SourceHealth,
    TrackerHealth,
    dimensions_needed,
    evaluate,
    windows_needed,
)
from service.alerts.lifecycle import Finding, due_for_notice, plan
from service.alerts.model import Alert, Example
from service.alerts.rules import RuleSet, TrackerRule
from service.alerts.sinks import Sink
from service.alerts.store import AlertStore, OutboxEntry
from service.alerts.windows import WindowReader
from service.clock import wall_clock_ms
from service.codec import decode_header
from service.events import AccountEvent
from service.lag import DEFAULT_CATCH_UP_S
from service.outages import OUTAGES, STORE
from service.search import MAX_LIMIT, SearchQuery
from service.stores.base import Store, StoreUnavailable
from service.stores.redis.errors import REDIS_UNAVAILABLE, unavailable
from service.view import ViewOptions, recipient_diagnosis

log = structlog.get_logger(__name__)

EXAMPLES_SHOWN = 5
# An entry is hidden from other claims this long; longer than one Deliverer.send
# can take (attempts x (timeout + capped wait)), so it is not sent twice meanwhile.
CLAIM_VISIBILITY_MS = 10 * 60 * 1000
# After a send ran out of attempts, the entry waits, doubling up to this...
RETRY_CAP_MS = 30 * 60 * 1000
# ...and is dropped after this long undelivered (a day of a sink down).
GIVE_UP_AFTER_MS = 24 * 3600 * 1000
SENDER_IDLE_S = 1.0


# A replica's source figures count while this recent (they are noted every tick).
HEALTH_FRESH_MS = 120_000
# Account events dropped are logged at most once per this (with the count meanwhile).
DROP_LOG_EVERY_MS = 60_000


def _diagnosed(
    example: Example, record: state.MessageRecord | None, options: ViewOptions
) -> Example:
    """``example`` with its recipient's diagnosis, when the record still names it."""
    if record is None or example.recipient is None or example.recipient not in record.recipients:
        return example
    diagnosis = recipient_diagnosis(record, example.recipient, options)
    return dataclasses.replace(example, diagnosis=diagnosis.brief())


def source_health(replica: str, status: dict[str, Any]) -> SourceHealth:
    """A source's ``status()`` (``consumers``) as the tracker rule reads it."""
    return SourceHealth(
        replica=replica,
        name=str(status.get("name", "?")),
        state=str(status.get("state", "?")),
        failure=bool(status.get("failure")),
        stalled=tuple(status.get("stalled", ())),
        dlq_blocked=tuple(status.get("dlq_blocked", ())),
        lag=sum(status.get("lag", {}).values()),
        dead_letters=int(status.get("dead_lettered", 0) or 0)
        + int(status.get("left_for_redrive", 0) or 0),
        event_lag_s={str(k): float(v) for k, v in status.get("event_lag_s", {}).items()},
    )


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Alerting:
    """Evaluates the alert rules against the statistics and records, decides
    notices (fired, updated, repeated, resolved) and hands them to each sink's
    sender; one process of a fleet does it, under the alert lease. Rules reload
    without a restart (``apply_rules``).
    """

    def __init__(
        self,
        store: Store,
        alert_store: AlertStore,
        rules: RuleSet,
        sinks: Sequence[Sink],
        deliverer: Deliverer,
        *,
        overdue_after_s: float,
        public_url: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        owner: str | None = None,
        health_of: Callable[[], list[dict[str, Any]]] = list,
        catch_up_s: float = DEFAULT_CATCH_UP_S,
        accounts: AccountPolicy | None = None,
    ) -> None:
        self.store = store
        self.alert_store = alert_store
        self.sinks = list(sinks)
        self.deliverer = deliverer
        self.overdue_after_s = overdue_after_s
        self.public_url = public_url.rstrip("/") if public_url else None
        self.account_policy = accounts or AccountPolicy()
        # Account events dropped, by reason (a closed set: never the account itself).
        self.accounts_dropped: Counter[Dropped] = Counter()
        self._drops_unlogged = 0
        self._drop_logged_ms: int | None = None
        self.owner = owner or replica_name()
        self._clock_ms = clock_ms
        self.leading = False
        self.evaluations = 0
        self.evaluation_errors = 0
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (sink kind, outcome)
        # Entries waiting per sink (kind:host label), as each sender last saw them.
        self.backlog: dict[str, int] = {}
        self._in_flight: dict[str, OutboxEntry] = {}
        # This replica's sources, as their status() says (tracker rule).
        self._health_of = health_of
        # A source this far behind by event time holds window alerts' resolution.
        self.catch_up_s = catch_up_s
        self.catching_up: list[str] = []  # "<replica> <source> <position>", as last judged
        self.held = 0  # resolutions held back while catching up, for metrics
        self._holding: set[str] = set()
        # (time, dead letters, evictions) totals, to tell what grew in a window.
        self._samples: deque[tuple[int, int, int]] = deque()
        # Held by a tick from its first read of the rules to its commit, so a reload
        # never swaps them under one (its windows were read for the old rules).
        self._rules_in_use = asyncio.Lock()
        self._use_rules(rules)

    async def apply_rules(self, rules: RuleSet) -> None:
        """Evaluate ``rules`` from the next tick on (a reload, ``service.reload``).

        Alerts of rules no longer there resolve at that tick, as when a rule's
        condition clears; the lease and outbox carry on.
        """
        async with self._rules_in_use:
            self._use_rules(rules)

    def _use_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        self._window_reader = WindowReader(
            self.store, windows_needed(rules.rules), dimensions_needed(rules.rules)
        )
        # The tracker rules' longest window (ms); None when none watches the tracker.
        tracker_windows = [r.window_s for r in rules.rules if isinstance(r, TrackerRule)]
        self._tracker_window_ms = max(tracker_windows) * 1000 if tracker_windows else None

    @property
    def lease_ms(self) -> int:
        return max(5_000, int(self.rules.timing.evaluate_every_s * 3_000))

    # Evaluation ------------------------------------------------------------

    async def tick(self) -> list[Alert]:
        """Evaluate once, if this replica holds the lease; the notices committed."""
        async with self._rules_in_use:
            return await self._tick()

    async def _tick(self) -> list[Alert]:
        now_ms = self._clock_ms()
        # Every replica says how its own sources are; the lease holder judges.
        await self.alert_store.note_health(self.owner, {"at": now_ms, "sources": self._health_of()})
        self.leading = await self.alert_store.hold_lease(self.owner, self.lease_ms)
        if not self.leading:
            return []
        sources = await self._sources(now_ms)
        self.catching_up = [
            f"{source.replica} {source.name} {position}"
            for source in sources
            for position, lag_s in sorted(source.event_lag_s.items())
            if lag_s > self.catch_up_s
        ]
        inputs = await self._gather(now_ms, sources)
        # Off the event loop: judging an hour's groups must not stall ingestion.
        found = await asyncio.to_thread(evaluate, self.rules.rules, inputs)
        findings = {
            key: None if finding is None else bounded(finding) for key, finding in found.items()
        }
        records = await self.alert_store.records()
        self._hold_resolutions(findings, records)
        timing = self.rules.timing
        for key, finding in findings.items():
            if finding is not None and due_for_notice(records.get(key), finding, now_ms, timing):
                findings[key] = await self._with_examples(finding, now_ms)
        changes = plan(records, findings, now_ms, timing, self._status_page())
        self.evaluations += 1
        if not changes:
            return []
        sink_ids = [sink.id for sink in self.sinks]
        if not await self.alert_store.commit(self.owner, changes, sink_ids, now_ms):
            self.leading = False  # the lease moved on mid-evaluation: the other one fires
            return []
        for notice in changes.notices:
            log.warning(
                "alert", key=notice.key, state=notice.state.value,
                severity=notice.severity.value, title=notice.title,
            )  # fmt: skip
        return changes.notices

    def _hold_resolutions(
        self, findings: dict[str, Finding | None], records: dict[str, Any]
    ) -> None:
        """Leave window alerts as they are where they would clear now: their windows
        miss what the lagging source has not read yet, so clear means unknown. They
        may still fire (what was read is real) and resolve once it caught up."""
        holding: set[str] = set()
        if self.catching_up:
            for rule in self.rules.rules:
                if isinstance(rule, WINDOW_RULES) and findings.get(rule.name) is None:
                    findings.pop(rule.name, None)
                    if records.pop(rule.name, None) is not None:
                        holding.add(rule.name)
        for key in holding - self._holding:
            self.held += 1
            log.info("alert_resolution_held", key=key, behind=self.catching_up[:5])
        self._holding = holding

    async def _sources(self, now_ms: int) -> list[SourceHealth]:
        """Every replica's sources, as each noted them lately."""
        fresh_after = now_ms - HEALTH_FRESH_MS
        sources: list[SourceHealth] = []
        for replica, health in sorted((await self.alert_store.healths()).items()):
            if health.get("at", 0) < fresh_after:
                continue  # a replica gone away says nothing about now
            sources.extend(source_health(replica, status) for status in health.get("sources", []))
        return sources

    async def _gather(self, now_ms: int, sources: list[SourceHealth]) -> Inputs:
        windows = await self._window_reader.read(now_ms)
        overdue: list[OverdueMessage] = []
        more = False
        if any(rule.kind == "overdue" for rule in self.rules.rules):
            overdue, more = await self._overdue(now_ms)
        accounts = None
        if any(rule.kind == "sending_disabled" for rule in self.rules.rules):
            kept = await self.alert_store.accounts(now_ms)
            # Kept before SES_TRACKER_ACCOUNT_IDS was set (or changed): not counted.
            accounts = {a: s for a, s in kept.items() if self.account_policy.admits(a)}
        health = None
        if self._tracker_window_ms is not None:
            health = await self._health(now_ms, self._tracker_window_ms, sources)
        return Inputs(now_ms, windows, overdue, more, self.overdue_after_s, accounts, health)

    async def _health(
        self, now_ms: int, window_ms: int, sources: list[SourceHealth]
    ) -> TrackerHealth:
        """Every replica's recent source figures, the store's memory, the outboxes."""
        dead_letters = sum(source.dead_letters for source in sources)
        memory = await self.store.memory()
        evicted = memory.evicted if memory else 0
        self._samples.append((now_ms, dead_letters, evicted))
        while len(self._samples) > 1 and self._samples[1][0] <= now_ms - window_ms:
            self._samples.popleft()
        _, dead_before, evicted_before = self._samples[0]
        oldest = {}
        for sink in self.sinks:
            created = await self.alert_store.oldest_waiting_ms(sink.id)
            if created is not None:
                oldest[sink.name] = created
        return TrackerHealth(
            sources=tuple(sources),
            # Counters restart with their process: a drop is not negative growth.
            dead_letters_recent=max(0, dead_letters - dead_before),
            memory_used=memory.used_bytes if memory else None,
            memory_max=memory.max_bytes if memory else None,
            evicted_recent=max(0, evicted - evicted_before),
            outbox_oldest_ms=oldest,
        )

    async def _overdue(self, now_ms: int) -> tuple[list[OverdueMessage], bool]:
        deadline = now_ms - int(self.overdue_after_s * 1000)
        page = await self.store.search(
            SearchQuery(until_ms=deadline, limit=MAX_LIMIT, waiting=True)
        )
        messages = []
        for hit in reversed(page.hits):  # oldest first
            record = hit.record
            header = decode_header(record.header)
            if header is None or header.sent_at is None:
                continue  # indexed by an event's time, not a send time: never overdue
            waiting = tuple(
                (address, state.STATUSES[code])
                for address, flags in record.recipients.items()
                if (code := state.status_of(flags | record.message_flags)) <= state.DELAYED
            )
            messages.append(OverdueMessage(hit.message_id, hit.position.sent_at, waiting))
        return messages, page.next_after is not None

    async def _with_examples(self, finding: Finding, now_ms: int) -> Finding:
        """Examples (searched for when the rule named none) with each recipient's
        diagnosis, so a notice says what happened without a lookup."""
        options = ViewOptions(now_ms, int(self.overdue_after_s * 1000))
        query = finding.example_query
        examples = []
        if finding.examples:
            for example in finding.examples:
                record = None
                if example.recipient is not None and example.diagnosis is None:
                    record = await self.store.get(example.message_id)
                examples.append(_diagnosed(example, record, options))
        elif query is not None:
            page = await self.store.search(SearchQuery(status=query.status, limit=EXAMPLES_SHOWN))
            for hit in page.hits:
                wanted = [
                    a
                    for a in hit.record.recipients
                    if hit.record.recipient_status(a) == query.status
                ]
                example = Example(hit.message_id, wanted[0] if wanted else None, query.status)
                examples.append(_diagnosed(example, hit.record, options))
        else:
            return finding
        return dataclasses.replace(finding, examples=tuple(examples))

    def _status_page(self) -> str | None:
        return f"{self.public_url}/" if self.public_url else None

    async def run_evaluator(self, sleep: Callable[[float], object] = asyncio.sleep) -> None:
        while True:
            _honour_cancel()
            try:
                await self.tick()
                OUTAGES.ok(STORE)
            except (StoreUnavailable, *REDIS_UNAVAILABLE) as exc:
                # An outage (OSError: the alert state directory), said once.
                self.evaluation_errors += 1
                OUTAGES.failed(STORE, exc, part="alert evaluator")
            except Exception:
                self.evaluation_errors += 1
                log.exception("alert_evaluation_crashed")
            _honour_cancel()
            # Read each turn: a reload may change it.
            await sleep(self.rules.timing.evaluate_every_s)  # type: ignore[misc]

    # Account events --------------------------------------------------------

    async def on_account_event(self, event: AccountEvent) -> bool:
        """Pipeline hook: store the account's sending status before it is acknowledged.
        False: the event was dropped (an account that does not count), so the
        pipeline neither keeps nor logs it; it is counted here, by reason."""
        refused = self.account_policy.refuses(event.account)
        if refused is not None:
            self._dropped(refused, event)
            return False
        assert event.account is not None  # refuses() said it is an account id
        if event.detail_type not in ("Sending Status Disabled", "Sending Status Enabled"):
            return True
        now_ms = self._clock_ms()
        status = clamped(
            AccountStatus(not event.sending_disabled, event.at, event.detail_type), now_ms
        )
        with unavailable("account status save"):
            await self.alert_store.note_account(event.account, status, now_ms)
        return True

    def _dropped(self, reason: Dropped, event: AccountEvent) -> None:
        """Count a dropped account event; log the first, then one line a minute at
        most (a flood of forged accounts is one line with a count, not a line each)."""
        self.accounts_dropped[reason] += 1
        self._drops_unlogged += 1
        now_ms = self._clock_ms()
        if self._drop_logged_ms is not None and now_ms - self._drop_logged_ms < DROP_LOG_EVERY_MS:
            return
        log.warning(
            "account_events_dropped",
            count=self._drops_unlogged,
            reason=reason.value,
            latest_account=loggable(event.account, 16),
            latest_detail_type=loggable(event.detail_type),
            hint="SES_TRACKER_ACCOUNT_IDS lists the accounts whose events count",
        )
        self._drops_unlogged = 0
        self._drop_logged_ms = now_ms

    # Delivery --------------------------------------------------------------

    async def run_sender(
        self, sink: Sink, sleep: Callable[[float], object] = asyncio.sleep
    ) -> None:
        """Send ``sink``'s outbox, oldest first, while this replica holds the lease."""
        while True:
            _honour_cancel()
            try:
                sent = await self.send_due(sink)
                self.backlog[sink.name] = await self.alert_store.pending(sink.id)
            except (StoreUnavailable, *REDIS_UNAVAILABLE) as exc:
                OUTAGES.failed(STORE, exc, part=f"alert sender {sink.name}")
                sent = 0
            except Exception:
                log.exception("alert_sender_crashed", sink=sink.name)
                sent = 0
            _honour_cancel()
            if not sent:
                await sleep(SENDER_IDLE_S)  # type: ignore[misc]

    async def send_due(self, sink: Sink) -> int:
        """Send what is due for ``sink`` now; how many entries were handled."""
        if not self.leading:
            return 0
        now_ms = self._clock_ms()
        entries = await self.alert_store.claim(sink.id, now_ms, now_ms + CLAIM_VISIBILITY_MS, 10)
        if entries:  # seen before posting: a hung post must not hide its backlog
            self.backlog[sink.name] = await self.alert_store.pending(sink.id)
        # Cancelled mid-batch, what is left in flight goes back at stop (release).
        for entry in entries:
            self._in_flight[entry.id] = entry
        for entry in entries:
            await self._send(sink, entry)
            del self._in_flight[entry.id]
        return len(entries)

    async def _send(self, sink: Sink, entry: OutboxEntry) -> None:
        try:
            await self.deliverer.send(sink, entry.alert)
        except RetryableDeliveryError as exc:
            now_ms = self._clock_ms()
            if now_ms - entry.created_ms > GIVE_UP_AFTER_MS:
                self.deliveries[(sink.kind, "given_up")] += 1
                log.error("alert_given_up", sink=sink.name, key=entry.alert.key, error=str(exc))
                await self.alert_store.finish(entry)
                return
            self.deliveries[(sink.kind, "retrying")] += 1
            wait_ms = min(RETRY_CAP_MS, 60_000 * 2 ** min(entry.attempts, 10))
            await self.alert_store.reschedule(entry, now_ms + wait_ms)
            return
        except FinalDeliveryError as exc:
            self.deliveries[(sink.kind, "refused")] += 1
            log.error("alert_refused_for_good", sink=sink.name, key=entry.alert.key, error=str(exc))
            await self.alert_store.finish(entry)
            return
        self.deliveries[(sink.kind, "delivered")] += 1
        await self.alert_store.finish(entry)

    async def stop(self) -> None:
        """After the tasks are cancelled: put claimed, unsent entries back."""
        if self._in_flight:
            try:
                await self.alert_store.release(list(self._in_flight.values()), self._clock_ms())
            except Exception:
                log.exception("alert_outbox_release_failed")
            self._in_flight.clear()
        if self.leading:
            try:
                await self.alert_store.drop_lease(self.owner)
            except Exception:
                log.warning("alert_lease_not_dropped", exc_info=True)
            self.leading = False
        await self.deliverer.aclose()
        await self.alert_store.close()


def _honour_cancel() -> None:
    """Raise if this task was asked to stop: redis-py can swallow a cancellation
    (turning it into a connection error, or retrying the command)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
