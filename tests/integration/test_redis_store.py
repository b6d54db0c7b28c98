"""The Redis store against a real redis-server started by the fixtures."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import asyncio as aioredis

from service import state, stats
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import BUCKET_TTL_S, Counting, bucket_of
from service.stores import Checkpoint, MergeRejected, RedisStore, StoreUnavailable
from service.stores.redis.keyspace import RedisKeyspace
from tests.support import ses
from tests.support.fold import SEEN_MS, changes, events_of, fold
from tests.support.servers import RedisServer, free_port
from tests.support.strategies import (
    CROWDED_ID,
    MESSAGE_ID,
    crowded_message,
    deliveries,
    message_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = ses.SENT_AT
NOW_BUCKET = bucket_of(SEEN_MS)  # the wall clock's bucket when the merges run
COUNTING = Counting(SEEN_MS)
# The twin tests count under a tag dimension too (ses.mail tags every message "team").
DIMENSIONS = Dimensions(tags=("team",))
_examples = itertools.count()


def writes_for(records, seen_ms: int = SEEN_MS):
    return encode_batch(list(events_of(records)), seen_ms, DIMENSIONS)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_redis_merge_equals_the_python_merge(
    redis_server: RedisServer, data: st.DataObject
) -> None:
    """merge.lua and service.state.merge are twins: same records, same transitions."""
    events = data.draw(message_events())
    batches = data.draw(deliveries(events))
    python_buckets: dict = {}
    python_rollups: dict = {}
    reference, python_transitions = fold(
        batches, counters=changes(python_buckets, python_rollups), dimensions=DIMENSIONS
    )

    # Half the examples in slot groups (declared keys, as on a cluster).
    groups = data.draw(st.sampled_from([None, 4]))

    async def run() -> tuple:
        client = aioredis.Redis.from_url(redis_server.url)
        store = RedisStore(
            client, prefix=f"prop{next(_examples)}:", call_budget=400, slot_groups=groups
        )
        transitions = []
        for batch in batches:
            transitions += await store.merge(writes_for(batch), counting=COUNTING)
        record = await store.get(MESSAGE_ID)
        buckets = sorted((await store.stats_revisions()).buckets)
        counters = dict(zip(buckets, await store.read_buckets(buckets), strict=True))
        rollups = {}
        for step, start in python_rollups:
            [rollups[step, start]] = await store.read_rollups(step, [start])
        await client.aclose()
        return record, transitions, counters, rollups

    record, redis_transitions, redis_buckets, redis_rollups = asyncio.run(run())
    assert record == reference[MESSAGE_ID]
    # The same counters in the same buckets of event time, and the same rollups.
    assert redis_buckets == {b: c for b, c in python_buckets.items() if c}
    assert redis_rollups == python_rollups
    key = lambda t: (t.recipient, t.from_status or "", t.to_status, t.at)  # noqa: E731
    assert sorted(redis_transitions, key=key) == sorted(python_transitions, key=key)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(crowded_message())
def test_redis_keeps_the_same_capped_recipients_as_python(
    redis_server: RedisServer, events: list
) -> None:
    """The caps live in both merges: the same 100 recipients, the same truncation."""
    batches = [[event] for event in events]
    reference, _ = fold(batches)

    async def run():
        client = aioredis.Redis.from_url(redis_server.url)
        store = RedisStore(client, prefix=f"caps{next(_examples)}:")
        for batch in batches:
            await store.merge(writes_for(batch))
        record = await store.get(CROWDED_ID)
        await client.aclose()
        return record

    assert asyncio.run(run()) == reference[CROWDED_ID]


@pytest.mark.single_redis
async def test_redis_admits_the_same_groups_as_python(make_store) -> None:
    """Group admission is in both merges: the same fields, (other) included, in live
    buckets (200 values a dimension) and rollups (100). On a cluster each slot group admits
    its own 200 (README, Redis Cluster), so the fields differ from one process's."""
    records = [ses.send(f"dom-{n}", [f"a@d{n}.example"]) for n in range(260)]
    records += [ses.delay(f"dom-{n}", [f"a@d{n}.example"], T + 5) for n in range(0, 260, 7)]
    python_buckets: dict = {}
    python_rollups: dict = {}
    fold(
        [records[:100], records[100:]],
        counters=changes(python_buckets, python_rollups),
        dimensions=DIMENSIONS,
    )
    store = make_store()
    await store.merge(writes_for(records[:100]), counting=COUNTING)
    await store.merge(writes_for(records[100:]), counting=COUNTING)
    sends = bucket_of(T)
    assert await store.read_buckets([sends]) == [python_buckets[sends]]
    assert python_buckets[sends]["g:domain=(other)|c:sent"] == 60
    for step, start in python_rollups:
        assert await store.read_rollups(step, [start]) == [python_rollups[step, start]]
    assert python_rollups["day", stats.day_of(T)]["g:domain=(other)|c:sent"] == 160


async def test_redis_reads_events_without_a_send_time_as_python_does(make_store) -> None:
    def bare(record: dict) -> dict:
        del record["mail"]["timestamp"]
        return record

    batches = [
        [bare(ses.delay("bare", ["a@x.com", "b@x.com"], T + 5))],
        [bare(ses.delivery("bare", ["b@x.com"], T + 60_000))],
        [ses.send("bare", ["a@x.com", "b@x.com"])],
    ]
    python_buckets: dict = {}
    reference, python_transitions = fold(
        batches, counters=changes(python_buckets), dimensions=DIMENSIONS
    )
    store = make_store()
    redis_transitions = []
    for batch in batches:
        redis_transitions += await store.merge(writes_for(batch), counting=COUNTING)
    assert await store.get("bare") == reference["bare"]
    buckets = sorted(python_buckets)
    assert await store.read_buckets(buckets) == [python_buckets[b] for b in buckets]
    assert set(redis_transitions) == set(python_transitions)
    assert {t.latency_ms for t in python_transitions if t.to_status != "sent"} == {None}


async def test_the_byte_cap_is_enforced_inside_redis(make_store) -> None:
    store = make_store()
    delays = [ses.delay("capped", ["a@x.com"], T + n) for n in range(200)]
    for delay in delays:
        delay["deliveryDelay"]["delayedRecipients"][0]["diagnosticCode"] = "d" * 1_000
    for delay in delays:
        await store.merge(writes_for([delay]))
    record = await store.get("capped")
    assert record.truncated
    assert sum(map(len, record.blobs.values())) <= state.MAX_RECORD_BLOB_BYTES
    assert record.recipient_status("a@x.com") == "delayed"


async def test_two_clients_merging_one_message_at_once_lose_nothing(make_store) -> None:
    recipients = [f"r{i}@x.com" for i in range(20)]
    events = [ses.send("m-c", recipients)]
    events += [ses.delay("m-c", [r], T + 100 + i) for i, r in enumerate(recipients)]
    events += [ses.delivery("m-c", [r], T + 5_000 + i) for i, r in enumerate(recipients[::2])]
    events += [ses.bounce("m-c", [r], T + 6_000 + i) for i, r in enumerate(recipients[1::2])]
    events += [ses.open_("m-c", [r], T + 9_000) for r in recipients[:3]]
    reference, _ = fold([events])
    rng = random.Random(7)
    first, second = make_store(), make_store()
    for _round in range(5):
        shuffled = events[:]
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        # Each client sends its half as many small batches, interleaved with the other.
        jobs = [
            store.merge(writes_for([event]))
            for pair in itertools.zip_longest(shuffled[:half], shuffled[half:])
            for store, event in zip((first, second), pair, strict=True)
            if event is not None
        ]
        await asyncio.gather(*jobs)
    assert await first.get("m-c") == reference["m-c"]
    for store in (first, second):
        await store.close()


async def test_transitions_are_reported_once_across_clients(make_store) -> None:
    first, second = make_store(), make_store()
    batch = writes_for([ses.send("m-t", ["a@x.com"]), ses.delivery("m-t", ["a@x.com"], T + 5)])
    results = await asyncio.gather(
        *(store.merge(batch) for store in (first, second) for _ in range(5))
    )
    flat = [t for result in results for t in result]
    assert sorted((t.from_status or "", t.to_status) for t in flat) == [
        ("", "sent"),
        ("sent", "delivered"),
    ]
    await first.close()
    await second.close()


async def test_state_expires_after_retention(make_store, redis_client) -> None:
    store = make_store(retention_s=3600)
    await store.merge(writes_for([ses.send("m-ttl", ["a@x.com"])]))
    ttl = await redis_client.ttl(store.key("m-ttl"))
    assert 3590 <= ttl <= 3600
    short = make_store(retention_s=1)
    await short.merge(writes_for([ses.send("m-gone", ["a@x.com"])]))
    await asyncio.sleep(1.6)
    assert await short.get("m-gone") is None
    await store.close()
    await short.close()


async def test_each_merge_refreshes_the_expiry(make_store, redis_client) -> None:
    store = make_store(retention_s=100)
    await store.merge(writes_for([ses.send("m-r", ["a@x.com"])]))
    await redis_client.expire(store.key("m-r"), 5)
    await store.merge(writes_for([ses.delivery("m-r", ["a@x.com"], T + 1)]))
    assert await redis_client.ttl(store.key("m-r")) > 90
    await store.close()


async def test_checkpoint_lands_with_the_last_chunk_of_the_batch(make_store) -> None:
    store = make_store(call_budget=250)
    records = [ses.send(f"m-k{i}", ["a@x.com"]) for i in range(7)]
    await store.merge(writes_for(records), Checkpoint("kafka:g", {"ses:0": "7", "ses:1": "3"}))
    assert await store.load_checkpoint("kafka:g") == {"ses:0": "7", "ses:1": "3"}
    for i in range(7):
        assert await store.get(f"m-k{i}") is not None
    await store.merge([], Checkpoint("kafka:g", {"ses:0": "9"}))
    assert await store.load_checkpoint("kafka:g") == {"ses:0": "9", "ses:1": "3"}
    await store.close()


async def test_first_sighting_and_first_open_win_in_redis(make_store) -> None:
    """Lua compares bytes exactly as Python does, whatever Redis's locale."""
    store = make_store()
    late, early = T + 9_000, T + 1_000
    await store.merge(writes_for([ses.open_("m-o", ["a@x.com"], late)], seen_ms=SEEN_MS + 50))
    await store.merge(writes_for([ses.open_("m-o", ["a@x.com"], early)], seen_ms=SEEN_MS + 60))
    await store.merge(writes_for([ses.open_("m-o", ["a@x.com"], early)], seen_ms=SEEN_MS + 10))
    expected = state_after(
        [
            ([ses.open_("m-o", ["a@x.com"], early)], SEEN_MS + 10),
        ]
    )
    assert (await store.get("m-o")).blobs == expected.blobs
    await store.close()


def state_after(sightings):
    from service import state as state_module

    record = state_module.MessageRecord()
    for records, seen in sightings:
        for write in writes_for(records, seen):
            state_module.merge(record, write)
    return record


async def test_lost_script_cache_is_reloaded(make_store, redis_client) -> None:
    store = make_store()
    await store.merge(writes_for([ses.send("m-s", ["a@x.com"])]))
    await redis_client.script_flush()  # as after a Redis restart
    await store.merge(writes_for([ses.delivery("m-s", ["a@x.com"], T + 5)]))
    assert (await store.get("m-s")).recipient_status("a@x.com") == "delivered"
    await store.close()


async def test_state_survives_a_new_process_and_a_redis_restart(tmp_path) -> None:
    server = RedisServer(tmp_path / "restart")
    server.start()
    try:
        writer = RedisStore(aioredis.Redis.from_url(server.url))
        await writer.merge(
            writes_for([ses.send("m-p", ["a@x.com"]), ses.bounce("m-p", ["a@x.com"], T + 9)])
        )
        await writer.close()
        server.restart()  # append-only file, fsync always: nothing acknowledged is lost
        reader = RedisStore(aioredis.Redis.from_url(server.url))
        record = await reader.get("m-p")
        assert record is not None and record.recipient_status("a@x.com") == "bounced"
        # The restarted server has an empty script cache; merging still works.
        await reader.merge(writes_for([ses.complaint("m-p", ["a@x.com"], T + 99)]))
        assert (await reader.get("m-p")).recipient_status("a@x.com") == "complained"
        await reader.close()
    finally:
        server.stop()


async def test_unreachable_redis_raises_store_unavailable() -> None:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    store = RedisStore(client)
    with pytest.raises(StoreUnavailable):
        await store.merge(writes_for([ses.send("m-x", ["a@x.com"])]))
    with pytest.raises(StoreUnavailable):
        await store.get("m-x")
    assert await store.ping() is False
    await store.close()


async def test_delivered_message_footprint_stays_compact(make_store, redis_client) -> None:
    """A delivered one-recipient message, timeline included, in at most 800 bytes."""
    store = make_store()
    records = [
        ses.send("m-f", ["someone@gmail.com"]),
        ses.delivery("m-f", ["someone@gmail.com"], T + 900),
    ]
    await store.merge(writes_for(records))
    usage = await redis_client.memory_usage(store.key("m-f"), samples=0)
    assert usage <= 800, usage
    await store.close()


async def test_statistics_count_a_retried_batch_once_and_expire(make_store, redis_client) -> None:
    store = make_store()
    batch = writes_for([ses.send("m-st", ["a@x.com"]), ses.delivery("m-st", ["a@x.com"], T + 900)])
    await store.merge(batch, counting=COUNTING)
    first = await store.read_stats(NOW_BUCKET - 3_600, NOW_BUCKET)
    revisions = await store.stats_revisions()
    day = await store.read_rollups("day", [stats.day_of(T)])
    await store.merge(batch, counting=COUNTING)  # a retry after a lost reply
    await store.merge(batch, counting=Counting(SEEN_MS + 10_000))  # a replay, later
    assert await store.read_stats(NOW_BUCKET - 3_600, NOW_BUCKET + 10) == first
    assert await store.stats_revisions() == revisions  # nothing changed, nothing to re-read
    assert await store.read_rollups("day", [stats.day_of(T)]) == day
    assert day[0]["c:sent"] == 1 and day[0]["g:configuration_set=transactional|c:delivered"] == 1
    assert first["c:sent"] == 1 and first["c:delivered"] == 1
    # Each change counts in its event's bucket (send at T, delivery 0.9 s later: one
    # bucket), which lives BUCKET_TTL_S from its own time, not from the merge's.
    [sends] = revisions.buckets
    assert sends == bucket_of(T)
    # (On a cluster: the hash of the message's slot group; the others do not exist.)
    ttl = max([await redis_client.ttl(key) for key in store.stats_keys(sends)])
    assert BUCKET_TTL_S - (NOW_BUCKET - sends) - 5 <= ttl <= BUCKET_TTL_S - (NOW_BUCKET - sends)
    # A rollup lives history_days past the end of its own period.
    day_start = stats.day_of(T)
    keep = day_start + stats.DAY_S + COUNTING.history_days * stats.DAY_S - SEEN_MS // 1000
    rollups = [group.keys.rollup("day", day_start) for group in store.slot_groups]
    ttl = max([await redis_client.ttl(key) for key in rollups])
    assert keep - 5 <= ttl <= keep
    await store.close()


@pytest.mark.single_redis  # on a cluster each slot group's stream trims the same way
async def test_the_transitions_stream_keeps_a_window_of_time(make_store, redis_client) -> None:
    store = make_store(feed_window_s=0.5)
    last = await store.last_transition_id()
    await store.merge(writes_for([ses.send("m-w0", ["a@x.com"])]))
    last, followed = await store.follow_transitions(last, block_ms=100)
    assert [(t.message_id, t.to_status) for t in followed] == [("m-w0", "sent")]
    for n in range(1, 150):
        await store.merge(writes_for([ses.send(f"m-w{n}", ["a@x.com"])]))
    await asyncio.sleep(1.0)  # all 150 entries are now older than the window
    for n in range(150, 300):
        await store.merge(writes_for([ses.send(f"m-w{n}", ["a@x.com"])]))
    # Trimming is approximate (whole stream nodes of 100 entries), never unbounded.
    entries = await redis_client.xrange(store.transitions_keys[0])
    assert 150 <= len(entries) <= 200
    assert all(b"m-w0\xa7" not in fields[b"t"] for _, fields in entries)
    await store.close()


async def test_redis_reports_its_memory_limit_and_evictions(make_store, redis_client) -> None:
    """What the tracker rule reads to warn before Redis fills up or evicts."""
    store = make_store()
    before = await store.memory()
    assert before is not None and before.used_bytes > 0 and before.max_bytes is None
    await redis_client.config_set("maxmemory", 512 * 1024 * 1024)
    try:
        limited = await store.memory()
        assert limited is not None and limited.max_bytes == 512 * 1024 * 1024
    finally:
        await redis_client.config_set("maxmemory", 0)
        await store.close()


async def test_the_alert_outbox_says_how_old_its_oldest_entry_is(redis_client) -> None:
    from service.alerts.lifecycle import Plan
    from service.alerts.redis_store import RedisAlertStore
    from tests.support.chat import sample_alert

    # Alert state shares one slot on a cluster (RedisKeyspace.single_slot).
    alerts = RedisAlertStore(RedisKeyspace.of(redis_client, prefix="{outbox-age}:"))
    assert await alerts.oldest_waiting_ms("slack-1") is None
    assert await alerts.hold_lease("me", 10_000)
    plan = Plan(upserts={}, deletes=(), notices=(sample_alert(),))
    assert await alerts.commit("me", plan, ["slack-1"], 1_700_000_000_000)
    assert await alerts.oldest_waiting_ms("slack-1") == 1_700_000_000_000


async def test_a_replay_holds_messages_past_the_retention_briefly(make_store, redis_client) -> None:
    """#14: a replayed message sent before the retention counts in its day's rollup,
    keeps its record only PAST_RETENTION_HOLD_S and enters no search index."""
    from service.stores.base import PAST_RETENTION_HOLD_S

    store = make_store(retention_s=14 * 86_400)
    now = T + 30 * 86_400_000
    replaying = Counting(now, live=False)
    records = [ses.send("m-old", ["a@gmail.com"]), ses.delivery("m-old", ["a@gmail.com"], T + 900)]
    await store.merge(writes_for(records, seen_ms=now), counting=replaying)
    assert 0 < await redis_client.ttl(store.key("m-old")) <= PAST_RETENTION_HOLD_S
    assert not await redis_client.exists(f"{store.keyspace.prefix}r:a@gmail.com")
    [day] = await store.read_rollups("day", [stats.day_of(T)])
    assert day["c:sent"] == 1 and day["g:provider=gmail|c:delivered"] == 1
    await store.merge(writes_for(records, seen_ms=now), counting=replaying)  # counts once
    assert await store.read_rollups("day", [stats.day_of(T)]) == [day]
    # Live ingestion keeps such a message for the whole retention, as before.
    await store.merge(writes_for([ses.send("m-live", ["b@x.com"])], seen_ms=now), counting=COUNTING)
    assert await redis_client.ttl(store.key("m-live")) > 13 * 86_400
    # Files replayed whole are remembered.
    assert not await store.replayed("abc")
    await store.mark_replayed("abc", 60)
    assert await store.replayed("abc")
    assert 0 < await redis_client.ttl(f"{store.keyspace.prefix}replayed:abc") <= 60
    await store.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_redis_suppresses_the_same_addresses_as_python(
    redis_server: RedisServer, data: st.DataObject
) -> None:
    """#15: suppressions are made in both merges alike, whatever the order: an address
    that gains a Permanent bounce or a complaint, its earliest reason kept."""
    from service.stores import MemoryStore

    events = data.draw(message_events())
    batches = data.draw(deliveries(events))
    keep = 3_660  # the test's events are from 2023: keep them

    groups = data.draw(st.sampled_from([None, 4]))  # half in slot groups, as on a cluster

    async def run() -> tuple:
        client = aioredis.Redis.from_url(redis_server.url)
        redis_store = RedisStore(
            client, prefix=f"sup{next(_examples)}:", suppression_days=keep, slot_groups=groups
        )
        memory = MemoryStore(suppression_days=keep)
        for batch in batches:
            await redis_store.merge(writes_for(batch))
            await memory.merge(writes_for(batch))
        found = [
            (await redis_store.suppressions(None, None, 100, None))[0],
            (await memory.suppressions(None, None, 100, None))[0],
        ]
        await client.aclose()
        return found

    in_redis, in_memory = asyncio.run(run())
    assert in_redis == in_memory
    unsafe = {
        address
        for record in events
        for kind, body, key in (("Bounce", "bounce", "bouncedRecipients"),
                                ("Complaint", "complaint", "complainedRecipients"))
        if (record.get("eventType") or record.get("notificationType")) == kind
        and (kind == "Complaint" or record[body]["bounceType"] == "Permanent")
        for address in (r["emailAddress"] for r in record[body][key])
    }  # fmt: skip
    assert {entry.address for entry in in_redis} == unsafe


async def test_an_address_suppressed_from_two_slot_groups_is_listed_once(make_store) -> None:
    """On a cluster two messages of different slot groups can suppress one address:
    each group keeps an entry; reads give the earliest, as one Redis keeps it, and
    removal and erasure clear every group."""
    store = make_store(suppression_days=3_660)
    ids = [f"two-{n}" for n in range(40)]
    if store.cluster:
        first = ids[0]
        other = next(i for i in ids if store.slot_group(i).number != store.slot_group(first).number)
        ids = [first, other]
    else:
        ids = ids[:2]
    later, earlier = ids
    await store.merge(writes_for([ses.send(later, ["both@x.com"]),
                                  ses.complaint(later, ["both@x.com"], T + 50_000)]))  # fmt: skip
    await store.merge(writes_for([ses.send(earlier, ["both@x.com"]),
                                  ses.bounce(earlier, ["both@x.com"], T + 10_000)]))  # fmt: skip
    found = await store.suppression("both@x.com")
    assert found is not None and found.message_id == earlier and found.reason == "bounce"
    listed, cursor = await store.suppressions(None, None, 10, None)
    assert [(e.address, e.message_id) for e in listed] == [("both@x.com", earlier)]
    assert cursor is None
    assert await store.remove_suppression("both@x.com")
    assert await store.suppression("both@x.com") is None
    assert (await store.suppressions(None, None, 10, None))[0] == []
    await store.close()


async def test_a_store_refuses_data_kept_in_another_number_of_slot_groups(make_store) -> None:
    from service.stores.redis.store import StoreFormatError

    store = make_store()
    await store.claim_format()
    other = make_store(slot_groups=8 if store.cluster else 4)
    with pytest.raises(StoreFormatError, match="slot groups"):
        await other.claim_format()
    await store.close()
    await other.close()


async def test_the_checkpoint_is_never_ahead_of_a_part_that_failed(
    make_store, redis_client
) -> None:
    """A batch whose part in one slot group fails leaves the checkpoint where it was
    (the other parts may have committed); the batch retried commits the rest, the
    checkpoint with it, and counts each change once."""
    from service.stores import MemoryStore

    store = make_store()
    ids = [f"ck-{n}" for n in range(40)]
    broken = ids[0]
    if store.cluster:
        group = store.slot_group(broken).number
        ids = [broken] + [i for i in ids if store.slot_group(i).number != group]
    records = [ses.send(i, [f"{i}@x.com"]) for i in ids[:6]]
    records += [ses.delivery(i, [f"{i}@x.com"], T + 800) for i in ids[:6]]
    writes = writes_for(records)
    # The broken message's record is a hash: its group's script fails on it.
    await redis_client.hset(store.key(broken), "not", "a record")
    with pytest.raises(MergeRejected) as refused:
        await store.merge(writes, Checkpoint("kafka:g", {"t:0": "12"}), COUNTING)
    assert list(refused.value.refused) == [broken]  # the others merged, uncheckpointed
    assert await store.load_checkpoint("kafka:g") == {}
    await redis_client.delete(store.key(broken))
    await store.merge(writes, Checkpoint("kafka:g", {"t:0": "12"}), COUNTING)
    assert await store.load_checkpoint("kafka:g") == {"t:0": "12"}
    # The next batch fails in the broken message's group only: the others' copies
    # move on, and the source still resumes where that group stands.
    later = writes_for([ses.complaint(i, [f"{i}@x.com"], T + 5_000) for i in ids[:2]])
    record = await redis_client.get(store.key(broken))
    await redis_client.delete(store.key(broken))
    await redis_client.hset(store.key(broken), "not", "a record")
    with pytest.raises(MergeRejected):
        await store.merge(later, Checkpoint("kafka:g", {"t:0": "20"}), COUNTING)
    assert await store.load_checkpoint("kafka:g") == {"t:0": "12"}
    await redis_client.delete(store.key(broken))
    await redis_client.set(store.key(broken), record)
    once = MemoryStore()
    await once.merge(writes, None, COUNTING)
    await once.merge(later, None, COUNTING)
    await store.merge(later, Checkpoint("kafka:g", {"t:0": "20"}), COUNTING)
    assert await store.load_checkpoint("kafka:g") == {"t:0": "20"}
    for message_id in ids[:6]:
        status = "complained" if message_id in ids[:2] else "delivered"
        assert (await store.get(message_id)).recipient_status(f"{message_id}@x.com") == status
    buckets = sorted((await once.stats_revisions()).buckets)
    counted = [Counter({k: v for k, v in c.items() if k.startswith("c:")})
               for c in await store.read_buckets(buckets)]  # fmt: skip
    assert counted == [Counter({k: v for k, v in c.items() if k.startswith("c:")})
                       for c in await once.read_buckets(buckets)]  # fmt: skip
    await store.close()


async def test_the_merge_script_names_no_key_it_was_not_given(
    make_store, redis_target, monkeypatch
) -> None:
    """With slot groups, merge.lua refuses a key missing from KEYS (so a cluster
    routes every key of a call with it), and every key of a call is in the call's
    one slot. (On one Redis, slot groups are asked for: the plain layout declares
    nothing.)"""
    from redis.crc import key_slot

    from service.stores.redis import merge_call

    grouped = {} if redis_target.cluster else {"slot_groups": 4}
    store = make_store(suppression_days=3_660, feed_window_s=60, **grouped)
    records = [ses.send("m-keys", ["a@x.com", "b@y.com"]), ses.bounce("m-keys", ["a@x.com"], T + 9)]
    group = store.slot_group("m-keys")
    await store.refresh_tombstones()
    keys, _args = store._calls.args(group, writes_for(records), None, COUNTING, store._tombstones)
    assert len({key_slot(key.encode()) for key in keys}) == 1
    declared = merge_call.declared
    monkeypatch.setattr(
        merge_call, "declared", lambda *a: [k for k in declared(*a) if ":sup:" not in k]
    )
    with pytest.raises(MergeRejected) as refused:
        await store.merge(writes_for(records), counting=COUNTING)
    assert "key not in KEYS" in refused.value.refused["m-keys"]
    monkeypatch.setattr(merge_call, "declared", declared)
    await store.merge(writes_for(records), counting=COUNTING)
    assert (await store.get("m-keys")).recipient_status("a@x.com") == "bounced"
    await store.close()


async def test_a_follower_reads_every_group_s_transitions_once_and_resumes(make_store) -> None:
    """The transitions stream is one per slot group on a cluster: a follower's place
    names each, and it reads every transition once, from wherever it resumes."""
    store = make_store(feed_window_s=60)
    start = await store.last_transition_id()
    await store.merge(writes_for([ses.send(f"f-{n}", [f"u{n}@x.com"]) for n in range(30)]))
    place, first = await store.follow_transitions(start, block_ms=200)
    assert sorted(t.message_id for t in first) == sorted(f"f-{n}" for n in range(30))
    if store.cluster:
        assert len(place.split(" ")) == len(store.slot_groups)
    assert (await store.follow_transitions(place, block_ms=100))[1] == []
    await store.merge(writes_for([ses.delivery("f-7", ["u7@x.com"], T + 5)]))
    _, later = await store.follow_transitions(place, block_ms=200)
    assert [(t.message_id, t.to_status) for t in later] == [("f-7", "delivered")]
    await store.close()


async def test_a_group_that_lost_its_counts_reads_as_a_reset(make_store, redis_client) -> None:
    """Alert windows re-read everything when the store lost data: on a cluster one
    group's revisions going back is enough."""
    store = make_store()
    await store.merge(writes_for([ses.send(f"r-{n}", [f"u{n}@x.com"]) for n in range(20)]), None,
                      COUNTING)  # fmt: skip
    before = await store.stats_revisions()
    assert before.sequence > 0
    lost = store.slot_group("r-0")
    await redis_client.delete(lost.keys.stats_revisions)  # that master lost its data
    if store.cluster:
        # Other groups move on meanwhile, so the sum alone could hide the loss.
        more = [ses.send(f"r2-{n}", [f"v{n}@x.com"]) for n in range(60)]
        await store.merge(writes_for(more), None, COUNTING)
        assert (await store.stats_revisions()).sequence == -1
        assert (await store.stats_revisions()).sequence > 0  # said once
    else:
        assert (await store.stats_revisions()).sequence < before.sequence
    await store.close()
