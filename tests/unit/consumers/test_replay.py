import gzip
from pathlib import Path

import orjson
import pytest

from consumers.replay import chunks, input_files, read, replay
from service.parser import parse_payload
from service.pipeline import Pipeline
from service.stores import MemoryStore
from tests.support import ses
from tests.support.kafka import simulated_records


@pytest.mark.parametrize("separator", [b"\n", b""])
def test_chunks_never_cut_a_record(separator: bytes) -> None:
    records = simulated_records(200, seed=2)
    data = separator.join(orjson.dumps(r) for r in records)
    pieces = list(chunks(data, size=10_000))
    assert len(pieces) > 5
    assert all(len(p) <= 10_000 for p in pieces)
    parsed = [parse_payload(p) for p in pieces]
    assert sum(len(r.events) for r in parsed) == len(records)
    assert not any(r.rejected for r in parsed)


def test_a_record_longer_than_a_chunk_is_kept_whole() -> None:
    long_record = ses.dumps(ses.send("r-long", ["a@x.com"]))
    data = long_record + b"\n" + long_record
    assert list(chunks(data, size=100)) == [long_record, b"\n" + long_record]


def test_files_dirs_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.json").write_bytes(ses.dumps(ses.send("r-2", ["a@x.com"])))
    (tmp_path / "a.ndjson.gz").write_bytes(gzip.compress(ses.dumps(ses.send("r-1", ["a@x.com"]))))
    (tmp_path / "firehose-object").write_bytes(gzip.compress(ses.dumps(ses.send("r-3", []))))
    (tmp_path / ".hidden").write_bytes(b"junk")
    files = list(input_files([tmp_path]))
    assert [f.name for f in files] == ["a.ndjson.gz", "2.json", "firehose-object"]
    assert all(read(f).startswith(b"{") for f in files)  # gzip found by content


async def test_replay_feeds_the_pipeline_and_reports(tmp_path: Path) -> None:
    (tmp_path / "events.json").write_bytes(
        b"\n".join(
            [
                ses.dumps(ses.send("r-4", ["a@x.com"])),
                b"{oops",
                ses.dumps(ses.delivery("r-4", ["a@x.com"], ses.SENT_AT + 5)),
            ]
        )
    )
    store = MemoryStore()
    report = await replay([tmp_path], Pipeline(store))
    assert (report.files, report.events, report.counters.rejected) == (1, 2, 1)
    assert report.counters.reasons == {"invalid_json": 1}
    assert (await store.get("r-4")).status() == "delivered"

    dry_store = MemoryStore()
    dry = await replay([tmp_path], Pipeline(dry_store), dry_run=True)
    assert dry.events == 2 and len(dry_store) == 0


async def test_replayed_history_stays_out_of_the_live_statistics(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_bytes(ses.dumps(ses.bounce("r-5", ["a@x.com"], ses.SENT_AT + 5)))
    store = MemoryStore()
    await replay([tmp_path], Pipeline(store, live_stats=False))
    assert (await store.get("r-5")).status() == "bounced"
    assert await store.read_stats(0, 10**10) == {}
    live = MemoryStore()
    near = ses.SENT_AT + 60_000  # a clock near the events: older ones are not live
    await Pipeline(live, clock_ms=lambda: near).ingest((tmp_path / "old.json").read_bytes(), "http")
    assert (await live.read_stats(0, 10**10))["c:bounced"] == 1


async def test_rejections_are_located_by_file_and_line(tmp_path: Path) -> None:
    lines = [ses.dumps(ses.send(f"loc-{n}", ["a@x.com"])) for n in range(5)]
    lines[2] = b'{"eventType": "Zap", "mail": {"messageId": "m"}}'
    (tmp_path / "events.ndjson").write_bytes(
        b"\n".join(lines[:2]) + b"\n\n" + b"\n".join(lines[2:])
    )
    pretty = b"\n".join(
        orjson.dumps(record, option=orjson.OPT_INDENT_2)
        for record in (ses.send("p-1", ["a@x.com"]), {"eventType": "Zap"})
    )
    (tmp_path / "pretty.json").write_bytes(pretty)
    report = await replay([tmp_path], Pipeline(MemoryStore()), dry_run=True)
    located = {(r.path.name, r.line, r.record) for r in report.rejections}
    # pretty.json: the line its rejected (second) object begins on.
    assert located == {("events.ndjson", 4, 3), ("pretty.json", 33, 2)}
    assert report.rejections[0].where().endswith("events.ndjson:4")


DAY_MS = 86_400_000


def backfill_file(tmp_path: Path, now: int) -> Path:
    """Two messages of 30 days ago (past the 14-day retention, inside the history)
    and one of an hour ago, spread over two files the way archives split them."""
    old = now - 30 * DAY_MS
    (tmp_path / "a.ndjson").write_bytes(
        ses.dumps(
            ses.send("old-1", ["a@gmail.com"], old),
            ses.send("old-2", ["b@hotmail.com"], old),
            ses.send("recent", ["c@x.com"], now - 3_600_000),
        )
    )
    (tmp_path / "b.ndjson").write_bytes(
        ses.dumps(
            ses.delivery("old-1", ["a@gmail.com"], old + 900, old),
            ses.bounce("old-2", ["b@hotmail.com"], old + 2_000, sent_at=old),
        )
    )
    return tmp_path


async def test_a_backfill_fills_history_once_and_keeps_no_old_records(tmp_path: Path) -> None:
    """#14: old events count in their own day; messages past the retention leave
    no lasting record; replaying the same files again counts nothing twice."""
    now = ses.SENT_AT + 400 * DAY_MS
    clock = {"s": 0.0}
    store = MemoryStore(clock=lambda: clock["s"])
    pipeline = Pipeline(store, live_stats=False, clock_ms=lambda: now)
    report = await replay([backfill_file(tmp_path, now)], pipeline)
    assert (report.files, report.events, report.skipped) == (2, 5, [])
    old_day = (now - 30 * DAY_MS) // DAY_MS * 86_400
    [day] = await store.read_rollups("day", [old_day])
    assert (day["c:sent"], day["c:delivered"], day["c:bounced"]) == (2, 1, 1)
    assert day["g:provider=microsoft|c:bounced"] == 1
    assert await store.read_stats(0, 10**10) == {}  # never the live windows
    # Held while the replay may still bring their other events, then gone.
    assert (await store.get("old-1")).status() == "delivered"
    clock["s"] += 301
    assert await store.get("old-1") is None and await store.get("old-2") is None
    assert (await store.get("recent")).status() == "sent"  # inside the retention: kept

    again = await replay([tmp_path], pipeline)
    assert again.files == 0 and {p.name for p in again.skipped} == {"a.ndjson", "b.ndjson"}
    assert await store.read_rollups("day", [old_day]) == [day]
    # Forced, the held records are gone, so old messages count again: say so.
    forced = await replay([tmp_path], pipeline, force=True)
    assert forced.files == 2
    [twice] = await store.read_rollups("day", [old_day])
    assert twice["c:sent"] == 4


async def test_a_dry_run_marks_nothing_replayed(tmp_path: Path) -> None:
    store = MemoryStore()
    now = ses.SENT_AT + 400 * DAY_MS
    pipeline = Pipeline(store, live_stats=False, clock_ms=lambda: now)
    await replay([backfill_file(tmp_path, now)], pipeline, dry_run=True)
    assert (await replay([tmp_path], pipeline)).files == 2
