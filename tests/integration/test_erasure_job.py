"""#25: erasure through the tombstones and a background job, against real Redis (one
server and a cluster) and the memory store: afterwards no key and no value names the
address, while other stores of the fleet keep merging late events of its messages,
with forwarding down and then back."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from service import erasure_job
from service.codec import decode_event, encode_batch
from service.dimensions import Dimensions
from service.erasure_job import ErasureRunner
from service.events import EventType
from service.feed import erase_transitions
from service.forward.config import Subscription
from service.forward.outbox import MemoryOutbox, RedisOutbox
from service.forward.sender import Forwarder
from service.parser import parse_payload
from service.search import SearchQuery, message_handle
from service.stats import Counting
from service.stores import MemoryStore, RedisStore
from tests.support import ses
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = ses.SENT_AT
GONE = "gone@x.com"
NEEDLE = GONE.encode()
SECRET = "forward-secret-0123456789"


def writes(*records: dict, seen_ms: int = T + 60_000):
    return encode_batch(parse_payload(ses.dumps(*records)).events, seen_ms, Dimensions())


def before_the_erasure() -> list[dict]:
    """Messages naming the address every way a record can: recipient, suppression
    (complaint), per-recipient engagement field, a bounce report, a shared event,
    and a record at its recipient cap that never kept the address."""
    records: list[dict] = []
    for n in range(12):
        message_id = f"m-gone-{n}"
        both = [GONE, f"keep{n}@x.com"]
        records += [ses.send(message_id, both, T + n), ses.delivery(message_id, both, T + 500)]
    records.append(ses.complaint("m-gone-0", [GONE], T + 900))
    records.append(ses.open_("m-gone-1", [GONE], T + 1_000))
    records.append(ses.bounce("m-gone-2", [GONE, "keep2@x.com"], T + 700, "Transient"))
    crowd = [f"a{n:03}@x.com" for n in range(100)]  # all before "gone" in byte order
    records += [ses.send("m-crowd", crowd, T), ses.delivery("m-crowd", [GONE], T + 800)]
    return records


def late_event(n: int) -> dict:
    """An event of a message sent before the erasure, arriving after it."""
    return ses.bounce(f"m-gone-{n}", [GONE, f"keep{n}@x.com"], T + 5_000 + n, "Transient")


async def everything_naming(client, prefix: str) -> list[str]:
    """Every key under ``prefix`` whose name or value holds the address, whatever its
    type (strings, hashes, zsets, sets, lists, streams)."""
    found = []
    async for key in client.scan_iter(match=f"{prefix}*", count=1_000):
        kind = (await client.type(key)).decode()
        if kind == "string":
            values = [await client.get(key)]
        elif kind == "hash":
            values = [b for pair in (await client.hgetall(key)).items() for b in pair]
        elif kind == "zset":
            values = await client.zrange(key, 0, -1)
        elif kind == "set":
            values = list(await client.smembers(key))
        elif kind == "list":
            values = await client.lrange(key, 0, -1)
        elif kind == "stream":
            values = [
                b for _, fields in await client.xrange(key) for pair in fields.items() for b in pair
            ]
        else:
            values = []
        if NEEDLE in key or any(NEEDLE in (value or b"") for value in values):
            found.append(f"{kind} {key.decode(errors='replace')}")
    return found


def redis_reaches(store: RedisStore) -> list[tuple[str, erasure_job.Reach]]:
    outbox = RedisOutbox(store.keyspace)

    async def transitions(address: str) -> int:
        erased = 0
        for keys in store.keyspace.groups:
            erased += await erase_transitions(store.keyspace.client, keys.transitions, address)
        return erased

    return [("forwarding", outbox.erase_address), ("transitions", transitions)]


async def merged_at_least(merged: list[int], count: int) -> None:
    async with asyncio.timeout(30):
        while True:
            if len(merged) >= count:
                return
            await asyncio.sleep(0.01)


async def traffic(store, stop: asyncio.Event, merged: list[int]) -> None:
    """Another process's merges: late events of the erased address's messages and
    new messages of others, until told to stop."""
    n = 0
    while not stop.is_set():
        batch = writes(late_event(n % 12), ses.send(f"m-other-{n}", [f"other{n}@x.com"], T + n))
        await store.merge(batch, counting=Counting(T + 60_000))
        merged.append(n)
        n += 1
        await asyncio.sleep(0)


async def test_an_erasure_under_traffic_leaves_the_address_in_no_key_or_value(
    make_store, redis_client
) -> None:
    options = {"suppression_days": 3_660, "forward_keep_s": 3_600, "feed_window_s": 3_600}
    store, other = make_store(**options), make_store(**options)
    async with Receiver() as receiver:
        await _erase_under_traffic(store, other, redis_client, receiver)


async def _erase_under_traffic(store, other, redis_client, receiver: Receiver) -> None:
    # A subscription whose sender is down through it all: its group reads nothing.
    subscription = Subscription(name="app", url=receiver.base, secret=SECRET)
    await RedisOutbox(store.keyspace).prepare([subscription.id])
    await store.merge(writes(*before_the_erasure()), counting=Counting(T + 60_000))
    await other.refresh_tombstones()  # its view predates the erasure
    assert await everything_naming(redis_client, store.keyspace.prefix)
    runner = ErasureRunner(store, redis_reaches(store), lambda: int(time.time() * 1000), page=5)
    stop, merged = asyncio.Event(), []
    busy = asyncio.create_task(traffic(other, stop, merged))
    try:
        await merged_at_least(merged, 3)
        job = await erasure_job.request(store, GONE, int(time.time() * 1000))
        assert await asyncio.wait_for(runner.work_queue(), 60) == 1
        count = len(merged)
        await merged_at_least(merged, count + 3)  # late events after the job, from a stale view
    finally:
        stop.set()
        await asyncio.wait_for(busy, 30)
    assert other.stale_erasure_calls > 0  # the other process had to strip again
    assert await everything_naming(redis_client, store.keyspace.prefix) == []
    done = await erasure_job.load(store, job.id)
    assert done is not None and done.status == "done" and done.address is None
    assert done.messages == 13  # twelve messages and the crowded record
    assert done.reached["forwarding"] > 0 and done.reached["transitions"] > 0
    assert NEEDLE not in done.to_bytes()
    # The rest is all there: the other recipients keep their records and outcomes.
    record = await store.get("m-gone-2")
    assert list(record.recipients) == ["keep2@x.com"]
    bounces = [
        event.recipients
        for event in map(decode_event, record.blobs.values())
        if event.type == EventType.BOUNCE
    ]
    assert ("keep2@x.com",) in bounces  # the shared bounce, rewritten without it
    assert (await store.search(SearchQuery(recipient="keep5@x.com"))).hits
    # A message sent after the erasure is new data: kept, searchable, suppressed
    # when it bounces, and forwarded.
    later = int(time.time() * 1000) + 60_000
    await store.merge(
        writes(
            ses.send("m-new", [GONE], later),
            ses.bounce("m-new", [GONE], later + 500, "Permanent", sent_at=later),
            seen_ms=later,
        )
    )
    hits = (await store.search(SearchQuery(recipient=GONE))).hits
    assert [hit.message_id for hit in hits] == ["m-new"]
    assert (await store.suppression(GONE)).message_id == "m-new"
    # Forwarding comes back: nothing it posts names the address for a message sent
    # before the erasure; the rest arrives.
    outbox = RedisOutbox(store.keyspace)
    sender = Forwarder(
        [subscription], outbox, httpx.AsyncClient(), backoff_s=0.05, forgotten=store.forgotten
    )
    task = asyncio.create_task(sender.run())
    try:
        deadline = time.monotonic() + 30
        while (await outbox.backlog(subscription.id)).entries:
            assert time.monotonic() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.05)
    finally:
        sender.stop()
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
    items = [item for request in receiver.received for item in request.json()["items"]]
    naming = {item["message_id"] for item in items if NEEDLE in orjson.dumps(item)}
    assert naming == {"m-new"}
    assert any(item["recipient"] == "keep3@x.com" for item in items)


async def test_a_suppression_recorded_after_the_erasure_stays(make_store) -> None:
    """The suppression goes with the tombstone, before the job: one a message sent
    after the erasure records meanwhile is new data, and the job leaves it."""
    store = make_store(suppression_days=3_660)
    await store.merge(writes(ses.send("m-old", [GONE], T), ses.complaint("m-old", [GONE], T + 9)))
    assert (await store.suppression(GONE)).message_id == "m-old"
    now = int(time.time() * 1000)
    job = await erasure_job.request(store, GONE, now)
    assert await store.suppression(GONE) is None
    await store.merge(
        writes(
            ses.send("m-after", [GONE], now + 1_000),
            ses.bounce("m-after", [GONE], now + 2_000, "Permanent", sent_at=now + 1_000),
            seen_ms=now + 3_000,
        )
    )
    runner = ErasureRunner(store, [], lambda: int(time.time() * 1000))
    assert await runner.work_queue() == 1
    assert (await erasure_job.load(store, job.id)).status == "done"
    assert (await store.suppression(GONE)).message_id == "m-after"


async def test_a_job_that_keeps_failing_is_given_up_and_holds_no_other(make_store) -> None:
    """An unexpected error sends the job behind the rest; after MAX_ATTEMPTS it is
    marked failed (the address dropped from its state), and the queue goes on. An
    unreadable value under the address is dropped, not a reason to fail."""
    store = make_store()
    await store.merge(writes(ses.send("m-bad", ["bad@x.com"], T), ses.send("m-ok", [GONE], T)))
    # A damaged record the address's index lists: unreadable, naming the address.
    group = store.slot_group("m-bad")
    await store.keyspace.client.set(
        group.keys.record(message_handle("m-bad")), b"not msgpack bad@x.com"
    )

    async def alerts(address: str) -> int:
        if address == "bad@x.com":
            raise RuntimeError("an alert store that cannot take it")
        return 0

    now = int(time.time() * 1000)
    bad = await erasure_job.request(store, "bad@x.com", now)
    good = await erasure_job.request(store, GONE, now + 1)
    runner = ErasureRunner(store, [("alerts", alerts)], lambda: int(time.time() * 1000))
    assert await runner.work_queue() == 1
    failed, done = await erasure_job.load(store, bad.id), await erasure_job.load(store, good.id)
    assert done.status == "done" and done.messages == 1
    assert failed.status == "failed" and failed.address is None
    assert failed.attempts == erasure_job.MAX_ATTEMPTS and "RuntimeError" in failed.error
    assert failed.messages >= 1  # the damaged record went
    assert await store.queued_erasures(10) == []
    assert runner.failures == erasure_job.MAX_ATTEMPTS
    assert not await store.keyspace.client.exists(group.keys.record(message_handle("m-bad")))


async def test_the_memory_store_erases_the_same_way() -> None:
    outbox = MemoryOutbox()
    await outbox.prepare(["app"])  # a subscription whose sender is down
    store = MemoryStore(outbox=outbox, suppression_days=3_660)
    await store.merge(writes(*before_the_erasure()), counting=Counting(T + 60_000))
    runner = ErasureRunner(
        store, [("forwarding", outbox.erase_address)], lambda: int(time.time() * 1000), page=5
    )
    job = await erasure_job.request(store, GONE, int(time.time() * 1000))
    await store.merge(writes(late_event(3)))  # late, before the job ran
    assert await runner.work_queue() == 1
    await store.merge(writes(late_event(4)))  # and after
    done = await erasure_job.load(store, job.id)
    assert done is not None and done.messages == 13 and done.reached["forwarding"] > 0
    for message_id in [f"m-gone-{n}" for n in range(12)] + ["m-crowd"]:
        record = await store.get(message_id)
        assert GONE not in record.recipients
        assert not any(NEEDLE in blob for blob in record.blobs.values())
    assert await store.suppression(GONE) is None
    assert not (await store.search(SearchQuery(recipient=GONE))).hits
    assert await store.erasure_candidates(GONE, job.requested_at, 100) == []
    assert not any(
        change.address == GONE or NEEDLE in change.event
        for entry in await outbox.read("app", 10_000, 0)
        for change in entry.changes
    )
