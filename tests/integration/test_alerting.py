"""Alerting end to end in one process: events in, rules evaluated, notices posted.

The clock is a fake one shared by the pipeline (which stamps stats buckets) and the
alert engine, so group_wait, group_interval and windows are stepped through exactly;
the stores, the outbox and the chat receiver are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import structlog

from service.alerts.accounts import ACCOUNT_TTL_MS, AccountPolicy, Dropped
from service.alerts.delivery import Deliverer
from service.alerts.engine import Alerting
from service.alerts.evaluate import AccountStatus
from service.alerts.model import AlertState, Severity, alert_to_dict
from service.alerts.redis_store import RedisAlertStore
from service.alerts.rules import parse_rules
from service.alerts.sinks import Sink, parse_webhooks
from service.alerts.store import AlertStore, MemoryAlertStore
from service.pipeline import Pipeline
from service.stores import MemoryStore, Store
from service.stores.redis.keyspace import RedisKeyspace
from service.timestamps import parse_ms
from tests.support import ses
from tests.support.chat import checker
from tests.support.clock import ManualClock
from tests.support.receiver import Answer, Receiver
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

T0 = ses.SENT_AT  # the clock starts when the test mail is sent
S = 1000
FAST = {"backoff_s": 0.01, "max_wait_s": 0.1, "min_interval_s": {}}

BOUNCE_RULES = """
timing: {group_wait_s: 30, group_interval_s: 300, repeat_interval_s: 3600}
rules:
  - {name: bounce-rate, kind: bounce_rate, warn: 0.05, critical: 0.5, min_sent: 10,
     window_s: 300}
  - {name: bounce-rate-by-domain, kind: bounce_rate, warn: 0.05, min_sent: 10, window_s: 300,
     by: domain}
"""


SECRET = b"0123456789abcdef"
check_by_path = checker(SECRET)


@dataclass
class Bench:
    """One replica's alerting, wired to real stores and a receiver."""

    pipeline: Pipeline
    alerting: Alerting
    receiver: Receiver
    clock: ManualClock

    @property
    def sink(self) -> Sink:
        return self.alerting.sinks[0]

    async def at(self, seconds: float) -> list:
        """Move the clock to T0 + ``seconds`` and evaluate once."""
        self.clock.ms = T0 + int(seconds * S)
        return await self.alerting.tick()

    async def send_outbox(self) -> int:
        handled = 0
        for sink in self.alerting.sinks:
            handled += await self.alerting.send_due(sink)
        return handled


def make_alerting(
    store: Store,
    alert_store: AlertStore,
    rules: str,
    sinks: list[Sink],
    clock: ManualClock,
    health_of: Callable[[], list[dict]] = list,
    owner: str | None = None,
    accounts: AccountPolicy | None = None,
    **deliverer: object,
) -> Alerting:
    """One replica's alerting; its deliverer owns its HTTP client (stop closes it)."""
    return Alerting(
        store,
        alert_store,
        parse_rules(rules),
        sinks,
        Deliverer(httpx.AsyncClient(), secret=SECRET, **{**FAST, **deliverer}),  # type: ignore[arg-type]
        overdue_after_s=900,
        public_url="https://tracker.example",
        clock_ms=clock,
        health_of=health_of,
        owner=owner,
        accounts=accounts,
    )


@pytest.fixture(params=["memory", "redis", "cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def stores(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], tuple[Store, AlertStore]]:
    """A factory of (message store, alert store) pairs that share state, as replicas
    (Redis, one or a cluster) or as one process restarted on the same directory
    (memory)."""
    prefix = f"al{uuid.uuid4().hex[:8]}:"
    memory = MemoryStore()
    target = None
    if kind == "cluster":
        target = RedisTarget("cluster", request.getfixturevalue("redis_cluster").url)
    elif kind != "memory":
        target = RedisTarget("single", request.getfixturevalue("redis_server").url)

    def make() -> tuple[Store, AlertStore]:
        if target is None:
            return memory, MemoryAlertStore(tmp_path / "alerts")
        store = target.store(prefix=prefix)
        # On connections of its own, as another replica's.
        alerts = RedisAlertStore(
            dataclasses.replace(store.keyspace, client=target.client()), owns_client=True
        )
        return store, alerts

    return make


@pytest.fixture
async def bench(stores, kind: str) -> AsyncIterator[Bench]:
    clock = ManualClock(T0)
    store, alert_store = stores()
    async with Receiver(check_by_path) as receiver:
        sinks = parse_webhooks(f"slack={receiver.base}/slack,webhook={receiver.base}/webhook")
        alerting = make_alerting(store, alert_store, BOUNCE_RULES, sinks, clock)
        pipeline = Pipeline(store, clock_ms=clock)
        yield Bench(pipeline, alerting, receiver, clock)
        await alerting.stop()
        if kind != "memory":
            await store.close()


async def mail(pipeline: Pipeline, domain: str, sent: int, bounced: int, tag: str = "") -> None:
    records = []
    for n in range(sent):
        message_id = f"{tag}{domain}-{n}"
        records.append(ses.send(message_id, [f"r{n}@{domain}"]))
        if n < bounced:
            records.append(ses.bounce(message_id, [f"r{n}@{domain}"], ses.SENT_AT + 2000))
    await pipeline.ingest(ses.dumps(*records), "test")


async def test_a_bounce_breach_notifies_once_per_group_and_resolves_later(bench: Bench) -> None:
    await mail(bench.pipeline, "x.com", sent=40, bounced=8)  # 20%
    await mail(bench.pipeline, "y.com", sent=40, bounced=0)
    assert await bench.at(0) == []  # group_wait holds the first notice
    assert await bench.at(20) == []
    fired = await bench.at(30)
    assert sorted(alert.key for alert in fired) == ["bounce-rate", "bounce-rate-by-domain"]
    by_key = {alert.key: alert for alert in fired}
    assert by_key["bounce-rate"].figures["bounce rate"] == "10% (8 of 80)"
    assert by_key["bounce-rate-by-domain"].title == "Bounce rate 20% at x.com"
    assert by_key["bounce-rate"].severity is Severity.WARNING
    examples = by_key["bounce-rate"].examples
    assert examples and all(e.message_id.startswith("x.com-") for e in examples)
    # The link opens the status page on the first example.
    assert (
        by_key["bounce-rate"].link == f"https://tracker.example/?message={examples[0].message_id}"
    )
    for second in range(40, 300, 10):  # the condition holds: nothing more
        assert await bench.at(second) == []
    # The window slides past the bounces (only the sends' buckets are in it).
    assert await bench.at(320) == []  # clear, but within group_interval of the notice
    resolved = await bench.at(330)
    assert sorted(a.key for a in resolved) == ["bounce-rate", "bounce-rate-by-domain"]
    assert {a.state for a in resolved} == {AlertState.RESOLVED}
    assert await bench.at(400) == []

    assert await bench.send_outbox() == 8  # 4 notices x 2 sinks
    assert len(bench.receiver.received) == 8 and bench.receiver.refusals == []
    generic = [r.json() for r in bench.receiver.received if r.path == "/webhook"]
    assert [(g["key"], g["state"]) for g in generic] == [
        ("bounce-rate", "firing"),
        ("bounce-rate-by-domain", "firing"),
        ("bounce-rate", "resolved"),
        ("bounce-rate-by-domain", "resolved"),
    ]
    history = await bench.alerting.alert_store.history(10)
    assert [a.state for a in history] == [AlertState.RESOLVED] * 2 + [AlertState.FIRING] * 2
    assert await bench.send_outbox() == 0


async def test_a_window_alert_does_not_resolve_while_a_source_catches_up(stores, kind: str) -> None:
    """A source reading hour-old events means the last minutes are not in yet: an
    empty window then says nothing, so a firing alert stays until it caught up."""
    store, alert_store = stores()
    clock = ManualClock(T0)
    lag_s = {"ses-events:0": 0.0}
    health = [{"name": "kafka", "state": "consuming", "event_lag_s": lag_s}]
    alerting = make_alerting(store, alert_store, BOUNCE_RULES, [], clock, lambda: health)
    await mail(Pipeline(store, clock_ms=clock), "x.com", sent=40, bounced=8)
    await alerting.tick()
    clock.ms += 30 * S
    assert len(await alerting.tick()) == 2
    clock.ms += 300 * S  # the bounces left the window...
    lag_s["ses-events:0"] = 3_000.0  # ...while the consumer is 50 minutes behind
    assert await alerting.tick() == []
    assert alerting.catching_up == [f"{alerting.owner} kafka ses-events:0"]
    assert alerting.held == 2
    assert set(await alerting.alert_store.records()) == {"bounce-rate", "bounce-rate-by-domain"}
    clock.ms += 60 * S
    assert await alerting.tick() == [] and alerting.held == 2  # counted once per hold
    lag_s["ses-events:0"] = 4.0  # caught up: the empty window now means clear
    resolved = await alerting.tick()
    assert {(a.key, a.state) for a in resolved} == {
        ("bounce-rate", AlertState.RESOLVED),
        ("bounce-rate-by-domain", AlertState.RESOLVED),
    }
    await alerting.stop()
    if kind != "memory":
        await store.close()


async def test_500_then_429_then_200_is_delivered_once_through_the_outbox(bench: Bench) -> None:
    await mail(bench.pipeline, "x.com", sent=20, bounced=10)
    await bench.at(0)
    await bench.at(30)
    bench.receiver.script = [Answer(500), Answer(429, {"Retry-After": "0"}), Answer(200)]
    slack = bench.alerting.sinks[0]
    assert await bench.alerting.send_due(slack) == 2  # both alerts, the first retried twice
    slack_posts = [r for r in bench.receiver.received if r.path == "/slack"]
    assert len(slack_posts) == 4  # 500, 429, 200, then the second alert's 200
    assert slack_posts[0].body == slack_posts[1].body == slack_posts[2].body
    assert await bench.alerting.alert_store.pending(slack.id) == 0
    assert bench.alerting.deliveries[("slack", "delivered")] == 2


async def test_a_sink_down_for_every_attempt_is_rescheduled_not_lost(bench: Bench) -> None:
    await mail(bench.pipeline, "x.com", sent=20, bounced=10)
    await bench.at(0)
    await bench.at(30)
    slack = bench.alerting.sinks[0]
    bench.receiver.script = [Answer(503)] * 12  # every attempt of both alerts
    assert await bench.alerting.send_due(slack) == 2
    assert await bench.alerting.alert_store.pending(slack.id) == 2
    assert await bench.alerting.send_due(slack) == 0  # not due yet (backoff)
    bench.clock.ms += 61 * S
    assert await bench.alerting.send_due(slack) == 2
    assert await bench.alerting.alert_store.pending(slack.id) == 0


async def test_an_alert_queued_before_a_restart_is_sent_after_it(
    stores, kind: str, tmp_path: Path
) -> None:
    clock = ManualClock(T0)
    async with Receiver(check_by_path) as receiver:
        sinks = parse_webhooks(f"discord={receiver.base}/discord")
        store, alert_store = stores()
        before = make_alerting(store, alert_store, BOUNCE_RULES, sinks, clock)
        await mail(Pipeline(store, clock_ms=clock), "x.com", sent=20, bounced=10)
        await before.tick()
        clock.ms += 30 * S
        assert len(await before.tick()) == 2
        # The service hangs on the first post and is stopped mid-send.
        receiver.script = [Answer(hang_s=10)]
        sender = asyncio.create_task(before.run_sender(sinks[0]))
        while not receiver.received:  # noqa: ASYNC110 - polling a local receiver
            await asyncio.sleep(0.01)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await before.stop()
        if kind != "memory":
            await store.close()

        _, alert_store = stores()  # a new process: nothing in memory carried over
        after = make_alerting(store, alert_store, BOUNCE_RULES, sinks, clock)
        assert await after.tick() == []  # takes the lease; the alerts were already sent
        assert await after.send_due(sinks[0]) == 2
        titles = [r.json()["embeds"][0]["title"] for r in receiver.received[1:]]
        assert len(titles) == 2 and all("Bounce rate" in title for title in titles)
        await after.stop()


async def test_only_the_lease_holder_evaluates_and_a_stale_holder_cannot_commit(
    redis_target: RedisTarget,
) -> None:
    clock = ManualClock(T0)
    clients = [redis_target.client() for _ in range(2)]
    store = redis_target.store(prefix=f"al{uuid.uuid4().hex[:8]}:")

    def on(client) -> RedisKeyspace:
        return dataclasses.replace(store.keyspace, client=client)

    replicas = [
        make_alerting(store, RedisAlertStore(on(c), owns_client=True), BOUNCE_RULES, [], clock)
        for c in clients
    ]
    await mail(Pipeline(store, clock_ms=clock), "x.com", sent=20, bounced=10)
    a, b = replicas
    await asyncio.gather(a.tick(), b.tick())
    assert [a.leading, b.leading].count(True) == 1
    leader, other = (a, b) if a.leading else (b, a)
    clock.ms += 30 * S
    fired = await asyncio.gather(leader.tick(), other.tick())
    assert sorted(len(notices) for notices in fired) == [0, 2]
    # The leader stops (drops the lease); the other takes over at its next tick.
    await leader.stop()
    clock.ms += 10 * S
    assert await other.tick() == [] and other.leading
    assert len(await other.alert_store.history(10)) == 2  # nothing fired twice
    # A holder whose lease moved on cannot commit what it planned.
    stale = RedisAlertStore(on(redis_target.client()), owns_client=True)
    records = await stale.records()
    from service.alerts.lifecycle import plan

    changes = plan(records, {}, clock.ms + 10**9, parse_rules(BOUNCE_RULES).timing)
    assert changes.notices
    assert not await stale.commit(leader.owner, changes, [], clock.ms)
    assert len(await stale.history(10)) == 2
    await stale.close()
    await other.stop()
    await store.close()


async def written(alert_store: AlertStore, *, enabled: bool, now_ms: int) -> None:
    for _ in range(200):
        status = (await alert_store.accounts(now_ms)).get("123456789012")
        if status is not None and status.enabled is enabled:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("account status not written")


async def test_sending_disabled_is_critical_and_resolves_when_enabled(stores, kind: str) -> None:
    rules = "timing: {group_wait_s: 0, group_interval_s: 0}\nrules:\n"
    rules += "  - {name: paused, kind: sending_disabled}\n"
    store, alert_store = stores()
    clock = ManualClock(T0)
    clock.ms = parse_ms("2026-11-23T10:05:30Z")  # near the account events below
    alerting = make_alerting(store, alert_store, rules, [], clock)
    pipeline = Pipeline(store, clock_ms=clock)
    pipeline.on_account_event(alerting.on_account_event)

    def account_event(detail_type: str, time: str) -> bytes:
        record = ses.eventbridge({"sendingStatus": "x"}, detail_type)
        record["time"] = time
        return ses.dumps(record)

    await pipeline.ingest(account_event("Sending Status Disabled", "2026-11-23T10:00:01Z"), "t")
    # An older "enabled" arriving late does not un-pause the account.
    await pipeline.ingest(account_event("Sending Status Enabled", "2026-11-23T10:00:00Z"), "t")
    await written(alert_store, enabled=False, now_ms=clock.ms)  # beside ingestion, not in its path
    [fired] = await alerting.tick()
    assert fired.severity is Severity.CRITICAL and "123456789012" in fired.title
    await pipeline.ingest(account_event("Sending Status Enabled", "2026-11-23T10:05:00Z"), "t")
    await written(alert_store, enabled=True, now_ms=clock.ms)
    clock.ms += 10 * S
    [resolved] = await alerting.tick()
    assert resolved.state is AlertState.RESOLVED
    await alerting.stop()
    if kind != "memory":
        await store.close()


# --- #18: ses-tracker watching itself ---------------------------------------------------


async def test_the_tracker_alerts_on_its_own_sources_across_replicas(stores, kind: str) -> None:
    """Each replica notes its sources; the lease holder judges all of them. (Without
    Redis there is one process: it judges its own.)"""
    rules = "timing: {group_wait_s: 0, group_interval_s: 0}\nrules:\n"
    rules += "  - {name: tracker-health, kind: tracker, max_lag_records: 1000}\n"
    clock = ManualClock(T0)
    healthy = [{"name": "kafka", "state": "consuming", "failure": None, "lag": {"t:0": 10}}]
    sick = [
        {"name": "kafka", "state": "consuming", "failure": None, "stalled": ["t:1"],
         "lag": {"t:1": 5_000}},
        {"name": "sqs", "state": "retrying", "failure": "sqs: EndpointConnectionError"},
    ]  # fmt: skip
    store_b, alerts_b = stores()
    b = make_alerting(store_b, alerts_b, rules, [], clock, lambda: sick, owner="replica-b")
    replicas = [b]
    if kind != "memory":
        store_a, alerts_a = stores()
        a = make_alerting(store_a, alerts_a, rules, [], clock, lambda: healthy, owner="replica-a")
        replicas.insert(0, a)
        assert await a.tick() == []  # a leads, and its own sources are fine
        assert await b.tick() == []  # b only notes its sources: a holds the lease
    notices = await replicas[0].tick()
    [fired] = [n for n in notices if n.rule == "tracker"]
    assert "sqs on replica-b: down" in fired.summary
    assert "kafka on replica-b: stalled" in fired.summary
    assert "kafka on replica-b: lag" in fired.summary
    assert "replica-a" not in fired.summary  # its sources are fine
    for alerting in replicas:
        await alerting.stop()
    if kind != "memory":
        await store_a.close()
        await store_b.close()


# --- #23.8: account events from known accounts --------------------------------------------

GENUINE = "123456789012"
PAUSED_RULES = "timing: {group_wait_s: 0, group_interval_s: 0}\nrules:\n"
PAUSED_RULES += "  - {name: paused, kind: sending_disabled}\n"


def forged(count: int, detail_type: str, at: int) -> bytes:
    """``count`` account events, each naming an account of its own."""
    return ses.dumps(
        *(ses.eventbridge_account(detail_type, at, f"{900_000_000_000 + n}") for n in range(count))
    )


async def test_a_flood_of_forged_accounts_leaves_a_bounded_store_and_notice(
    stores, kind: str
) -> None:
    """Unset SES_TRACKER_ACCOUNT_IDS: 300 accounts in, at most 20 kept; forged
    "enabled" events push out running accounts before the paused one; the notice names
    five accounts and a count."""
    store, alert_store = stores()
    clock = ManualClock(T0)
    alerting = make_alerting(store, alert_store, PAUSED_RULES, [], clock)
    pipeline = Pipeline(store, clock_ms=clock)
    pipeline.on_account_event(alerting.on_account_event)
    genuine = ses.eventbridge_account("Sending Status Disabled", T0 - 1_000, GENUINE)
    await pipeline.ingest(ses.dumps(genuine), "t")
    clock.ms += S
    await pipeline.ingest(forged(300, "Sending Status Enabled", T0), "t")
    kept = await alert_store.accounts(clock.ms)
    assert len(kept) == 20 and not kept[GENUINE].enabled
    [fired] = await alerting.tick()
    assert fired.title == f"SES sending is paused for account {GENUINE}"
    clock.ms += S
    await pipeline.ingest(forged(300, "Sending Status Disabled", T0), "t")
    kept = await alert_store.accounts(clock.ms)
    assert len(kept) == 20 and all(not status.enabled for status in kept.values())
    [news] = await alerting.tick()
    assert news.title.endswith(" and 15 more") and news.title.count(", ") == 4
    assert len(news.figures) == 6 and news.figures["more accounts"] == "15"
    assert len(orjson.dumps(alert_to_dict(news))) < 2_000
    if kind != "memory":
        raw = redis_target_client(alert_store)
        assert await raw.hlen(alert_store._accounts_key) == 20  # the hash itself, not a view
    await alerting.stop()
    if kind != "memory":
        await store.close()


def redis_target_client(alert_store: AlertStore):
    assert isinstance(alert_store, RedisAlertStore)
    return alert_store._client


async def test_accounts_unseen_for_the_ttl_are_forgotten(stores, kind: str) -> None:
    store, alert_store = stores()
    status = AccountStatus(False, T0, "Sending Status Disabled")
    await alert_store.note_account(GENUINE, status, T0)
    if kind != "memory":
        ttl_ms = await redis_target_client(alert_store).pttl(alert_store._accounts_key)
        assert 0 < ttl_ms <= ACCOUNT_TTL_MS  # a quiet hash goes away on its own too
    assert GENUINE in await alert_store.accounts(T0 + ACCOUNT_TTL_MS - 1)
    assert await alert_store.accounts(T0 + ACCOUNT_TTL_MS) == {}
    if kind != "memory":
        await store.close()
    await alert_store.close()


def legacy_accounts(count: int) -> dict[str, dict]:
    """Paused accounts as a version without the bound kept them (no "seen")."""
    return {
        f"{900_000_000_000 + n}": {
            "enabled": False,
            "at": T0 + n,
            "detail_type": "Sending Status Disabled",
        }
        for n in range(count)
    }


async def test_a_store_flooded_before_the_bound_is_trimmed_on_its_first_read(
    stores, kind: str, tmp_path: Path
) -> None:
    """An upgrade from a version that kept every account: the first read keeps the
    20 latest (in Redis, of a hash at most 1,000 over the bound)."""
    if kind == "memory":
        state = {"records": [], "history": [], "accounts": legacy_accounts(5_000)}
        (tmp_path / "alerts").mkdir()
        (tmp_path / "alerts" / "state.json").write_bytes(orjson.dumps(state))
    store, alert_store = stores()
    if kind != "memory":
        mapping = {name: orjson.dumps(raw) for name, raw in legacy_accounts(500).items()}
        await redis_target_client(alert_store).hset(alert_store._accounts_key, mapping=mapping)
    kept = await alert_store.accounts(T0 + 10_000)
    latest = 5_000 if kind == "memory" else 500
    assert sorted(kept) == [f"{900_000_000_000 + n}" for n in range(latest - 20, latest)]
    if kind != "memory":
        assert await redis_target_client(alert_store).hlen(alert_store._accounts_key) == 20
        await store.close()
    await alert_store.close()


async def test_a_redis_hash_flooded_before_the_bound_is_dropped_whole(stores, kind: str) -> None:
    """210,000 fields cannot be sorted inside Redis without holding it for seconds,
    and forged ones cannot be told from genuine ones: the hash is unlinked, and said."""
    if kind == "memory":
        pytest.skip("Redis only: the memory store sorts its file's accounts in Python")
    store, alert_store = stores()
    client = redis_target_client(alert_store)
    mapping = {name: orjson.dumps(raw) for name, raw in legacy_accounts(5_000).items()}
    await client.hset(alert_store._accounts_key, mapping=mapping)
    with structlog.testing.capture_logs() as logged:
        assert await alert_store.accounts(T0 + 10_000) == {}
    assert await client.exists(alert_store._accounts_key) == 0
    [line] = [line for line in logged if line["event"] == "alert_accounts_flood_discarded"]
    assert line["fields"] == 5_000
    await alert_store.close()
    await store.close()


async def test_a_forged_event_dated_tomorrow_does_not_outrank_todays_genuine_one(
    stores, kind: str
) -> None:
    store, alert_store = stores()
    clock = ManualClock(T0)
    alerting = make_alerting(store, alert_store, PAUSED_RULES, [], clock)
    pipeline = Pipeline(store, clock_ms=clock)
    pipeline.on_account_event(alerting.on_account_event)
    tomorrow = T0 + 23 * 3600 * S
    forgery = ses.eventbridge_account("Sending Status Disabled", tomorrow, GENUINE)
    await pipeline.ingest(ses.dumps(forgery), "t")
    assert (await alert_store.accounts(clock.ms))[GENUINE].at == T0  # clamped to the clock
    clock.ms += 60 * S
    enabled = ses.eventbridge_account("Sending Status Enabled", T0 + 50 * S, GENUINE)
    await pipeline.ingest(ses.dumps(enabled), "t")
    assert (await alert_store.accounts(clock.ms))[GENUINE].enabled
    assert await alerting.tick() == []  # nothing paused
    await alerting.stop()
    if kind != "memory":
        await store.close()


async def test_accounts_not_listed_are_counted_and_dropped(stores, kind: str) -> None:
    """SES_TRACKER_ACCOUNT_IDS set: others are counted by reason, never stored, never
    logged one line each, never in a notice."""
    store, alert_store = stores()
    clock = ManualClock(T0)
    policy = AccountPolicy.of(GENUINE)
    alerting = make_alerting(store, alert_store, PAUSED_RULES, [], clock, accounts=policy)
    pipeline = Pipeline(store, clock_ms=clock)
    pipeline.on_account_event(alerting.on_account_event)
    hostile = ses.eventbridge_account("Sending Status Disabled", T0, "<!channel> " + "x" * 5_000)
    with structlog.testing.capture_logs() as logged:
        await pipeline.ingest(forged(1_000, "Sending Status Disabled", T0), "t")
        await pipeline.ingest(ses.dumps(hostile), "t")
    assert alerting.accounts_dropped == {Dropped.NOT_LISTED: 1_000, Dropped.NOT_AN_ACCOUNT: 1}
    assert await alert_store.accounts(clock.ms) == {}
    assert not pipeline.account_events
    assert [line["event"] for line in logged] == ["account_events_dropped"]
    assert all(len(str(line)) < 1_000 for line in logged)
    assert await alerting.tick() == []
    genuine = ses.eventbridge_account("Sending Status Disabled", T0, GENUINE)
    await pipeline.ingest(ses.dumps(genuine), "t")
    [fired] = await alerting.tick()
    assert fired.title == f"SES sending is paused for account {GENUINE}"
    await alerting.stop()
    if kind != "memory":
        await store.close()
