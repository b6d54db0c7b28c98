"""#15: status changes forwarded to a receiver that fails in every way, through the
outbox the merge appends to, with one sender per subscription across replicas."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections import defaultdict

import httpx
import pytest

from service.alerts.sinks import verify
from service.forward.config import Subscription
from service.forward.outbox import MemoryOutbox, RedisOutbox
from service.forward.sender import Forwarder
from service.pipeline import Pipeline
from service.stores import MemoryStore, RedisStore
from service.stores.redis.keys import RedisKeys
from tests.support import ses
from tests.support.hostile import HostileReceiver
from tests.support.receiver import Answer, Receiver
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "forward-secret-0123456789"
T = ses.SENT_AT


def subscription(receiver: Receiver, **filters) -> Subscription:
    return Subscription(name="app", url=receiver.base + "/hook", secret=SECRET, **filters)


def forwarder(subscriptions, outbox, **options) -> Forwarder:
    options = {"backoff_s": 0.05, "max_backoff_s": 0.2, "post_timeout_s": 0.5, **options}
    return Forwarder(subscriptions, outbox, httpx.AsyncClient(), **options)


def messages(count: int, prefix: str = "fw") -> bytes:
    records = []
    for n in range(count):
        mid = f"{prefix}-{n:03d}"
        records += [ses.send(mid, [f"r{n}@x.com"]), ses.delivery(mid, [f"r{n}@x.com"], T + 500)]
    return ses.dumps(*records)


def delivered(receiver: Receiver) -> list[dict]:
    """Every item received, in arrival order, each request's signature checked."""
    items = []
    for request in receiver.received:
        timestamp = int(request.headers["x-ses-tracker-timestamp"])
        signature = request.headers["x-ses-tracker-signature"]
        assert verify(SECRET.encode(), timestamp, request.body, signature, int(time.time()))
        items += request.json()["items"]
    return items


async def halt(task: asyncio.Task, *senders: Forwarder) -> None:
    """Stop senders as the runtime does: told to stop, then cancelled."""
    for sender in senders:
        sender.stop()
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)


async def until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def assert_at_least_once_in_order(items: list[dict], expected: set[tuple]) -> None:
    by_id: dict[str, dict] = {}
    for item in items:
        # A duplicate is allowed only as the very same item, same id.
        assert by_id.setdefault(item["id"], item) == item
    changes = {(i["message_id"], i["recipient"], i["from"], i["to"]) for i in by_id.values()}
    assert changes == expected
    # Per recipient, first arrivals follow the order the changes were merged.
    seen: dict[tuple, list[str]] = defaultdict(list)
    first: set[str] = set()
    for item in items:
        if item["id"] not in first:
            first.add(item["id"])
            seen[item["message_id"], item["recipient"]].append(item["to"])
    assert all(statuses == ["sent", "delivered"] for statuses in seen.values()), seen


def expected_changes(count: int, prefix: str = "fw") -> set[tuple]:
    changes = set()
    for n in range(count):
        mid, address = f"{prefix}-{n:03d}", f"r{n}@x.com"
        changes |= {(mid, address, None, "sent"), (mid, address, "sent", "delivered")}
    return changes


@pytest.fixture(params=["memory", "redis", "cluster"])
async def outbox_store(request):
    if request.param == "memory":
        outbox = MemoryOutbox()
        yield MemoryStore(outbox=outbox), outbox
        return
    target = RedisTarget.of(request.param, request)
    await target.flush()
    store = target.store(forward_keep_s=3_600)
    yield store, outbox_of(store)
    await store.close()


def outbox_of(store: RedisStore) -> RedisOutbox:
    """The outbox a replica on this store reads (one stream per slot group on a cluster)."""
    return RedisOutbox(store.keyspace)


async def test_every_change_arrives_signed_and_in_order_through_every_failure(
    outbox_store,
) -> None:
    store, outbox = outbox_store
    async with Receiver() as receiver:
        receiver.script = [
            Answer(status=500),
            Answer(status=429, headers={"retry-after": "1"}),
            Answer(hang_s=2.0),  # past the 0.5 s timeout
            Answer(close=True),
            Answer(status=404),
        ]
        sender = forwarder([subscription(receiver, batch_size=7)], outbox)
        await outbox.prepare([s.id for s in sender.subscriptions])
        task = asyncio.create_task(sender.run())
        try:
            pipeline = Pipeline(store)
            started = time.monotonic()
            await pipeline.ingest(messages(20), "http")
            # A failing receiver never slows ingestion down.
            assert time.monotonic() - started < 1.0
            # (A timed-out post may have reached the receiver: wait for the sender too.)
            await until(
                lambda: (
                    len({i["id"] for i in delivered(receiver)}) == 40
                    and sender.figures["app"].sent >= 40
                )
            )
        finally:
            await halt(task, sender)
            await sender.aclose()
    assert_at_least_once_in_order(delivered(receiver), expected_changes(20))
    figures = sender.figures["app"]
    assert figures.failed == 5 and figures.sent >= 40
    # Retry-After was honoured: the request after the 429 came a second later.
    assert receiver.received[2].at - receiver.received[1].at >= 0.95
    item = delivered(receiver)[-1]
    assert item["event"]["type"] in ("send", "delivery")
    assert item["configuration_set"] == "transactional" and item["identity"] == "shop.example"
    assert item["tags"] == {"ses:configuration-set": "transactional", "team": "orders"}


async def test_subscriptions_take_only_what_their_filters_name(outbox_store) -> None:
    store, outbox = outbox_store
    async with Receiver() as bounces, Receiver() as gmail:
        subscriptions = [
            Subscription(name="bounces", url=bounces.base, secret=SECRET, statuses=("bounced",)),
            Subscription(
                name="gmail-orders",
                url=gmail.base,
                secret=SECRET,
                providers=("gmail",),
                tags={"team": "orders"},
                configuration_sets=("transactional",),
            ),
        ]
        sender = forwarder(subscriptions, outbox)
        await outbox.prepare([s.id for s in subscriptions])
        task = asyncio.create_task(sender.run())
        try:
            records = [
                ses.send("f-1", ["a@gmail.com", "b@x.com"]),
                ses.bounce("f-1", ["b@x.com"], T + 9),
            ]
            other_team = ses.send("f-2", ["c@gmail.com"])
            other_team["mail"]["tags"]["team"] = ["billing"]
            from service.codec import encode_batch
            from service.dimensions import Dimensions
            from tests.support.fold import events_of

            writes = encode_batch(list(events_of([*records, other_team])), T + 10, Dimensions())
            await store.merge(writes)
            await until(lambda: len(delivered(bounces)) == 1 and len(delivered(gmail)) == 1)
            await asyncio.sleep(0.3)  # nothing else comes
        finally:
            await halt(task, sender)
            await sender.aclose()
    [bounce] = delivered(bounces)
    assert (bounce["recipient"], bounce["from"], bounce["to"]) == ("b@x.com", "sent", "bounced")
    assert bounce["event"]["bounce_type"] == "Permanent"
    [sent] = delivered(gmail)
    assert (sent["message_id"], sent["recipient"], sent["provider"]) == (
        "f-1",
        "a@gmail.com",
        "gmail",
    )


async def test_a_sender_killed_mid_batch_leaves_it_to_another_replica(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store(forward_keep_s=3_600)
    async with Receiver() as receiver:
        sub = subscription(receiver)
        killed_outbox = outbox_of(store)

        async def no_release(subscription_id: str, holder: str) -> None:
            return None  # a killed process releases nothing: its lease runs out

        killed_outbox.release = no_release  # type: ignore[method-assign]
        killed = forwarder([sub], killed_outbox, lease_ms=1_000)
        await killed_outbox.prepare([sub.id])
        receiver.script = [Answer(hang_s=3.0)]  # the first post never completes
        doomed = asyncio.create_task(killed.run())
        await store.merge(_writes(messages(5, "kill")))
        await until(lambda: len(receiver.received) == 1)
        await halt(doomed, killed)  # killed mid-batch: posted, never acknowledged
        survivor = forwarder([sub], outbox_of(store), lease_ms=1_000)
        task = asyncio.create_task(survivor.run())
        try:
            # The dead sender's request reached the receiver but was never answered:
            # the survivor sends the batch again, once the dead one's lease ran out.
            await until(lambda: survivor.figures["app"].sent == 10)
        finally:
            await halt(task, survivor)
            await survivor.aclose()
            await killed.aclose()
    items = delivered(receiver)
    assert_at_least_once_in_order(items, expected_changes(5, "kill"))
    assert len(items) == 20  # the dead sender's batch was sent again, same ids
    await store.close()


async def test_two_replicas_share_the_outbox_and_one_sends(redis_target: RedisTarget) -> None:
    await redis_target.flush()
    async with Receiver() as receiver:
        sub = subscription(receiver, batch_size=10)
        stores = [redis_target.store(forward_keep_s=3_600) for _ in range(2)]
        replicas = [forwarder([sub], outbox_of(store), lease_ms=1_000) for store in stores]
        await replicas[0].outbox.prepare([sub.id])
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        try:
            # Each replica's pipeline merges half of the traffic.
            await asyncio.gather(
                *(
                    Pipeline(store).ingest(messages(30, f"rep{n}"), "http")
                    for n, store in enumerate(stores)
                )
            )
            # (The last post reaches the receiver before the sender counts it.)
            await until(
                lambda: (
                    len({i["id"] for i in delivered(receiver)}) == 120
                    and sum(r.figures["app"].sent for r in replicas) >= 120
                )
            )
            # A sender counts a batch sent before it acknowledges the entries it came
            # from: every entry acknowledged, soon after.
            deadline = time.monotonic() + 10
            while (await replicas[0].outbox.backlog(sub.id)).entries:
                assert time.monotonic() < deadline, "entries left unacknowledged"
                await asyncio.sleep(0.02)
        finally:
            for task, replica in zip(tasks, replicas, strict=True):
                await halt(task, replica)
                await replica.aclose()
    expected = expected_changes(30, "rep0") | expected_changes(30, "rep1")
    assert_at_least_once_in_order(delivered(receiver), expected)
    sending = [r.figures["app"].sent for r in replicas]
    assert sorted(sending)[0] == 0 and sum(sending) == 120  # one replica held the lease
    backlog = await replicas[0].outbox.backlog(sub.id)
    assert backlog.entries == 0
    for store in stores:
        await store.close()


def _writes(payload: bytes):
    from service.codec import encode_batch
    from service.parser import parse_payload

    return encode_batch(parse_payload(payload).events, T + 1_000)


async def test_serve_forwards_and_reports_each_subscription(tmp_path) -> None:
    """The whole service: SES_TRACKER_FORWARD_FILE, /readyz and /metrics figures."""
    from service.settings import Settings
    from tests.support.serving import serving

    async with Receiver() as receiver:
        forward_file = tmp_path / "forward.yaml"
        forward_file.write_text(
            "subscriptions:\n"
            f"  - {{name: app, url: '{receiver.base}/hook', secret: {SECRET},"
            " statuses: [delivered]}\n"
        )
        settings = Settings(_env_file=None, forward_file=forward_file)
        async with serving(settings) as server, httpx.AsyncClient(base_url=server.base) as client:
            response = await client.post("/v1/events", content=messages(3, "srv"))
            assert response.status_code == 202
            await until(lambda: len(delivered(receiver)) == 3)
            assert {i["to"] for i in delivered(receiver)} == {"delivered"}
            # The sender counts the delivery, and acknowledges it, just after.
            counted = server.runtime.forwarder.figures["app"]
            await until(lambda: counted.sent == 3 and counted.queued == 0)
            [figures] = (await client.get("/readyz")).json()["forwarding"]
            assert figures["name"] == "app" and figures["sent"] == 3
            assert figures["sending"] and figures["queued"] == 0
            metrics = (await client.get(f"{server.admin}/metrics")).text
            assert 'ses_tracker_forward_items_sent_total{subscription="app"} 3.0' in metrics
            assert 'ses_tracker_forward_queued{subscription="app"} 0.0' in metrics


async def test_a_hung_receiver_holds_up_only_its_own_subscription(outbox_store) -> None:
    store, outbox = outbox_store
    async with Receiver() as hung, Receiver() as healthy:
        hung.script = [Answer(hang_s=30.0)] * 10  # never answers in time
        subscriptions = [
            Subscription(name="hung", url=hung.base, secret=SECRET),
            Subscription(name="healthy", url=healthy.base, secret=SECRET),
        ]
        sender = forwarder(subscriptions, outbox, post_timeout_s=5.0)
        await outbox.prepare([s.id for s in subscriptions])
        task = asyncio.create_task(sender.run())
        try:
            started = time.monotonic()
            await Pipeline(store).ingest(messages(10, "hung"), "http")
            await until(lambda: len({i["id"] for i in delivered(healthy)}) == 20, timeout_s=4)
            # Everything reached the healthy receiver while the other post hung.
            assert time.monotonic() - started < 4 and sender.figures["hung"].sent == 0
            # The hung subscription's one post is open (its sender polls on its own, so
            # it may reach the receiver after the healthy one is done).
            await until(lambda: len(hung.received) == 1, timeout_s=3)
            assert sender.figures["hung"].sent == 0
        finally:
            await halt(task, sender)
            await sender.aclose()


async def test_a_receiver_replying_a_gibibyte_is_read_to_4_kib_and_costs_little() -> None:
    """#26: the reply was read whole (a 1 GiB answer took the service to 2.3 GB)."""
    outbox = MemoryOutbox()
    store = MemoryStore(outbox=outbox)
    async with HostileReceiver("flood") as receiver:
        sub = Subscription(name="app", url=receiver.base + "/hook", secret=SECRET)
        sender = forwarder([sub], outbox, post_timeout_s=5.0)
        await outbox.prepare([sub.id])
        await Pipeline(store).ingest(messages(1, "flood"), "http")
        tracemalloc.start()
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: sender.figures["app"].sent == 2, timeout_s=10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await halt(task, sender)
            await sender.aclose()
    assert peak < 8 << 20, f"the sender allocated {peak} bytes at its peak"
    assert receiver.requests == 1 and receiver.sent_bytes < 64 << 20


async def test_a_dripping_receiver_ends_each_post_at_its_deadline_under_a_held_lease(
    redis_target: RedisTarget,
) -> None:
    """#26: a reply dripping a byte at a time outlived the 15 s lease, so another
    replica took the subscription and sent the same items meanwhile."""
    await redis_target.flush()
    stores = [redis_target.store(forward_keep_s=3_600) for _ in range(2)]
    async with HostileReceiver("drip", drip_s=0.05) as receiver:
        sub = subscription(receiver)
        # The post's deadline (0.5 s) is half the lease: renewed every third of it.
        replicas = [forwarder([sub], outbox_of(s), lease_ms=1_000) for s in stores]
        await replicas[0].outbox.prepare([sub.id])
        await stores[0].merge(_writes(messages(1, "drip")))
        lease = RedisKeys(stores[0].keyspace.prefix).forward_lease(sub.id)
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        try:
            await until(lambda: receiver.requests == 1, timeout_s=5)
            ttls, senders = [], []
            started = time.monotonic()
            while time.monotonic() - started < 2.5:
                ttls.append(await stores[0].keyspace.client.pttl(lease))
                senders.append(sum(r.figures["app"].sending for r in replicas))
                await asyncio.sleep(0.05)
        finally:
            await halt(tasks[0], replicas[0])
            await halt(tasks[1], replicas[1])
            for replica in replicas:
                await replica.aclose()
            for store in stores:
                await store.close()
    # Each post was cut off at 0.5 s and retried (after at most 0.2 s of backoff),
    # always by the holder: one post open at a time, never a second sender's.
    assert receiver.most_open == 1
    assert receiver.requests >= 3
    assert [r.figures["app"].sent for r in replicas] == [0, 0]
    assert max(senders) == 1
    # Renewed during each post: it never came near running out.
    assert min(ttls) > 400, ttls
