"""#26 point 4: slow readers cannot hold the export slots (a deadline, a minimum
read rate, and one slot per client)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException

from api.exports import ExportSlots, Pace
from service.codec import encode_batch
from service.search import SearchQuery
from service.stores import MemoryStore
from service.view import ViewOptions
from tests.support import ses
from tests.support.fold import events_of

OPTIONS = ViewOptions(now_ms=ses.SENT_AT, overdue_after_ms=900_000)


async def store_with(count: int) -> MemoryStore:
    store = MemoryStore()
    records = [ses.send(f"m{n:05d}", [f"a{n}@x.com"], ses.SENT_AT + n) for n in range(count)]
    await store.merge(encode_batch(list(events_of(records)), ses.SENT_AT))
    return store


def test_the_pace_allows_the_grace_then_what_the_bytes_delivered_earn() -> None:
    pace = Pace(deadline_s=100, min_rate_bps=1_000, grace_s=10)
    assert pace.allowance_s(0, 0) == 10  # a slow start is forgiven for the grace
    assert pace.allowance_s(4, 500) == 6
    assert pace.allowance_s(12, 20_000) == 8  # 20 kB earn 20 s at 1 kB/s
    assert pace.allowance_s(30, 20_000) <= 0  # fell below the rate: cut
    assert pace.allowance_s(99, 10**9) == 1  # however fast, the deadline holds
    assert pace.allowance_s(100, 10**9) <= 0


async def test_one_export_per_client_and_a_few_in_all() -> None:
    store = await store_with(3)
    slots = ExportSlots(limit=2, per_client=1)
    mine = slots.stream(store, SearchQuery(), "csv", OPTIONS, client="10.0.0.1")
    with pytest.raises(HTTPException) as busy:
        slots.stream(store, SearchQuery(), "csv", OPTIONS, client="10.0.0.1")
    assert busy.value.status_code == 429 and "yours" in busy.value.detail
    theirs = slots.stream(store, SearchQuery(), "csv", OPTIONS, client="10.0.0.2")
    with pytest.raises(HTTPException):
        slots.stream(store, SearchQuery(), "csv", OPTIONS, client="10.0.0.3")
    assert slots.by_client == {"10.0.0.1": 1, "10.0.0.2": 1}
    for response in (mine, theirs):
        assert b"".join([chunk async for chunk in response.body_iterator]).count(b"\n") == 4
    assert slots.running == 0 and slots.by_client == {}
    again = slots.stream(store, SearchQuery(), "csv", OPTIONS, client="10.0.0.1")
    assert slots.running == 1
    del again


class Reader:
    """The ASGI ``send`` of a client: reads ``reads`` body messages, then stalls."""

    def __init__(self, reads: int) -> None:
        self.reads = reads
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            if self.reads == 0:
                await asyncio.Event().wait()  # never read again
            self.reads -= 1
        self.messages.append(message)


async def test_a_reader_that_stops_reading_is_cut_and_frees_its_slot() -> None:
    store = await store_with(50)
    slots = ExportSlots(pace=Pace(deadline_s=30, min_rate_bps=10**9, grace_s=0.05))
    response = slots.stream(store, SearchQuery(), "ndjson", OPTIONS, client="10.0.0.9")
    reader = Reader(reads=0)
    await asyncio.wait_for(response.stream_response(reader), 5)
    assert response.cut == "too slow"
    # Started, never finished: the server closes the connection.
    assert [m["type"] for m in reader.messages] == ["http.response.start"]
    assert slots.running == 0 and slots.by_client == {}


async def test_an_export_past_its_deadline_is_cut() -> None:
    store = await store_with(50)
    ticks = iter([0.0])  # the start, then 50 s later at every look
    slots = ExportSlots(pace=Pace(deadline_s=40, min_rate_bps=1, grace_s=100))
    response = slots.stream(store, SearchQuery(), "ndjson", OPTIONS, client="10.0.0.9")
    response.clock = lambda: next(ticks, 50.0)
    reader = Reader(reads=10**6)
    await asyncio.wait_for(response.stream_response(reader), 5)
    assert response.cut == "deadline"
    assert not any(m.get("more_body") is False for m in reader.messages)
    assert slots.running == 0


async def test_a_reader_at_pace_gets_the_whole_export() -> None:
    store = await store_with(50)
    slots = ExportSlots()
    response = slots.stream(store, SearchQuery(), "ndjson", OPTIONS, client="10.0.0.9")
    reader = Reader(reads=10**6)
    await asyncio.wait_for(response.stream_response(reader), 5)
    assert response.cut is None
    assert reader.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert b"".join(m.get("body", b"") for m in reader.messages).count(b"\n") == 50
    assert slots.running == 0
