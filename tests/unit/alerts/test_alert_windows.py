"""Incremental window sums agree with reading the whole window every time, late
events landing in old buckets included."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from service.alerts.windows import WindowReader
from service.codec import encode_batch
from service.stats import Counting, window_buckets
from service.stores import MemoryStore
from tests.support import ses
from tests.support.fold import events_of

WINDOWS = (60, 300)
START = 1_800_000_000_000


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 3), st.sampled_from([0, 0, 25, 290, 4000])),
        min_size=1,
        max_size=40,
    )
)
def test_window_sums_match_a_full_read(steps: list[tuple[int, int, int]]) -> None:
    async def run() -> None:
        store = MemoryStore()
        reader = WindowReader(store, WINDOWS)
        ids = itertools.count()
        now = START
        for advance_s, sends, age_s in steps:
            now += advance_s * 1000
            if sends:
                # Sends made age_s ago count in their own (older) bucket.
                records = [
                    ses.send(f"m{next(ids)}", [f"r@d{n}.com"], sent_at=now - age_s * 1000)
                    for n in range(sends)
                ]
                await store.merge(encode_batch(list(events_of(records)), now), None, Counting(now))
            got = await reader.read(now)
            for window in WINDOWS:
                expected = await store.read_stats(*window_buckets(now, window))
                assert got[window] == +expected, (window, now)
        # Only what changed is read again: not every bucket at every evaluation.
        assert reader.bucket_reads <= sum(1 for _, sends, _ in steps if sends)

    asyncio.run(run())
