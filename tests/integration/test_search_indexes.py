"""Search through the Redis and memory indexes, held to a brute-force scan."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import asyncio as aioredis

from service import search
from service.codec import encode_batch
from service.search import Position, SearchQuery
from service.stores import MemoryStore, RedisStore, Store
from tests.support import ses
from tests.support.fold import SEEN_MS, events_of, fold
from tests.support.mailbox import mailbox, queries
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

T = ses.SENT_AT
_examples = itertools.count()


async def merge_all(store: Store, batches) -> None:
    for batch in batches:
        await store.merge(encode_batch(list(events_of(batch)), SEEN_MS))


def brute_force(batches, **query) -> list[tuple[str, str]]:
    """The answer by definition: every message, filtered, in (send time, handle) order."""
    records, _ = fold(batches)
    sent_at = {e.mail.message_id: e.mail.sent_at for b in batches for e in events_of(b)}
    wanted = SearchQuery(**query)
    hits = [
        (Position(sent_at[m], search.message_handle(m)), m, record)
        for m, record in records.items()
        if wanted.matches(record) and wanted.admits(Position(sent_at[m], search.message_handle(m)))
    ]
    return [(m, record.status()) for _, m, record in sorted(hits, reverse=True, key=lambda h: h[0])]


async def every_page(store: Store, **query) -> list[tuple[str, str]]:
    """All hits for a query, page after page, as (message id, status) pairs."""
    found: list[tuple[str, str]] = []
    after = None
    for _ in range(200):
        page = await store.search(SearchQuery(after=after, **query))
        assert len(page.hits) <= query.get("limit", search.DEFAULT_LIMIT)
        found += [(hit.message_id, hit.record.status()) for hit in page.hits]
        if page.next_after is None:
            return found
        after = page.next_after
    raise AssertionError("pagination did not end")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=mailbox(), wanted=st.lists(queries(), min_size=1, max_size=6))
def test_indexes_find_what_a_brute_force_scan_finds(
    redis_server: RedisServer, batches, wanted
) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        redis_store = RedisStore(client, prefix=f"search{next(_examples)}:", call_budget=600)
        memory_store = MemoryStore()
        await merge_all(redis_store, batches)
        await merge_all(memory_store, batches)
        for query in wanted:
            expected = brute_force(batches, **query)
            assert await every_page(memory_store, **query) == expected, query
            assert await every_page(redis_store, **query) == expected, query
            positions = [h.position for h in (await memory_store.search(SearchQuery())).hits]
            assert positions == sorted(positions, reverse=True)
        await client.aclose()

    asyncio.run(run())


async def test_a_message_leaves_the_pending_and_status_indexes_as_it_moves(
    make_store, redis_client
) -> None:
    store = make_store()
    await store.merge(encode_batch(list(events_of([ses.send("m-1", ["a@x.com"])])), SEEN_MS))
    prefix = "t"  # make_store's prefix starts so; read it back from the store's key
    record_key = store.key("m-1")
    prefix = record_key[: record_key.index("m:{")]
    handle = search.message_handle("m-1")
    assert await redis_client.zscore(f"{prefix}x:pending", handle) == T
    await store.merge(
        encode_batch(list(events_of([ses.bounce("m-1", ["a@x.com"], T + 5)])), SEEN_MS)
    )
    assert await redis_client.zscore(f"{prefix}x:pending", handle) is None
    assert await redis_client.zscore(f"{prefix}x:s:bounced", handle) == T
    await store.merge(
        encode_batch(list(events_of([ses.complaint("m-1", ["a@x.com"], T + 9)])), SEEN_MS)
    )
    assert await redis_client.zscore(f"{prefix}x:s:bounced", handle) is None
    assert await redis_client.zscore(f"{prefix}x:s:complained", handle) == T
    await store.close()


async def test_index_entries_of_expired_records_are_dropped(make_store, redis_client) -> None:
    store = make_store()
    for n in range(3):
        records = [ses.send(f"m-{n}", ["a@x.com"], T + n)]
        await store.merge(encode_batch(list(events_of(records)), SEEN_MS))
    await redis_client.delete(store.key("m-0"), store.key("m-1"))  # as if expired
    page = await store.search(SearchQuery(recipient="a@x.com"))
    assert [hit.message_id for hit in page.hits] == ["m-2"]
    prefix = store.key("m-2")[: store.key("m-2").index("m:{")]
    # The reader dropped what it found dead; the pending index too, on its next add.
    assert await redis_client.zcard(f"{prefix}r:a@x.com") == 1
    await store.merge(encode_batch(list(events_of([ses.send("m-3", ["b@x.com"], T)])), SEEN_MS))
    pending = await redis_client.zrange(f"{prefix}x:pending", 0, -1)
    assert search.message_handle("m-0") not in {h.decode() for h in pending}
    await store.close()


async def test_a_page_stops_at_the_scan_budget_and_resumes(make_store) -> None:
    store = make_store(scan_budget=5)
    records = [ses.send(f"m-{n}", [f"u{n}@x.com"], T + n) for n in range(12)]
    records += [ses.delivery("m-0", ["u0@x.com"], T + 99)]
    await store.merge(encode_batch(list(events_of(records)), SEEN_MS))
    pages = []
    after = None
    while True:
        page = await store.search(SearchQuery(status="delivered", after=after))
        pages.append([hit.message_id for hit in page.hits])
        if page.next_after is None:
            break
        after = page.next_after
    if store.cluster:
        # The five are shared between the slot groups searched at once (one each): the
        # walk takes more pages, never misses the match nor shows it twice.
        assert [hit for page in pages for hit in page] == ["m-0"]
        assert len(pages) <= 13
    else:
        # Twelve candidates, five examined per page: two empty pages, then the match.
        assert pages == [[], [], ["m-0"]]
    await store.close()


async def test_delivered_message_footprint_with_indexes(make_store, redis_client) -> None:
    """Record plus its index entries, for a delivered one-recipient message: <= 800 bytes.

    The send-time bucket is shared by every message sent in that minute, so its
    share is measured over a full bucket's worth of messages.
    """
    store = make_store()
    messages = 200
    records = []
    for n in range(messages):
        address = f"someone{n}@gmail.com"
        records += [
            ses.send(f"m-{n:04d}", [address], T + n),
            ses.delivery(f"m-{n:04d}", [address], T + n + 900),
        ]
    await store.merge(encode_batch(list(events_of(records)), SEEN_MS))
    prefix = store.key("m-0000")[: store.key("m-0000").index("m:{")]
    total = 0
    async for key in redis_client.scan_iter(match=f"{prefix}*"):
        total += await redis_client.memory_usage(key, samples=0)
    assert total / messages <= 800, total / messages
    await store.close()
