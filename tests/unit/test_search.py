"""Search semantics on the memory store (the reference the Redis indexes are held to)."""

from __future__ import annotations

import pytest

from service import search
from service.codec import encode_batch
from service.search import Position, SearchQuery
from service.stores import MemoryStore
from tests.support import ses
from tests.support.fold import events_of

T = ses.SENT_AT


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def merge(store: MemoryStore, *records) -> None:
    store.merge_now(encode_batch(list(events_of(records)), T + 10_000))


async def pages(store: MemoryStore, **query) -> list[list[str]]:
    out, after = [], None
    while True:
        page = await store.search(SearchQuery(after=after, **query))
        out.append([hit.message_id for hit in page.hits])
        if page.next_after is None:
            return out
        after = page.next_after


async def test_messages_sent_in_one_millisecond_are_paged_exactly_once() -> None:
    store = MemoryStore()
    ids = [f"m-{n}" for n in range(7)]
    merge(store, *(ses.send(m, ["a@x.com"], T) for m in ids), ses.send("late", ["a@x.com"], T + 1))
    got = await pages(store, recipient="a@x.com", limit=3)
    assert [len(p) for p in got] == [3, 3, 2]
    flat = [m for page in got for m in page]
    assert flat[0] == "late"
    # Ties go by handle, descending: a total order, so no message is skipped or repeated.
    assert flat[1:] == sorted(ids, key=search.message_handle, reverse=True)


async def test_recipient_is_matched_as_the_parser_stores_it() -> None:
    store = MemoryStore()
    merge(store, ses.send("m-1", ["Jane.Doe@Example.com"]))
    for spelling in (
        "jane.doe@example.com",
        " JANE.DOE@EXAMPLE.COM ",
        "Jane <jane.doe@example.com>",
    ):
        assert await pages(store, recipient=spelling) == [["m-1"]]
    assert await pages(store, recipient="jane@example.com") == [[]]


async def test_status_filter_is_the_recipients_with_a_recipient_else_the_messages() -> None:
    store = MemoryStore()
    merge(
        store,
        ses.send("m-1", ["a@x.com", "b@x.com"]),
        ses.bounce("m-1", ["b@x.com"], T + 5),
        ses.delivery("m-1", ["a@x.com"], T + 5),
    )
    assert await pages(store, status="bounced") == [["m-1"]]
    assert await pages(store, status="delivered") == [[]]
    assert await pages(store, recipient="a@x.com", status="delivered") == [["m-1"]]
    assert await pages(store, recipient="a@x.com", status="bounced") == [[]]


async def test_time_range_is_since_inclusive_until_exclusive() -> None:
    store = MemoryStore()
    merge(store, *(ses.send(f"m-{n}", ["a@x.com"], T + n) for n in range(4)))
    assert await pages(store, since_ms=T + 1, until_ms=T + 3) == [["m-2", "m-1"]]


async def test_expired_messages_are_not_found() -> None:
    clock = FakeClock()
    store = MemoryStore(retention_s=10, clock=clock)
    merge(store, ses.send("old", ["a@x.com"], T))
    clock.now += 11
    merge(store, ses.send("new", ["a@x.com"], T + 1))
    assert await pages(store, recipient="a@x.com") == [["new"]]


def test_cursor_round_trip_and_rejection() -> None:
    position = Position(T, search.message_handle("m-1"))
    assert search.decode_cursor(search.encode_cursor(position)) == position
    for bad in ("", "!!!", "MTIz", search.encode_cursor(Position(T, "short"))):
        with pytest.raises(search.CursorError):
            search.decode_cursor(bad)


def test_query_rejects_unknown_status_and_limits() -> None:
    with pytest.raises(ValueError):
        SearchQuery(status="lost")
    with pytest.raises(ValueError):
        SearchQuery(limit=0)
    with pytest.raises(ValueError):
        SearchQuery(limit=search.MAX_LIMIT + 1)


async def test_waiting_keeps_messages_with_a_recipient_still_pending() -> None:
    store = MemoryStore()
    merge(
        store,
        ses.send("half", ["a@x.com", "b@x.com"], T),
        ses.delivery("half", ["a@x.com"], T + 5, T),
        ses.send("done", ["a@x.com"], T + 1),
        ses.delivery("done", ["a@x.com"], T + 6, T + 1),
        ses.send("late", ["a@x.com"], T + 2),
    )
    # "half" is delivered as a message, yet b@x.com still waits: it is overdue too.
    assert await pages(store, waiting=True) == [["late", "half"]]
    assert await pages(store, waiting=True, until_ms=T + 1) == [["half"]]
