"""Reads of the memory store at scale: suppression listing, search and export pages.

    python -m bench.bench_memory_store --messages 100000 200000

Fills a MemoryStore with ``n`` messages, each a Send and a Permanent bounce of its
own recipient (so ``n`` suppressions too), then times one call of each read, once,
on the event loop as the API would make it:

* a page of suppressions (100), first and from a cursor in the middle;
* a page of an unfiltered search (50), first and from a cursor in the middle;
* a page of ``status=bounced`` (every message is a candidate of that index);
* a whole export walk (``search.pages``) of ``--export-messages`` messages.

Figures for issue #23 point 9 (README, Memory store bounds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from service.clock import wall_clock_ms
from service.codec import encode_batch
from service.search import SearchQuery, pages
from service.stores import MemoryStore
from tests.support import ses
from tests.support.fold import events_of

BATCH = 500


def fill(store: MemoryStore, messages: int, start_ms: int) -> None:
    for first in range(0, messages, BATCH):
        records = []
        for n in range(first, min(first + BATCH, messages)):
            sent_at = start_ms + n
            address = [f"user{n}@example.com"]
            records += [
                ses.send(f"m-{n:07d}", address, sent_at),
                ses.bounce(f"m-{n:07d}", address, sent_at + 5, sent_at=sent_at),
            ]
        store.merge_now(encode_batch(list(events_of(records)), start_ms + messages + 10))


async def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = await call
    return (time.perf_counter() - start) * 1000, result


async def measure(messages: int, export_messages: int) -> dict[str, float]:
    start_ms = wall_clock_ms() - 86_400_000
    store = MemoryStore(max_messages=messages + 1, max_bytes=1 << 40)
    began = time.perf_counter()
    fill(store, messages, start_ms)
    figures = {"fill_s": round(time.perf_counter() - began, 1)}
    ms, _ = await timed(store.suppressions(None, None, 100, None))
    figures["suppressions_first_page_ms"] = ms
    middle = (start_ms + messages // 2, f"user{messages // 2}@example.com")
    ms, _ = await timed(store.suppressions(None, None, 100, middle))
    figures["suppressions_middle_page_ms"] = ms
    ms, found = await timed(store.search(SearchQuery()))
    figures["search_first_page_ms"] = ms
    walked = found
    for _ in range(messages // 2 // 500):
        walked = await store.search(SearchQuery(limit=500, after=walked.next_after))
    ms, _ = await timed(store.search(SearchQuery(after=walked.next_after)))
    figures["search_middle_page_ms"] = ms
    ms, _ = await timed(store.search(SearchQuery(status="bounced")))
    figures["search_bounced_first_page_ms"] = ms
    if export_messages:
        small = MemoryStore(max_messages=export_messages + 1, max_bytes=1 << 40)
        fill(small, export_messages, start_ms)

        async def walk() -> int:
            return sum([len(hits) async for hits in pages(small.search, SearchQuery())])

        ms, count = await timed(walk())
        assert count == export_messages, count
        figures[f"export_{export_messages}_ms"] = ms
    return {name: round(value, 1) for name, value in figures.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--export-messages", type=int, default=20_000)
    args = parser.parse_args()
    for messages in args.messages:
        sys.stdout.write(f"{messages} {await measure(messages, args.export_messages)}\n")


if __name__ == "__main__":
    asyncio.run(main())
