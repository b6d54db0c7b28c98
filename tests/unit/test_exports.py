"""Exports: formula-safe CSV cells, pages walked to the end, a bounded number at once."""

from __future__ import annotations

import gc

import pytest
from fastapi import HTTPException

from api.exports import ExportSlots
from service.codec import encode_batch
from service.export import csv_lines, safe_cell
from service.search import MAX_LIMIT, SearchQuery, pages
from service.stores import MemoryStore
from service.view import ViewOptions
from tests.support import ses
from tests.support.fold import events_of

OPTIONS = ViewOptions(now_ms=ses.SENT_AT, overdue_after_ms=900_000)


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        (None, ""),
        (12, "12"),
    ],
)
def test_cells_a_spreadsheet_would_run_are_defused(cell, written) -> None:
    assert safe_cell(cell) == written


def test_csv_quotes_what_needs_quoting() -> None:
    assert csv_lines([["a,b", 'say "hi"', "x\ny"]]) == b'"a,b","say ""hi""","x\ny"\r\n'


async def store_with(count: int) -> MemoryStore:
    store = MemoryStore()
    records = [ses.send(f"m{n:05d}", [f"a{n}@x.com"], ses.SENT_AT + n) for n in range(count)]
    await store.merge(encode_batch(list(events_of(records)), ses.SENT_AT))
    return store


async def test_an_export_walks_every_page_one_at_a_time() -> None:
    store = await store_with(MAX_LIMIT * 2 + 7)
    sizes = [len(hits) async for hits in pages(store.search, SearchQuery(limit=3))]
    assert sizes == [MAX_LIMIT, MAX_LIMIT, 7]


async def test_a_few_exports_run_at_once_and_each_frees_its_slot() -> None:
    store = await store_with(3)
    slots = ExportSlots(limit=1)
    first = slots.stream(store, SearchQuery(), "ndjson", OPTIONS)
    with pytest.raises(HTTPException) as busy:
        slots.stream(store, SearchQuery(), "csv", OPTIONS)
    assert busy.value.status_code == 429
    body = b"".join([chunk async for chunk in first.body_iterator])
    assert body.count(b"\n") == 3 and slots.running == 0
    # A response dropped before its body was read frees its slot too.
    dropped = slots.stream(store, SearchQuery(), "csv", OPTIONS)
    assert slots.running == 1
    del dropped
    gc.collect()
    assert slots.running == 0
