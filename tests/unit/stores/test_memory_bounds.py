"""The memory store inside its bound (issue #23 point 9): suppressions and the
forwarding outbox count in SES_TRACKER_MEMORY_MAX_BYTES, expired suppressions go, and
a listing page, a search page and a whole export cost what they return (work is
counted: records examined, suppressions read), not what the store holds."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from service import suppressions as suppressions_module
from service.clock import wall_clock_ms
from service.codec import encode_batch
from service.forward.items import Change
from service.forward.outbox import MemoryOutbox
from service.search import MAX_LIMIT, SearchQuery, pages
from service.stores import MemoryStore
from service.suppressions import Suppression
from tests.support import ses
from tests.support.fold import events_of

DAY_MS = 86_400_000
# Suppressions are kept by wall time: tests that do not move it use the real one.
NOW_MS = wall_clock_ms()
T = NOW_MS - DAY_MS  # send times: a day ago, well inside the suppression days


class WallClock:
    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def fill(store: MemoryStore, messages: int, *, bounced: bool = False, batch: int = 500) -> None:
    """``messages`` messages, m-0 oldest, each to its own recipient (bounced: and a
    Permanent bounce, so a suppression each, the newest last)."""
    for first in range(0, messages, batch):
        records = []
        for n in range(first, min(first + batch, messages)):
            address = [f"user{n}@example.com"]
            records.append(ses.send(f"m-{n}", address, T + n))
            if bounced:
                records.append(ses.bounce(f"m-{n}", address, T + n + 5, sent_at=T + n))
        store.merge_now(encode_batch(list(events_of(records)), NOW_MS))


async def listed(store: MemoryStore, limit: int = 500, **query) -> list[Suppression]:
    found, after = [], None
    for _ in range(10_000):
        page, after = await store.suppressions(
            query.get("reason"), query.get("since_ms"), limit, after
        )
        found += page
        if after is None:
            return found
    raise AssertionError("listing did not end")


async def test_suppressions_count_in_the_byte_bound_and_the_oldest_go_counted() -> None:
    """4,000 suppressions (~1.8 MB by the store's estimate) in a store bounded at 1 MB:
    they take at most half of it, the newest are kept, and the loss is counted."""
    store = MemoryStore(max_bytes=1_000_000)
    fill(store, 4_000, bounced=True)
    held = await listed(store)
    assert store.bytes <= 1_000_000
    assert 0 < len(held) * 300 <= 500_000  # a suppression holds over 300 bytes
    assert len(held) == store.suppressions_held
    assert store.suppressions_dropped == 4_000 - len(held)
    assert (await store.memory()).evicted >= store.suppressions_dropped
    assert await store.suppression("user3999@example.com") is not None
    assert await store.suppression("user0@example.com") is None
    # Removing and erasing give their bytes back.
    before = store.bytes
    assert await store.remove_suppression("user3999@example.com")
    assert store.bytes < before


async def test_expired_suppressions_leave_memory_in_bounded_batches() -> None:
    wall = WallClock()
    store = MemoryStore(suppression_days=2, wall_clock=wall)
    fill(store, 1_000, bounced=True)
    assert store.suppressions_held == 1_000
    full = store.bytes
    wall.ms += 3 * DAY_MS  # every one is past its days
    # A listing shows none at once, and lets a bounded batch go each call.
    page, cursor = await store.suppressions(None, None, 50, None)
    assert page == [] and cursor is None
    assert 0 < 1_000 - store.suppressions_held <= 256
    for _ in range(4):
        await store.suppressions(None, None, 50, None)
    assert store.suppressions_held == 0 and store.bytes < full
    assert store.suppressions_dropped == 0  # expiry is no loss


async def test_a_lookup_lets_an_expired_suppression_go() -> None:
    wall = WallClock()
    store = MemoryStore(suppression_days=2, wall_clock=wall)
    fill(store, 3, bounced=True)
    wall.ms += 3 * DAY_MS
    assert await store.suppression("user1@example.com") is None
    assert store.suppressions_held == 2


class CountedSuppression(Suppression):
    """A suppression that counts how often its ``since`` is read: what a listing
    examines, whatever structure holds it."""

    __slots__ = ()
    reads = 0

    def __getattribute__(self, name: str):
        if name == "since_ms":
            CountedSuppression.reads += 1
        return object.__getattribute__(self, name)


async def test_a_listing_page_reads_the_page_not_every_suppression(monkeypatch) -> None:
    monkeypatch.setattr(suppressions_module, "Suppression", CountedSuppression)
    store = MemoryStore()
    fill(store, 4_000, bounced=True)
    CountedSuppression.reads = 0
    page, cursor = await store.suppressions(None, None, 100, None)
    assert [s.address for s in page[:2]] == ["user3999@example.com", "user3998@example.com"]
    page, cursor = await store.suppressions(None, None, 100, cursor)
    assert page[0].address == "user3899@example.com" and cursor is not None
    page, _ = await store.suppressions("complaint", None, 100, None)
    assert page == []
    assert CountedSuppression.reads <= 3 * (100 + 1) * 3, CountedSuppression.reads


def test_the_suppression_estimate_covers_what_they_hold() -> None:
    """The weight (service.stores.memory_suppressions) against tracemalloc."""
    from service.stores.memory_suppressions import MemorySuppressions

    subtype = b"General"
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = MemorySuppressions(days=400, max_bytes=1 << 40)
    for n in range(5_000):
        # As a merge makes them: each with its own strings and ints.
        held.add(
            Suppression(
                f"someone.{n}@example.com",
                "bounce",
                NOW_MS - n,
                f"0100019abcdef{n:03x}-{n:08x}-1a2b-4c3d-9e8f-0123456789ab-000000",
                subtype.decode(),
            ),
            NOW_MS,
        )
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used <= held.bytes <= 1.25 * used, (used, held.bytes)


def search_counter(monkeypatch) -> list[int]:
    """How many records searches check against a query (SearchQuery.matches calls)."""
    calls = [0]
    matches = SearchQuery.matches

    def counted(self, record):
        calls[0] += 1
        return matches(self, record)

    monkeypatch.setattr(SearchQuery, "matches", counted)
    return calls


async def test_a_search_page_examines_the_page_not_every_message(monkeypatch) -> None:
    store = MemoryStore()
    fill(store, 3_000)
    calls = search_counter(monkeypatch)
    first = await store.search(SearchQuery(limit=50))
    assert [hit.message_id for hit in first.hits[:2]] == ["m-2999", "m-2998"]
    deep = await store.search(SearchQuery(limit=50, after=first.next_after))
    assert deep.hits[0].message_id == "m-2949"
    older = await store.search(SearchQuery(limit=50, until_ms=T + 1_000))
    assert older.hits[0].message_id == "m-999"
    assert calls[0] <= 3 * 51, calls[0]


async def test_an_export_examines_each_message_once(monkeypatch) -> None:
    """Page after page of every message: n checks in all, not n^2 / page."""
    store = MemoryStore()
    fill(store, 3_000)
    calls = search_counter(monkeypatch)
    walked = [hit.message_id async for hits in pages(store.search, SearchQuery()) for hit in hits]
    assert walked == [f"m-{n}" for n in range(2_999, -1, -1)]
    assert calls[0] <= 3_000 + 3_000 // MAX_LIMIT, calls[0]


async def test_a_large_index_is_walked_by_send_time_within_the_budget(monkeypatch) -> None:
    """A busy recipient's index (more ids than the scan budget) is read from the
    cursor by send time: a page examines at most the budget."""
    store = MemoryStore(scan_budget=1_000)
    for first in range(0, 3_000, 500):
        records = [ses.send(f"m-{n}", ["archive@x.com"], T + n) for n in range(first, first + 500)]
        store.merge_now(encode_batch(list(events_of(records)), NOW_MS))
    calls = search_counter(monkeypatch)
    page = await store.search(SearchQuery(recipient="archive@x.com", limit=20))
    assert [hit.message_id for hit in page.hits[:2]] == ["m-2999", "m-2998"]
    assert calls[0] <= 21
    # Nothing matches: the page stops at the budget with a cursor, and resumes.
    calls[0] = 0
    empty = await store.search(SearchQuery(recipient="archive@x.com", configuration_set="none"))
    assert empty.hits == [] and empty.next_after is not None
    assert calls[0] == 1_000


async def test_a_page_stops_at_the_scan_budget_and_resumes() -> None:
    """The Redis store's test of the same name, on the memory store."""
    store = MemoryStore(scan_budget=5)
    records = [ses.send(f"m-{n}", [f"u{n}@x.com"], T + n) for n in range(12)]
    records += [ses.delivery("m-0", ["u0@x.com"], T + 99, T)]
    store.merge_now(encode_batch(list(events_of(records)), NOW_MS))
    got, after = [], None
    while True:
        page = await store.search(SearchQuery(status="delivered", after=after))
        got.append([hit.message_id for hit in page.hits])
        if page.next_after is None:
            break
        after = page.next_after
    assert got == [[], [], ["m-0"]]


async def test_a_long_search_lets_ingestion_run_between_slices() -> None:
    store = MemoryStore()
    fill(store, 4_000)
    order: list[str] = []

    async def ingest() -> None:
        order.append("ingested")

    async def searching() -> None:
        await store.search(SearchQuery(configuration_set="none"))  # examines 4,000
        order.append("searched")

    await asyncio.wait_for(asyncio.gather(searching(), ingest()), 10)
    assert order == ["ingested", "searched"]


def change(n: int, blob: bytes = b"x" * 400) -> Change:
    return Change(f"m-{n}", f"u{n}@x.com", -1, 0, T, -1, blob, blob, "other")


async def test_the_outbox_counts_in_the_store_bytes_and_loses_counted_past_its_share() -> None:
    outbox = MemoryOutbox()
    store = MemoryStore(max_bytes=800_000, outbox=outbox)
    await outbox.prepare(["sub"])
    for n in range(1_000):
        outbox.append([change(n)])
    assert outbox.bytes <= 100_000  # an eighth of the store's bound
    assert store.bytes == outbox.bytes  # no records yet: the outbox is all it holds
    assert outbox.lost == 1_000 - len(outbox) > 0
    read = await outbox.read("sub", 5, 0)
    # The oldest went: what is read first is the oldest kept.
    assert read[0].changes[0].message_id == f"m-{1_000 - len(outbox)}"


async def test_acknowledged_outbox_entries_are_let_go() -> None:
    from service.forward.outbox import entry_weight

    outbox = MemoryOutbox()
    await outbox.prepare(["a", "b"])
    for n in range(10):
        outbox.append([change(n)])
    first = await outbox.read("a", 4, 0)
    await outbox.ack("a", [entry.id for entry in first])
    assert len(outbox) == 10  # b has read none
    await outbox.ack("b", [entry.id for entry in await outbox.read("b", 6, 0)])
    assert len(outbox) == 6 and outbox.bytes == 6 * entry_weight([change(0)])
    assert [e.changes[0].message_id for e in await outbox.read("a", 3, 0)] == ["m-4", "m-5", "m-6"]
    backlog = await outbox.backlog("b")
    assert backlog.entries == 4 and backlog.oldest_ms is not None
    assert outbox.lost == 0


@pytest.mark.parametrize("appended", [0, 3])
async def test_a_new_subscription_starts_at_the_end(appended: int) -> None:
    outbox = MemoryOutbox()
    for n in range(appended):
        outbox.append([change(n)])
    await outbox.prepare(["late"])
    assert await outbox.read("late", 10, 0) == []
    outbox.append([change(99)])
    assert [e.changes[0].message_id for e in await outbox.read("late", 10, 0)] == ["m-99"]
