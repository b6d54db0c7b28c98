"""The data format migrates in place (service.stores.redis.migrations), from a dump of the
format before (tests/data/format1, written by that release) and on both layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import pytest

from service.stores.redis import layout
from service.stores.redis.store import FORMAT_VERSION, RedisStore
from tests.support.redis import RedisTarget
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DUMP = Path(__file__).parents[1] / "data" / "format1" / "dump.rdb"
KEEP = {"retention_s": 10**9, "suppression_days": 36_500}


@pytest.fixture
def format1(tmp_path: Path):
    shutil.copy(DUMP, tmp_path / "dump.rdb")
    server = RedisServer(tmp_path, extra_args=["--appendonly", "no", "--dbfilename", "dump.rdb"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_format_1_dump_is_migrated_in_place_at_start_up(format1: RedisServer) -> None:
    store = RedisStore.from_url(format1.url, **KEEP)
    client = store.keyspace.client
    try:
        assert await client.get("st:format") == b"1"
        assert await client.type("st:sup:idx") == b"zset"
        assert await store.claim_format() == 1
        assert int(await client.get("st:format")) == FORMAT_VERSION
        assert not await client.exists("st:sup:idx", "st:stats:rev")
        assert await client.zrange("st:sup-index", 0, -1) == [
            b"gone@example.com",
            b"angry@example.org",
        ]
        # (The dump's revisions expire an hour after it was written, with its live
        # buckets; their move is checked on a key without one, below.)
        listed, _ = await store.suppressions(None, None, 10, None)
        assert {(s.address, s.reason) for s in listed} == {
            ("gone@example.com", "bounce"),
            ("angry@example.org", "complaint"),
        }
        record = await store.get("format1-bounced")
        assert record is not None and record.recipient_status("gone@example.com") == "bounced"
        before = {key: await client.dump(key) for key in await client.keys("st:*")}
        # Again, as `ses-tracker migrate` does: nothing changes.
        assert await store.claim_format(rerun=True) == FORMAT_VERSION
        after = {key: await client.dump(key) for key in await client.keys("st:*")}
        assert after == before
    finally:
        await store.close()


async def test_a_format_1_suppression_of_the_address_idx_gets_its_listing_entry(
    redis_target: RedisTarget,
) -> None:
    """Format 1 wrote the suppression of "idx" over the listing's name (then failed on
    the listing): that string is a suppression, and the migration lists it."""
    await redis_target.flush()
    store = redis_target.store(**KEEP)
    client = store.keyspace.client
    entry = [None] * len(layout.SUPPRESSION)
    entry[layout.position(layout.SUPPRESSION, "reason")] = "bounce"
    entry[layout.position(layout.SUPPRESSION, "since_ms")] = 1_700_000_000_000
    entry[layout.position(layout.SUPPRESSION, "message_id")] = "m-idx"
    entry[layout.position(layout.SUPPRESSION, "subtype")] = "General"
    try:
        await client.set("st:format", 1)
        group = store.slot_groups[-1]
        await client.set(f"{group.keys.prefix}sup:idx", msgpack.packb(entry, use_bin_type=False))
        await client.hset(f"{group.keys.prefix}stats:rev", "s", 7)
        assert await store.claim_format() == 1
        listed, _ = await store.suppressions(None, None, 10, None)
        assert [(s.address, s.since_ms) for s in listed] == [("idx", 1_700_000_000_000)]
        assert await client.hget(group.keys.stats_revisions, "s") == b"7"
    finally:
        await store.close()


async def test_a_newer_format_is_refused_and_an_older_one_never_lowers_it(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store()
    try:
        await store.keyspace.client.set("st:format", FORMAT_VERSION + 1)
        with pytest.raises(Exception, match="data format"):
            await store.claim_format()
        assert int(await store.keyspace.client.get("st:format")) == FORMAT_VERSION + 1
    finally:
        await store.close()


def test_ses_tracker_migrate_brings_a_dump_up_to_this_format(format1: RedisServer) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "service.cli", "migrate", "--redis-url", format1.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"format 1 -> {FORMAT_VERSION}" in done.stderr
    assert format1.cli("GET", "st:format").strip() == str(FORMAT_VERSION)
    assert format1.cli("EXISTS", "st:sup:idx").strip() == "0"
