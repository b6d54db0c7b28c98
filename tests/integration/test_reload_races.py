"""#28.4, the edges of a reload: racing reloads, a store outage mid-reload, a
sender that crashes, a rules swap mid-evaluation. Each of these broke the first
version of the reload (review of 3220ce2)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from service.forward.config import Subscription
from service.forward.outbox import MemoryOutbox
from service.forward.sender import Forwarder
from service.reload import ConfigFiles
from service.settings import Settings
from service.stores.base import StoreUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SECRET = "forward-secret-0123456789"


def subscription(name: str, **filters: Any) -> Subscription:
    return Subscription(name=name, url=f"https://{name}.example/hook", secret=SECRET, **filters)


def file_of(*subscriptions: Subscription) -> str:
    lines = ["subscriptions:"]
    for s in subscriptions:
        statuses = f", statuses: [{', '.join(s.statuses)}]" if s.statuses else ""
        lines.append(f"  - {{name: {s.name}, url: '{s.url}', secret: {SECRET}{statuses}}}")
    return "\n".join(lines) + "\n"


class FlakyOutbox(MemoryOutbox):
    """A memory outbox whose ``prepare`` fails while ``down``, and whose ``read``
    raises ``crash`` when set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.crash: Exception | None = None
        self.prepared = 0

    async def prepare(self, subscription_ids: Any) -> None:
        self.prepared += 1
        await asyncio.sleep(0.01)  # a round trip: others may run meanwhile
        if self.down:
            raise StoreUnavailable("redis: connection refused")
        await super().prepare(subscription_ids)

    async def read(self, subscription_id: str, count: int, block_ms: int) -> Any:
        if self.crash is not None:
            raise self.crash
        return await super().read(subscription_id, count, block_ms)


def senders(name: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"forward:{name}" and not t.done()]


def new_forwarder(outbox: MemoryOutbox, subscriptions: list[Subscription]) -> Forwarder:
    return Forwarder(subscriptions, outbox, httpx.AsyncClient(), post_timeout_s=0.5, backoff_s=0.05)


async def stop(forwarder: Forwarder, task: asyncio.Task[None]) -> None:
    forwarder.stop()
    await asyncio.wait_for(task, 10)
    await forwarder.aclose()


async def test_reloads_racing_each_other_and_the_start_leave_one_sender_each() -> None:
    outbox = FlakyOutbox()
    forwarder = new_forwarder(outbox, [subscription("a")])
    task = asyncio.create_task(forwarder.run())
    # While run() is still making its places, two reloads arrive at once.
    edited = [subscription("a", statuses=("bounced",)), subscription("b")]
    await asyncio.gather(forwarder.apply(edited), forwarder.apply(edited))
    await asyncio.sleep(0.05)
    assert len(senders("a")) == 1 and len(senders("b")) == 1
    assert [s.statuses for s in forwarder.subscriptions] == [("bounced",), ()]
    await stop(forwarder, task)
    assert senders("a") == senders("b") == []


async def test_an_outage_mid_reload_keeps_the_running_senders_and_is_tried_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "forward.yaml"
    path.write_text(file_of(subscription("a")))
    outbox = FlakyOutbox()
    forwarder = new_forwarder(outbox, [subscription("a")])
    task = asyncio.create_task(forwarder.run())
    await asyncio.sleep(0.05)
    files = ConfigFiles(
        Settings(_env_file=None, forward_file=path), alerting=_NoAlerting(), forwarder=forwarder
    )
    outbox.down = True
    await asyncio.to_thread(path.write_text, file_of(subscription("a"), subscription("b")))
    [outcome] = await files.reload()
    assert not outcome.ok and "StoreUnavailable" in (outcome.error or "")
    # Nothing stopped, nothing half-started.
    assert len(senders("a")) == 1 and senders("b") == []
    assert [s.name for s in forwarder.subscriptions] == ["a"]
    assert files.figures()[0][1] is False  # ses_tracker_config_reload_success 0
    # The poll tries the same content again once the store is back.
    outbox.down = False
    watching = asyncio.create_task(files.watch(0.02))
    for _ in range(100):
        if len(senders("b")) == 1:
            break
        await asyncio.sleep(0.02)
    watching.cancel()
    assert len(senders("a")) == 1 and len(senders("b")) == 1
    assert files.figures()[0][1] is True
    await stop(forwarder, task)


async def test_a_sender_that_crashes_says_so() -> None:
    outbox = FlakyOutbox()
    outbox.crash = RuntimeError("a bug in the outbox")
    forwarder = new_forwarder(outbox, [subscription("a")])
    with structlog.testing.capture_logs() as logged:
        task = asyncio.create_task(forwarder.run())
        for _ in range(100):
            if any(e["event"] == "forward_sender_crashed" for e in logged):
                break
            await asyncio.sleep(0.02)
    crashed = [e for e in logged if e["event"] == "forward_sender_crashed"]
    assert crashed and crashed[0]["task"] == "forward:a"
    await stop(forwarder, task)


class _NoAlerting:
    """ConfigFiles needs an Alerting only with a rules file."""


async def test_a_rules_reload_waits_for_the_evaluation_in_progress(tmp_path: Path) -> None:
    from service.alerts.rules import parse_rules
    from service.runtime import Runtime

    runtime = Runtime(Settings(_env_file=None))
    alerting = runtime.alerting
    entered, release = asyncio.Event(), asyncio.Event()
    original = alerting._tick

    async def slow_tick() -> Any:
        entered.set()
        await release.wait()
        return await original()

    alerting._tick = slow_tick  # type: ignore[method-assign]
    new_rules = parse_rules("rules:\n  - {name: only, kind: bounce_rate, warn: 0.5}\n")
    ticking = asyncio.create_task(alerting.tick())
    await entered.wait()
    applying = asyncio.create_task(alerting.apply_rules(new_rules))
    await asyncio.sleep(0.05)
    assert not applying.done()  # held until the tick that read the old rules ends
    release.set()
    await asyncio.wait_for(ticking, 5)
    await asyncio.wait_for(applying, 5)
    assert [rule.name for rule in alerting.rules.rules] == ["only"]
    await runtime.store.close()
