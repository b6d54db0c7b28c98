"""#26 point 4: history and suppression reads do work in proportion to the answer,
not to the range or the listing (counted at the store, not timed)."""

from __future__ import annotations

import time

import pytest

from service import history, stats
from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import Counting
from service.stores.redis import migrations
from tests.support import ses
from tests.support.fold import SEEN_MS, events_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = ses.SENT_AT
DAY = stats.day_of(T)
DIMENSIONS = Dimensions(tags=("team",))


def writes_for(records, seen_ms: int = SEEN_MS):
    return encode_batch(list(events_of(records)), seen_ms, DIMENSIONS)


def year_of_days(last: int) -> list[int]:
    return [last - n * stats.DAY_S for n in range(399, -1, -1)]


async def merged_day(make_store):
    store = make_store()
    records = [
        ses.send("m-h", ["a@x.com", "b@gmail.com"]),
        ses.delivery("m-h", ["a@x.com"], T + 900),
    ]
    await store.merge(writes_for(records), counting=Counting(SEEN_MS))
    return store


async def test_history_reads_only_the_periods_a_rollup_was_written_for(make_store) -> None:
    store = await merged_day(make_store)
    groups = len(store.slot_groups)
    starts = year_of_days(DAY + 10 * stats.DAY_S)
    read = await store.read_rollups("day", starts, history.Fields(None))
    # One index read a group, then the one day written: one small read a group, not
    # 400, and no scan of the groups.
    assert store.rollup_reads["index"] == groups
    assert store.rollup_reads["overall"] == groups
    assert store.rollup_reads["scans"] == 0
    [whole] = await store.read_rollups("day", [DAY])
    got = dict(zip(starts, read, strict=True))
    assert got[DAY] == {k: n for k, n in whole.items() if k[:2] in ("c:", "l:", "y:")}
    assert got[DAY]["c:sent"] == 2 and got[DAY]["c:delivered"] == 1
    assert all(not counters for start, counters in got.items() if start != DAY)
    await store.close()


async def test_a_closed_period_is_read_once_then_from_the_process(make_store) -> None:
    store = await merged_day(make_store)
    first = await store.read_rollups("day", [DAY], history.Fields(None))
    reads = store.rollup_reads["overall"]
    again = await store.read_rollups("day", [DAY], history.Fields(None))
    assert again == first and store.rollup_reads["overall"] == reads
    assert store.rollup_reads["cached"] == 1
    # The cache keeps each selection apart: a breakdown reads its own fields.
    await store.read_rollups("day", [DAY], history.Fields("configuration_set"))
    assert store.rollup_reads["scans"] == len(store.slot_groups)
    await store.close()


async def test_history_reads_the_overall_figures_and_only_the_groups_asked_for(make_store) -> None:
    store = await merged_day(make_store)
    [overall] = await store.read_rollups("day", [DAY], history.Fields(None))
    [by_set] = await store.read_rollups("day", [DAY], history.Fields("configuration_set"))
    assert not any(field.startswith("g:") for field in overall)
    groups = {field.split("=")[0] for field in by_set if field.startswith("g:")}
    assert groups == {"g:configuration_set"}
    assert by_set["g:configuration_set=transactional|c:delivered"] == 1
    assert {k: n for k, n in by_set.items() if not k.startswith("g:")} == overall
    await store.close()


async def test_the_rollup_index_and_overall_figures_are_rebuilt_by_the_format_2_migration(
    make_store,
) -> None:
    store = await merged_day(make_store)
    today = int(time.time()) // stats.DAY_S * stats.DAY_S
    recent = await make_recent_rollup(store, today)
    for group in store.slot_groups:
        await store.keyspace.client.delete(
            group.keys.rollup_index("day"),
            group.keys.rollup_index("hour"),
            group.keys.rollup_overall("day", today),
        )
    fresh = make_store()
    [nothing] = await fresh.read_rollups("day", [today], history.Fields(None))
    assert not nothing  # unlisted: not read
    await migrations._index_rollups(store)
    await migrations._index_rollups(store)  # idempotent
    [found] = await fresh.read_rollups("day", [today], history.Fields(None))
    assert found == recent
    # The copy expires with its rollup.
    key = store.slot_group("m-now").keys
    assert (
        0
        < await store.keyspace.client.ttl(key.rollup_overall("day", today))
        <= await store.keyspace.client.ttl(key.rollup("day", today))
    )
    await store.close()
    await fresh.close()


async def make_recent_rollup(store, today: int):
    now_ms = int(time.time() * 1000)
    at = max(today * 1000, now_ms - 60_000)
    records = [ses.send("m-now", ["c@x.com"], sent_at=at)]
    await store.merge(writes_for(records, now_ms), counting=Counting(now_ms))
    [rollup] = await store.read_rollups("day", [today], history.Fields(None))
    assert rollup["c:sent"] == 1
    return rollup


def suppressing(count: int, reason: str, at: int, name: str, apart_ms: int = 0) -> list[dict]:
    """``count`` addresses suppressed for ``reason``, the n-th at ``at - n * apart_ms``."""
    records = []
    for n in range(count):
        at_n = at - n * apart_ms
        message_id, address = f"m-{name}-{n}", [f"{name}{n}@x.com"]
        records.append(ses.send(message_id, address, sent_at=at_n - 1_000))
        if reason == "complaint":
            records.append(ses.complaint(message_id, address, at_n, sent_at=at_n - 1_000))
        else:
            records.append(ses.bounce(message_id, address, at_n, sent_at=at_n - 1_000))
    return records


async def test_a_reason_pages_from_its_own_listing_resuming_after_the_last_row(
    make_store,
) -> None:
    """1,200 complaints newer than 3 bounces: the bounce page reads the bounce listing
    (3 rows), not every complaint first; and paging every complaint (100 of them at
    one instant: ties) lists each once, each page reading about a page a group."""
    store = make_store()
    now_ms = int(time.time() * 1000)
    records = suppressing(3, "bounce", now_ms - 600_000, "b")
    records += suppressing(1_100, "complaint", now_ms - 100_000, "c", apart_ms=50)
    records += suppressing(100, "complaint", now_ms - 70_000, "d")
    await store.merge(writes_for(records, now_ms))
    page, cursor = await store.suppressions("bounce", None, 100, None)
    assert sorted(e.address for e in page) == ["b0@x.com", "b1@x.com", "b2@x.com"]
    assert cursor is None
    assert store.suppression_rows_read <= 3
    store.suppression_rows_read = 0
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page, after = await store.suppressions("complaint", None, 50, after)
        pages += 1
        seen += [entry.address for entry in page]
        if after is None:
            break
    assert len(seen) == len(set(seen)) == 1_200
    assert all(address[0] in "cd" for address in seen)
    # Each page reads at most its 50 rows and one more in each group, wherever it
    # starts, and the ties again where it starts among them (resuming by offset
    # read ~36,000 rows a slot group here).
    assert pages <= 2 * 1_200 // 50
    assert store.suppression_rows_read <= pages * (len(store.slot_groups) * 51 + 100)
    await store.close()


async def test_the_reason_listings_are_built_by_the_format_2_migration(make_store) -> None:
    store = make_store()
    now_ms = int(time.time() * 1000)
    records = suppressing(4, "bounce", now_ms - 600_000, "b")
    records += suppressing(5, "complaint", now_ms - 300_000, "c")
    await store.merge(writes_for(records, now_ms))
    for group in store.slot_groups:
        for reason in ("bounce", "complaint"):
            await store.keyspace.client.delete(group.keys.suppressions_by_reason(reason))
    assert (await store.suppressions("bounce", None, 100, None))[0] == []
    await migrations._list_by_reason(store)
    await migrations._list_by_reason(store)  # idempotent
    bounces = (await store.suppressions("bounce", None, 100, None))[0]
    complaints = (await store.suppressions("complaint", None, 100, None))[0]
    assert sorted(e.address for e in bounces) == [f"b{n}@x.com" for n in range(4)]
    assert sorted(e.address for e in complaints) == [f"c{n}@x.com" for n in range(5)]
    await store.close()


async def test_a_removed_suppression_leaves_its_reason_listing(make_store) -> None:
    store = make_store()
    now_ms = int(time.time() * 1000)
    await store.merge(writes_for(suppressing(2, "bounce", now_ms - 1_000, "b"), now_ms))
    assert await store.remove_suppression("b0@x.com")
    assert not await store.remove_suppression("b0@x.com")
    store.suppression_rows_read = 0
    page, _ = await store.suppressions("bounce", None, 100, None)
    assert [e.address for e in page] == ["b1@x.com"]
    assert store.suppression_rows_read == 1
    await store.close()


FIELDS = [
    "c:sent",
    "l:send_to_delivery:12",
    "y:General",
    "a:domain=x.com",
    "n:domain",
    "g:domain=x.com|c:sent",
    "g:tag:te*am=a|c:sent",
    "g:tag:te*amX=a|c:sent",
    "g:configuration_set=a|c:sent",
]


@pytest.mark.parametrize("by", [None, "domain", "tag:te*am", "tag:[x]?\\^"])
async def test_redis_matches_the_fields_python_would_select(redis_client, by) -> None:
    """The HSCAN patterns select the groups Fields.wants does, whatever a tag name
    holds."""
    fields = history.Fields(by)
    names = [*FIELDS, f"g:{by}=v|c:sent"]
    key = f"globs:{{{by}}}"
    await redis_client.hset(key, mapping={name: 1 for name in names})
    matched: set[str] = set()
    for pattern in fields.group_patterns():
        _, found = await redis_client.hscan(key, 0, match=pattern, count=1_000)
        matched.update(field.decode() for field in found)
    await redis_client.delete(key)
    assert matched == {name for name in names if fields.wants(name) and name[:2] == "g:"}
    assert "a:domain=x.com" not in matched
    assert ("g:domain=x.com|c:sent" in matched) == (by == "domain")
