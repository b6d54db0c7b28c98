"""Erasing a recipient from the forwarding outbox (``Outbox.erase_address``) and from
what a sender holds (``Forwarder(forgotten=...)``): nothing of the address stays in
Redis or reaches a receiver, and every other change still arrives, once, to each
subscription, under the item id it had before."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from service.codec import encode_batch
from service.feed import erase_transitions
from service.forward.config import Subscription
from service.forward.items import Change
from service.forward.outbox import MemoryOutbox, RedisOutbox
from service.forward.sender import Forwarder
from service.parser import parse_payload
from service.stores import RedisStore
from tests.support import ses
from tests.support.receiver import Answer, Receiver
from tests.support.redis import Interleaved, RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "forward-secret-0123456789"
T = ses.SENT_AT
GONE = "gone@x.com"
NEEDLE = GONE.encode()


def writes(*records: dict):
    return encode_batch(parse_payload(ses.dumps(*records)).events, T + 1_000)


def shared(message_id: str, recipients: list[str]) -> list[dict]:
    """Sent, delivered to the first, bounced for the rest: each event names several
    recipients (the bounce with a report each), so erasing one rewrites events the
    others' changes carry."""
    first, rest = recipients[0], recipients[1:]
    records = [ses.send(message_id, recipients), ses.delivery(message_id, [first], T + 500)]
    return [*records, ses.bounce(message_id, rest, T + 600)] if rest else records


def outbox_of(store: RedisStore) -> RedisOutbox:
    return RedisOutbox(store.keyspace)


def forwarder(subscriptions, outbox, **options) -> Forwarder:
    options = {"backoff_s": 0.05, "max_backoff_s": 0.2, "post_timeout_s": 0.5, **options}
    return Forwarder(subscriptions, outbox, httpx.AsyncClient(), **options)


async def until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def run_until(sender: Forwarder, condition, settle_s: float = 0.3) -> None:
    """Run ``sender`` until ``condition`` holds, then a little longer (nothing more
    may come), then stop it as the runtime does."""
    task = asyncio.create_task(sender.run())
    try:
        await until(condition)
        await asyncio.sleep(settle_s)
    finally:
        sender.stop()
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)


def items_of(receiver: Receiver) -> list[dict]:
    return [item for request in receiver.received for item in request.json()["items"]]


def change_of(item: dict) -> tuple:
    return item["message_id"], item["recipient"], item["from"], item["to"]


def changes_of(records: list[dict]) -> set[tuple]:
    """Every change those records make, as (message id, recipient, from, to)."""
    changes = set()
    for record in records:
        mid = record["mail"]["messageId"]
        kind = record["eventType"]
        if kind == "Send":
            changes |= {(mid, r, None, "sent") for r in record["mail"]["destination"]}
        elif kind == "Delivery":
            changes |= {(mid, r, "sent", "delivered") for r in record["delivery"]["recipients"]}
        elif kind == "Bounce":
            bounced = record["bounce"]["bouncedRecipients"]
            changes |= {(mid, r["emailAddress"], "sent", "bounced") for r in bounced}
    return changes


def without_gone(changes: set[tuple]) -> set[tuple]:
    return {change for change in changes if change[1] != GONE}


async def every_value(client) -> list[tuple[bytes, bytes]]:
    """(key, each value it holds), the key itself too, every type read whole (stream
    entries, their fields and groups too), of every master."""
    found: list[tuple[bytes, bytes]] = []
    async for key in client.scan_iter(count=500):
        found += [(key, value) for value in await values_of(client, key)]
    return found


async def values_of(client, key: bytes) -> list[bytes]:
    found = [key]
    kind = (await client.type(key)).decode()
    if kind == "string":
        found.append(await client.get(key))
    elif kind == "hash":
        for field, value in (await client.hgetall(key)).items():
            found += [field, value]
    elif kind == "list":
        found += await client.lrange(key, 0, -1)
    elif kind == "set":
        found += list(await client.smembers(key))
    elif kind == "zset":
        found += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        for entry_id, fields in await client.xrange(key):
            found.append(entry_id)
            for field, value in fields.items():
                found += [field, value]
        for group in await client.xinfo_groups(key):
            found.append(group["name"])
    else:
        raise AssertionError(f"{key!r}: a {kind} this test does not read")
    return found


def naming(found: list[tuple[bytes, bytes]], needle: bytes = NEEDLE) -> list[tuple[bytes, bytes]]:
    return [(key, value) for key, value in found if value and needle in value]


# What the store's own erasure (service.erasure_job: records, the recipient's index,
# its suppression) takes the address out of; anything else naming it is the
# outbox's or the transitions stream's to erase.
STORE_FAMILIES = (b"m:", b"r:", b"sup:", b"sup-index", b"sup-reason:")


def outside_the_store(found: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    def family(key: bytes) -> bytes:
        rest = key.split(b":", 1)[1]  # <prefix>[{tag}:]<family...>
        return rest.split(b"}:", 1)[1] if rest.startswith(b"{") else rest

    return [(k, v) for k, v in found if not family(k).startswith(STORE_FAMILIES)]


async def test_an_erased_recipient_leaves_the_outbox_and_the_rest_arrives_once(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600, feed_window_s=3_600)
    client = redis_target.client()
    async with Receiver() as ahead_receiver, Receiver() as behind_receiver:
        ahead = Subscription(name="ahead", url=ahead_receiver.base, secret=SECRET)
        behind = Subscription(name="behind", url=behind_receiver.base, secret=SECRET)
        await outbox_of(store).prepare([ahead.id, behind.id])
        first = [
            *shared("er-1", [GONE, "keep@x.com"]),
            *shared("er-2", ["keep2@x.com", GONE, "also@x.com"]),
            *shared("er-3", ["other@x.com"]),
        ]
        await store.merge(writes(*first))
        # "ahead" delivers (and acknowledges) everything so far; "behind" nothing.
        early = forwarder([ahead], outbox_of(store))
        await run_until(early, lambda: len(items_of(ahead_receiver)) == len(changes_of(first)))
        await early.aclose()
        early_requests = len(ahead_receiver.received)
        ahead_ids = {change_of(i): i["id"] for i in items_of(ahead_receiver)}
        # A second batch that "ahead" reads but never acknowledges (its sender died
        # mid-post): pending, deleted under it by the erasure.
        second = [*shared("er-4", [GONE, "late@x.com"]), *shared("er-5", ["late2@x.com"])]
        await store.merge(writes(*second))
        pending = outbox_of(store)
        read = await pending.read(ahead.id, 100, 10)
        assert {c.address for entry in read for c in entry.changes} >= {GONE, "late@x.com"}

        # The test sees the address in the streams these erasures take it from.
        seen = outside_the_store(naming(await every_value(client)))
        assert {await client.type(key) for key, _ in seen} == {b"stream"}
        outbox = outbox_of(store)
        erased = await outbox.erase_address(GONE)
        assert erased >= 2  # at least er-1/er-2's entry and er-4's (one per group each)
        assert await outbox.erase_address(GONE) == 0  # nothing left to erase
        for key in store.transitions_keys:
            await erase_transitions(client, key, GONE)
        left = outside_the_store(naming(await every_value(client)))
        assert not left, left[:3]
        # Redis cannot tell the lag of a group behind a deleted entry: still counted.
        assert (await outbox.backlog(behind.id)).entries >= 2

        # Both subscriptions now send what is left: "behind" everything but the
        # erased recipient's, "ahead" only what it had not acknowledged.
        late = forwarder([ahead, behind], outbox_of(store))
        everything = without_gone(changes_of(first) | changes_of(second))
        pending_rest = without_gone(changes_of(second))
        await run_until(
            late,
            lambda: (
                len(items_of(behind_receiver)) >= len(everything)
                and len(items_of(ahead_receiver)) >= len(ahead_ids) + len(pending_rest)
            ),
        )
        await late.aclose()
        assert late.outbox.lost == 0  # the deleted pending entry is no loss

    behind_items = items_of(behind_receiver)
    ahead_late = items_of(ahead_receiver)[len(ahead_ids) :]
    # Once each, nothing of the erased recipient.
    assert Counter(map(change_of, behind_items)) == Counter(everything)
    assert Counter(map(change_of, ahead_late)) == Counter(pending_rest)
    for request in behind_receiver.received + ahead_receiver.received[early_requests:]:
        assert NEEDLE not in request.body
    # The other changes of a rewritten entry keep the item ids they had.
    for item in behind_items:
        if change_of(item) in ahead_ids:
            assert item["id"] == ahead_ids[change_of(item)]
    # Their events were rewritten without the address, and still say the rest.
    bounce = next(
        i for i in behind_items if change_of(i) == ("er-2", "also@x.com", "sent", "bounced")
    )
    assert bounce["event"]["recipients"] == ["also@x.com"]
    assert [r["address"] for r in bounce["event"]["reports"]] == ["also@x.com"]
    backlog = [await late.outbox.backlog(s.id) for s in (ahead, behind)]
    assert [b.entries for b in backlog] == [0, 0]
    await client.aclose()
    await store.close()


async def test_concurrent_erasures_and_merges_lose_nothing(redis_target: RedisTarget) -> None:
    """Two addresses erased at once from the same entries, while merges append: each
    entry is replaced by one erasure, the other's replacement is met again."""
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600)
    client = redis_target.client()
    outbox = outbox_of(store)
    await outbox.prepare(["sub"])
    records = []
    for n in range(40):
        records += shared(f"cc-{n}", [f"keep{n}@x.com", GONE, "two@x.com"])
    await store.merge(writes(*records))

    async def merge_more() -> None:
        for n in range(10):
            await store.merge(writes(*shared(f"more-{n}", [f"new{n}@x.com"])))

    await asyncio.gather(
        outbox_of(store).erase_address(GONE),
        outbox_of(store).erase_address("two@x.com"),
        merge_more(),
    )
    taken: list[tuple] = []
    while entries := await outbox.read("sub", 1_000, 10):
        for entry in entries:
            for index, change in enumerate(entry.changes):
                taken.append((*entry.place(index), change.address, change.to_status))
        await outbox.ack("sub", [entry.id for entry in entries])
    addresses = {t[2] for t in taken}
    assert GONE not in addresses and "two@x.com" not in addresses
    # keep<n>: sent, delivered; new<n>: sent, delivered; each once, ids unique.
    assert len(taken) == 2 * 40 + 2 * 10
    assert len({(t[0], t[1]) for t in taken}) == len(taken)
    found = await every_value(client)
    left = outside_the_store(naming(found) + naming(found, b"two@x.com"))
    assert not left, left[:3]
    await client.aclose()
    await store.close()


def change(message_id: str, address: str, event: bytes = b"", to: int = 1) -> Change:
    return Change(message_id, address, -1, to, T, 5, b"", event, "other")


def event_naming(*addresses: str) -> bytes:
    """A stored delivery event naming ``addresses``."""
    [write] = writes(ses.delivery("ev", list(addresses), T + 5))
    return write.events[0].blob


async def test_the_sender_leaves_out_what_was_erased_before_each_post() -> None:
    """Entries already read when the erasure ran: the sender asks ``forgotten``
    right before each body, a retry's too."""
    erased: set[str] = set()
    outbox = MemoryOutbox()
    async with Receiver() as receiver:
        sub = Subscription(name="app", url=receiver.base, secret=SECRET)
        receiver.script = [Answer(status=429, headers={"retry-after": "1"})]
        sender = forwarder([sub], outbox, forgotten=lambda address, _sent_at: address in erased)
        await outbox.prepare([sub.id])
        both = event_naming("keep@x.com", GONE)
        outbox.append([change("m-1", GONE, both), change("m-1", "keep@x.com", both)])
        outbox.append([change("m-2", "solo@x.com", event_naming(GONE))])
        task = asyncio.create_task(sender.run())
        try:
            # The first post went before the erasure (and was refused): it named it.
            await until(lambda: len(receiver.received) == 1)
            assert NEEDLE in receiver.received[0].body
            erased.add(GONE)
            await until(lambda: sender.figures["app"].sent == 2)
        finally:
            sender.stop()
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
            await sender.aclose()
    [retry] = receiver.received[1:]
    assert NEEDLE not in retry.body
    items = retry.json()["items"]
    assert [(i["id"].split(".")[1], i["recipient"]) for i in items] == [
        ("1", "keep@x.com"),
        ("0", "solo@x.com"),
    ]
    assert items[0]["event"]["recipients"] == ["keep@x.com"]
    assert items[1]["event"] is None  # it named only the erased address
    assert sender.figures["app"].forgotten == 1


async def test_a_sender_without_forgotten_sends_everything() -> None:
    outbox = MemoryOutbox()
    async with Receiver() as receiver:
        sub = Subscription(name="app", url=receiver.base, secret=SECRET)
        sender = forwarder([sub], outbox)
        await outbox.prepare([sub.id])
        outbox.append([change("m-1", GONE), change("m-1", "keep@x.com")])
        await run_until(sender, lambda: sender.figures["app"].sent == 2, settle_s=0)
        await sender.aclose()
    assert {i["recipient"] for i in items_of(receiver)} == {GONE, "keep@x.com"}
    assert sender.figures["app"].forgotten == 0


async def test_a_pending_entry_trimmed_is_a_loss_and_one_erased_is_not(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600)
    outbox = outbox_of(store)
    await outbox.prepare(["sub"])
    await store.merge(writes(*shared("tp-1", [GONE])))
    await store.merge(writes(*shared("tp-2", ["keep@x.com"])))
    read = await outbox.read("sub", 100, 10)  # read, never acknowledged
    [named] = [e for e in read if e.changes[0].address == GONE]
    [other] = [e for e in read if e.changes[0].address != GONE]
    assert await outbox.erase_address(GONE) == 1
    # The other is trimmed meanwhile (as the keep does): that one was lost.
    group = outbox._place(other.id)[0]
    await store.keyspace.client.xdel(outbox._streams[group], outbox._place(other.id)[1])
    assert await outbox.read("sub", 100, 10) == []
    assert outbox.lost == 1
    assert await outbox.read("sub", 100, 10) == []  # both acknowledged
    assert outbox.lost == 1
    assert (await outbox.backlog("sub")).entries == 0
    # Nothing pending any more: the next erasure lets go of the erased ids.
    await outbox.erase_address("nobody@x.com")
    assert not await store.keyspace.client.exists(*outbox._erased)
    assert named.id != other.id
    await store.close()


async def test_the_backlog_still_counts_past_an_erased_entry(redis_target: RedisTarget) -> None:
    """Redis tells no lag for a group whose place is before a deleted entry: the
    backlog bounds it instead of saying nothing is waiting."""
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600)
    outbox = outbox_of(store)
    await outbox.prepare(["sub"])
    for n in range(3):
        await store.merge(writes(*shared(f"bl-{n}", ["keep@x.com"])))
    done = await outbox.read("sub", 100, 10)
    await outbox.ack("sub", [entry.id for entry in done])
    await store.merge(writes(*shared("bl-gone", [GONE, "keep@x.com"])))
    await store.merge(writes(*shared("bl-after", ["keep@x.com"])))
    assert await outbox.erase_address(GONE) == 1
    # The replacement and the entry after it.
    assert (await outbox.backlog("sub")).entries >= 2
    left = await outbox.read("sub", 100, 10)
    assert (
        sorted(c.message_id for e in left for c in e.changes) == ["bl-after"] * 2 + ["bl-gone"] * 2
    )
    await outbox.ack("sub", [entry.id for entry in left])
    assert (await outbox.backlog("sub")).entries == 0
    await store.close()


async def test_an_entry_another_erasure_replaced_first_is_met_again(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600)
    outbox = outbox_of(store)
    await outbox.prepare(["sub"])
    await store.merge(writes(*shared("ie-1", [GONE, "two@x.com", "keep@x.com"])))
    erasing = outbox_of(store)
    erasing._client = Interleaved(
        store.keyspace.client, lambda: outbox_of(store).erase_address("two@x.com")
    )
    assert await erasing.erase_address(GONE) >= 1
    entries = await outbox.read("sub", 100, 10)
    # keep@x.com's changes (sent, delivered), nothing of the others.
    assert [c.address for e in entries for c in e.changes] == ["keep@x.com"] * 2
    found = await every_value(store.keyspace.client)
    assert not outside_the_store(naming(found) + naming(found, b"two@x.com"))
    await store.close()
