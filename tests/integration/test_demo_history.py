"""#28: an honest demo. Its seeded history is history (never forwarded, never on the
live stream), written once per store, and the demo refuses a Redis holding data it
did not write unless told otherwise. (Before: 89 days forwarded to subscriptions,
doubled counts on a second run, no warning.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from service.forward.outbox import MemoryOutbox
from service.pipeline import Pipeline
from service.stores import MemoryStore
from service.traffic.simulator import seed_history
from tests.support.process import clean_environment, command, running
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def history_of(client, prefix: str) -> dict[bytes, dict]:
    """Every history rollup's fields, by key."""
    return {
        key: await client.hgetall(key)
        async for key in client.scan_iter(match=f"{prefix}*hist*", count=1_000)
        if await client.type(key) == b"hash"
    }


async def test_seeded_history_is_never_news_and_is_written_once(make_store, redis_client) -> None:
    store = make_store(forward_keep_s=3_600, feed_window_s=3_600)
    pipeline = Pipeline(store)
    assert await seed_history(pipeline, days=3, per_day=20, seed=1) > 0
    for keys in store.keyspace.groups:
        assert await redis_client.xlen(keys.forward) == 0  # nothing to forward
        assert await redis_client.xlen(keys.transitions) == 0  # nothing live
    seeded = await history_of(redis_client, store.keyspace.prefix)
    assert seeded
    # A second demo on the same Redis: nothing more, the daily counts as they were.
    assert await seed_history(Pipeline(store), days=3, per_day=20, seed=2) == 0
    assert await history_of(redis_client, store.keyspace.prefix) == seeded


async def test_the_memory_store_forwards_no_seeded_history() -> None:
    outbox = MemoryOutbox()
    await outbox.prepare(["app"])
    store = MemoryStore(outbox=outbox)
    assert await seed_history(Pipeline(store), days=2, per_day=10, seed=1) > 0
    assert len(outbox) == 0


def demo(*args: str, redis: RedisServer) -> subprocess.CompletedProcess[str]:
    environment = clean_environment()
    return subprocess.run(
        [*command(), "demo", "--port", "0", "--redis-url", redis.url, *args],
        env=environment,
        capture_output=True,
        timeout=30,
        text=True,
    )


def test_the_demo_refuses_a_redis_holding_other_data(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)
        client.set("st:m:{someone-elses}", b"real data")
        refused = demo(redis=redis)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "already holds data the demo did not write" in refused.stderr
        assert "--allow-existing-data" in refused.stderr
        assert client.dbsize() == 1  # nothing written
        with running(
            "demo", "--redis-url", redis.url, "--allow-existing-data", "--rate", "1"
        ) as service:
            assert httpx.get(f"{service.base}/healthz", timeout=5).status_code == 200
            service.stop()
            assert "writing simulated traffic into a Redis that holds data" in service.logs()
        client.close()
    finally:
        redis.stop()
