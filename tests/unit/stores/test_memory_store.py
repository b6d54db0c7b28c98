from service import state
from service.codec import encode_batch
from service.search import SearchQuery
from service.stores import Checkpoint, MemoryStore
from tests.support import ses
from tests.support.fold import events_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def writes(*message_ids: str):
    return encode_batch(list(events_of(ses.send(m, ["a@x.com"]) for m in message_ids)), 1)


async def test_evicts_least_recently_updated_and_counts() -> None:
    store = MemoryStore(max_messages=2, clock=FakeClock())
    await store.merge(writes("m1", "m2"))
    await store.merge(writes("m1"))
    await store.merge(writes("m3"))
    assert await store.get("m2") is None
    assert await store.get("m1") is not None and await store.get("m3") is not None
    assert store.evictions == 1 and len(store) == 2


async def test_expires_after_retention_since_last_update() -> None:
    clock = FakeClock()
    store = MemoryStore(retention_s=10, clock=clock)
    await store.merge(writes("m1", "m2"))
    clock.now += 6
    await store.merge(writes("m2"))
    clock.now += 6
    assert await store.get("m1") is None
    assert await store.get("m2") is not None
    clock.now += 11
    await store.merge(writes("m3"))
    assert len(store) == 1
    assert store.expirations == 2


async def test_an_expired_record_starts_afresh() -> None:
    clock = FakeClock()
    store = MemoryStore(retention_s=10, clock=clock)
    await store.merge(writes("m1"))
    clock.now += 11
    transitions = await store.merge(writes("m1"))
    assert [(t.from_status, t.to_status) for t in transitions] == [(None, "sent")]
    assert store.expirations == 1


async def test_checkpoint_is_kept_with_the_batch() -> None:
    store = MemoryStore()
    await store.merge(writes("m1"), Checkpoint("kafka:g", {"t:0": "10", "t:1": "4"}))
    await store.merge([], Checkpoint("kafka:g", {"t:0": "12"}))
    assert await store.load_checkpoint("kafka:g") == {"t:0": "12", "t:1": "4"}
    assert await store.load_checkpoint("other") == {}


async def test_memory_is_bounded_by_bytes_as_well_as_messages() -> None:
    store = MemoryStore(max_messages=1_000_000, max_bytes=50_000, clock=FakeClock())
    for n in range(200):
        await store.merge(writes(f"b{n}"))
    assert 0 < store.bytes <= 50_000
    assert store.evictions > 0 and len(store) < 200
    assert await store.get("b199") is not None and await store.get("b0") is None


async def test_one_address_receiving_most_mail_is_indexed_in_a_set() -> None:
    """An archive BCC: updates and drops stay O(1), never a list searched per update."""
    store = MemoryStore(max_messages=20_000, clock=FakeClock())
    ids = [f"bcc{n}" for n in range(25_000)]
    for start in range(0, len(ids), 1_000):
        await store.merge(
            encode_batch(
                list(events_of(ses.send(m, ["archive@x.com"]) for m in ids[start : start + 1_000])),
                1,
            )
        )
    held = store._index._by_recipient["archive@x.com"]
    assert isinstance(held, dict) and len(held) == 20_000  # 5,000 evicted and dropped
    page = await store.search(SearchQuery(recipient="archive@x.com", limit=5))
    assert len(page.hits) == 5 and all(hit.message_id in held for hit in page.hits)


async def test_an_evicted_recipient_leaves_the_recipient_index() -> None:
    store = MemoryStore(clock=FakeClock())
    crowd = [f"r{n:03d}@x.com" for n in range(state.MAX_RECIPIENTS)]
    await store.merge(encode_batch(list(events_of([ses.send("crowd", crowd)])), 1))
    await store.merge(encode_batch(list(events_of([ses.send("crowd", ["a@x.com"])])), 1))
    record = await store.get("crowd")
    assert "a@x.com" in record.recipients and crowd[-1] not in record.recipients
    gone = await store.search(SearchQuery(recipient=crowd[-1], limit=5))
    assert gone.hits == []
    assert crowd[-1] not in store._index._by_recipient


async def test_statistics_are_pruned_hour_after_hour_without_failing_a_merge() -> None:
    """Merges two hours apart prune the live buckets, their revisions and the hours'
    admissions; a merge that finds only an old admission to prune still goes in."""
    from service import stats

    store = MemoryStore()
    start = ses.SENT_AT
    for n, at in enumerate([start, start + 3_610_000, start + 7_300_000, start + 7_310_000]):
        writes = encode_batch(list(events_of([ses.send(f"p-{n}", ["a@x.com"], sent_at=at)])), at)
        await store.merge(writes, None, stats.Counting(at))
    revisions = await store.stats_revisions()
    oldest = stats.live_bucket(start + 7_310_000, start + 7_310_000) - stats.BUCKET_TTL_S
    assert revisions.buckets and min(revisions.buckets) >= oldest
    assert (await store.get("p-3")) is not None
