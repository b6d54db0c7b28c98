"""Writes ``live_buckets.json`` beside this file: the live statistics (buckets and
their revisions) of data format 1, as the release before format 2 wrote them (run
from a checkout of that release, 952c8c5, with a ``redis-server`` on PATH):
``tests/integration/test_stats_migration.py`` migrates them.

Every hash under the prefixes is kept as {field: value}, keyed by its name; the
counts the old release read from its buckets are kept under ``"read"``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import orjson
from redis import asyncio as aioredis

from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import Counting
from service.stores.redis.store import RedisStore
from tests.support import ses
from tests.support.fold import events_of
from tests.support.servers import RedisServer

HERE = Path(__file__).parent
NOW = 1_800_001_234_000  # any wall clock: the buckets keep their numbers
DIMENSIONS = Dimensions(tags=("team",))


def records() -> list[dict]:
    out = []
    for n in range(230):  # past the 200 values a format-1 bucket admitted
        sent = NOW - 600_000 + (n % 3) * 10_000
        send = ses.send(f"f1-{n}", [f"a@d{n}.example", "b@gmail.com"], sent_at=sent)
        send["mail"]["tags"]["ses:configuration-set"] = [f"cs{n % 7}"]
        out.append(send)
        if n % 4 == 0:
            out.append(ses.delivery(f"f1-{n}", ["b@gmail.com"], sent + 900, sent_at=sent))
        if n % 9 == 0:
            out.append(ses.delay(f"f1-{n}", [f"a@d{n}.example"], sent + 2_000, sent_at=sent))
    return out


async def write(url: str) -> dict:
    client = aioredis.Redis.from_url(url)
    dump: dict = {"now_ms": NOW, "stores": {}}
    for prefix, groups in (("f1:", None), ("f1g:", 2)):
        store = RedisStore(client, prefix=prefix, slot_groups=groups)
        writes = encode_batch(list(events_of(records())), NOW, DIMENSIONS)
        await store.merge(writes, counting=Counting(NOW, history_days=0))
        buckets = sorted((await store.stats_revisions()).buckets)
        read = await store.read_buckets(buckets)
        hashes = {}
        async for key in client.scan_iter(match=f"{prefix}*stats*", count=1_000):
            raw = await client.hgetall(key)
            hashes[key.decode()] = {f.decode(): v.decode() for f, v in raw.items()}
        dump["stores"][prefix] = {
            "slot_groups": groups,
            "hashes": hashes,
            "read": {str(b): dict(c) for b, c in zip(buckets, read, strict=True)},
        }
    await client.aclose()
    return dump


def main() -> None:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH")
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir))
        server.start()
        try:
            dump = asyncio.run(write(server.url))
        finally:
            server.stop()
    (HERE / "live_buckets.json").write_bytes(orjson.dumps(dump, option=orjson.OPT_SORT_KEYS))


if __name__ == "__main__":
    main()
