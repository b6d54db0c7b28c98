"""Writes ``dump.rdb`` beside this file: a store of data format 1, as the release
before format 2 wrote it (run from a checkout of that release, 952c8c5, with a
``redis-server`` on PATH). ``tests/integration/test_migrations.py`` migrates it.

Records and suppressions are kept for 100 years, so the dump does not expire.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from service.clock import wall_clock_ms
from service.pipeline import Pipeline
from service.stores.redis.store import RedisStore
from tests.support import ses
from tests.support.servers import RedisServer

HERE = Path(__file__).parent
CENTURY_S = 100 * 365 * 86_400


async def write(url: str) -> None:
    store = RedisStore.from_url(url, retention_s=CENTURY_S, suppression_days=36_500)
    await store.claim_format()
    pipeline = Pipeline(store)
    now = wall_clock_ms() - 60_000
    records = [
        ses.send("format1-delivered", ["ok@example.com"], sent_at=now),
        ses.delivery("format1-delivered", ["ok@example.com"], now + 900, sent_at=now),
        ses.send("format1-bounced", ["gone@example.com"], sent_at=now),
        ses.bounce("format1-bounced", ["gone@example.com"], now + 1_200, sent_at=now),
        ses.send("format1-complained", ["angry@example.org"], sent_at=now),
        ses.complaint("format1-complained", ["angry@example.org"], now + 5_000, sent_at=now),
    ]
    result = await pipeline.ingest(b"\n".join(orjson.dumps(r) for r in records), "format1")
    assert not result.rejected_count, result.rejected
    await store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), extra_args=["--appendonly", "no"])
        server.start()
        try:
            asyncio.run(write(server.url))
            sys.stderr.write(f"{server.cli('SAVE')} {server.cli('KEYS', '*')}\n")
            shutil.copy(Path(tmp) / "dump.rdb", HERE / "dump.rdb")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
