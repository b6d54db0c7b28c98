"""Erasing a recipient address from the Redis alert store (``erase_address``), on one
Redis and on a cluster: afterwards no key and no value anywhere in Redis holds it,
while another address the same alerts name is still there. (The rule itself and the
memory store: tests/unit/alerts/test_erase_address.py.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from redis import asyncio as aioredis

from service.alerts.erasure import ERASED
from service.alerts.lifecycle import AlertRecord, Phase, Plan
from service.alerts.model import Alert, Example, alert_to_dict
from service.alerts.redis_store import ERASE_PAGE, RedisAlertStore
from service.alerts.store import HISTORY_KEPT
from service.stores.redis.keyspace import RedisKeyspace
from tests.support.chat import sample_alert

T = 1_700_000_000_000
SINKS = ["slack-1", "hook-1"]
OWNER = "evaluator"


@pytest.fixture
def gone() -> str:
    # Unique per test: the server is shared, and every key on it is read.
    return f"gone-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def kept() -> str:
    return f"kept-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
async def alerts(redis_client: aioredis.Redis) -> AsyncIterator[RedisAlertStore]:
    # Alert state shares one slot on a cluster (RedisKeyspace.single_slot).
    store = RedisAlertStore(
        RedisKeyspace.of(redis_client, prefix=f"{{erase-{uuid.uuid4().hex[:8]}}}:")
    )
    assert await store.hold_lease(OWNER, 60_000)
    yield store
    await store.close()


def naming(gone: str, kept: str, key: str = "overdue", n: int = 1) -> Alert:
    """An alert quoting ``gone`` everywhere alerts can, and ``kept`` in one example."""
    return sample_alert(
        key=key,
        title=f"Mail to {gone} overdue",
        summary=f"{n} recipients overdue; {gone} for 3 h.",
        figures={"overdue recipients": str(n), gone: "3 h"},
        worst={"example.com": f"2 ({gone})"},
        examples=(
            Example(f"m-{n}", gone, "sent", {"code": "mailbox_full", "summary": f"{gone} full"}),
            Example("m-kept", kept, f"sent, like {gone}", {"code": "ok", "summary": kept}),
        ),
        link=f"https://tracker.example/?message=m-{n}&to={quote(gone, safe='')}",
    )


def quiet(kept: str, key: str = "bounce") -> Alert:
    return sample_alert(key=key, examples=(Example("m-quiet", kept, "550 user unknown"),))


def firing(alert: Alert, at: int = T) -> AlertRecord:
    return AlertRecord(alert.key, Phase.FIRING, T, at, ("example.com",), alert.severity, alert)


async def commit(store: RedisAlertStore, *notices: Alert, at: int = T) -> None:
    plan = Plan(upserts={a.key: firing(a, at) for a in notices}, deletes=[], notices=list(notices))
    assert await store.commit(OWNER, plan, SINKS, at)


async def everything(client: aioredis.Redis) -> dict[bytes, list[bytes]]:
    """Every key in Redis (every master of a cluster), with every value it holds,
    read by its type."""
    found: dict[bytes, list[bytes]] = {}
    async for key in client.scan_iter(count=1_000):
        values = found.setdefault(key, [])
        kind = (await client.type(key)).decode()
        if kind == "string":
            values.append(await client.get(key) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                values += [field, value]
        elif kind == "list":
            values += await client.lrange(key, 0, -1)
        elif kind == "zset":
            values += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            values += list(await client.smembers(key))
        elif kind == "stream":
            for entry_id, fields in await client.xrange(key):
                values.append(entry_id)
                for field, value in fields.items():
                    values += [field, value]
        elif kind != "none":  # "none": expired since the scan saw it
            raise AssertionError(f"a key of a type this test cannot read: {kind}")
    return found


def holding(found: dict[bytes, list[bytes]], text: str) -> list[bytes]:
    """The keys whose name or any value holds ``text``."""
    needle = text.encode()
    return [
        key for key, values in found.items() if needle in key or any(needle in v for v in values)
    ]


def sizes(found: dict[bytes, list[bytes]], store: RedisAlertStore) -> dict[bytes, int]:
    """How many values each of ``store``'s keys holds."""
    prefix = store._records_key.removesuffix("al:records").encode()
    return {key: len(values) for key, values in found.items() if key.startswith(prefix)}


async def test_an_erasure_leaves_the_address_nowhere_in_redis(
    alerts: RedisAlertStore, redis_client: aioredis.Redis, gone: str, kept: str
) -> None:
    await commit(alerts, naming(gone, kept), quiet(kept))
    await commit(alerts, quiet(kept, key="delays"))
    # An entry this version cannot read (an older one's, or damaged) names it too.
    await redis_client.hset(alerts._entries_key, "00000000000001-old-0000", f"{{{gone}")
    before = await everything(redis_client)
    assert holding(before, gone) and holding(before, kept)

    # One record, one notice, its two entries (one a sink), and the unreadable entry.
    assert await alerts.erase_address(gone) == 1 + 1 + 2 + 1

    after = await everything(redis_client)
    assert not holding(after, gone)
    assert holding(after, kept) and holding(after, ERASED)
    assert sizes(after, alerts) == sizes(before, alerts)  # rewritten, nothing dropped
    assert await alerts.erase_address(gone) == 0

    # What the API and the senders read: the examples' messages stay.
    [erased] = [a for a in await alerts.history(10) if a.key == "overdue"]
    assert erased.examples[0] == Example("m-1", None, "sent", None)
    assert erased.examples[1].recipient == kept
    records = await alerts.records()
    assert records["overdue"].alert == erased and set(records) == {"overdue", "bounce", "delays"}
    for sink in SINKS:
        entries = await alerts.claim(sink, T, T + 1, 10)
        assert sorted(e.alert.key for e in entries) == ["bounce", "delays", "overdue"]
        assert not [e for e in entries if gone.encode() in e.to_json()]


async def test_an_erasure_reads_a_long_history_a_page_at_a_time(
    alerts: RedisAlertStore, redis_client: aioredis.Redis, gone: str, kept: str
) -> None:
    # More notices than a page, past the history's cap, every third naming it.
    for n in range(HISTORY_KEPT + ERASE_PAGE // 2):
        notice = naming(gone, kept, n=n) if n % 3 == 0 else quiet(kept)
        await redis_client.lpush(alerts._history_key, orjson.dumps(alert_to_dict(notice)))
    length = await redis_client.llen(alerts._history_key)
    assert length > 2 * ERASE_PAGE
    assert await alerts.erase_address(gone) == len(range(0, length, 3))
    assert not holding(await everything(redis_client), gone)
    assert await redis_client.llen(alerts._history_key) == length


async def test_a_commit_during_an_erasure_is_kept_and_erased_too(
    alerts: RedisAlertStore, redis_client: aioredis.Redis, gone: str, kept: str
) -> None:
    """The evaluator commits between the erasure's read of an item and its write:
    the record it rewrote is not overwritten by the erasure's stale copy, the
    notices it pushed (moving the history along) are erased wherever they went, and
    what it committed naming the address is erased too."""
    await commit(alerts, naming(gone, kept), quiet(kept))
    # While the erasure rewrites the first record: a newer notice of that alert.
    # While it rewrites the first notice: another alert, naming the address too.
    racing_commits = {
        "records": (naming(gone, kept, n=7), quiet(kept, key="after-records")),
        "history": (naming(gone, kept, key="overdue-2", n=8), quiet(kept, key="after-history")),
    }
    raced: list[str] = []

    def racing(script: Callable[..., Awaitable[Any]], where: str) -> Callable[..., Awaitable[Any]]:
        async def swap(**kwargs: Any) -> Any:
            if where not in raced:
                raced.append(where)
                await commit(alerts, *racing_commits[where], at=T + 60_000)
            return await script(**kwargs)

        return swap

    # The scripts that replace an item if unchanged: each first lets a commit land.
    alerts._erase_field = racing(alerts._erase_field, "records")  # type: ignore[method-assign]
    alerts._erase_notice = racing(alerts._erase_notice, "history")  # type: ignore[method-assign]

    erased = await alerts.erase_address(gone)

    assert raced == ["records", "history"]
    assert not holding(await everything(redis_client), gone)
    records = await alerts.records()
    # The commit's record won (when it was sent, its figures), without the address.
    overdue = records["overdue"]
    assert overdue.last_sent_ms == T + 60_000
    assert overdue.alert is not None and overdue.alert.figures["overdue recipients"] == "7"
    assert set(records) == {"overdue", "bounce", "after-records", "overdue-2", "after-history"}
    # Everything the three commits pushed is there: 6 notices, 6 entries a sink.
    history = await alerts.history(100)
    assert [(a.key, a.figures.get("overdue recipients")) for a in history] == [
        ("after-history", None),
        ("overdue-2", "8"),
        ("after-records", None),
        ("overdue", "7"),
        ("bounce", None),
        ("overdue", "1"),
    ]
    assert await alerts.pending("slack-1") == 6 and await alerts.pending("hook-1") == 6
    # Two records, three notices and six entries named it.
    assert erased == 2 + 3 + 6
    assert await alerts.erase_address(gone) == 0


async def test_an_entry_rescheduled_after_an_erasure_does_not_bring_the_address_back(
    alerts: RedisAlertStore, redis_client: aioredis.Redis, gone: str, kept: str
) -> None:
    await commit(alerts, naming(gone, kept))
    [claimed] = await alerts.claim("slack-1", T, T + 1, 10)
    assert gone.encode() in claimed.to_json()
    assert await alerts.erase_address(gone) == 1 + 1 + 2
    # The sender still holds the copy it claimed, with the address, and fails.
    await alerts.reschedule(claimed, T)
    [again] = await alerts.claim("slack-1", T, T + 1, 10)
    assert again.attempts == 1 and gone.encode() not in again.to_json()
    assert not holding(await everything(redis_client), gone)
    # A finished entry is not brought back by a late reschedule either.
    await alerts.finish(again)
    await alerts.reschedule(again, T)
    assert await alerts.pending("slack-1") == 0
    assert await redis_client.hget(alerts._entries_key, again.id) is None


async def test_an_erasure_during_a_reschedule_is_not_undone(
    alerts: RedisAlertStore, redis_client: aioredis.Redis, gone: str, kept: str
) -> None:
    """The erasure lands between the reschedule's read of the entry and its write."""
    await commit(alerts, naming(gone, kept))
    [claimed] = await alerts.claim("slack-1", T, T + 1, 10)
    reschedule = alerts._reschedule
    erased: list[int] = []

    async def racing(**kwargs: Any) -> Any:
        if not erased:
            erased.append(await alerts.erase_address(gone))
        return await reschedule(**kwargs)

    alerts._reschedule = racing  # type: ignore[method-assign]
    await alerts.reschedule(claimed, T)

    assert erased == [1 + 1 + 2]
    [again] = await alerts.claim("slack-1", T, T + 1, 10)
    assert again.attempts == 1 and again.alert.examples[0].recipient is None
    assert not holding(await everything(redis_client), gone)
