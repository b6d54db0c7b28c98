from service.codec import encode_batch
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
