"""A master of the Redis Cluster dies mid-traffic: its replica is promoted, merges that
failed meanwhile are retried (as a consumer redelivers an uncommitted batch), and the
store ends exactly as one uninterrupted pass would leave it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from service.pipeline import Pipeline
from service.search import SearchQuery
from service.stores import MemoryStore, RedisStore, StoreUnavailable
from service.stores.redis.slots import DEFAULT_SLOT_GROUPS
from tests.support import ses
from tests.support.servers import RedisClusterServers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = ses.SENT_AT
CLOCK_MS = T + 10 * 60_000


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path, masters=3, replicas=1, node_timeout_ms=1_000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def batches() -> list[bytes]:
    """Sends to three domains, then their outcomes, in batches of 40 messages."""
    first, second = [], []
    for n in range(240):
        address = f"u{n}@d{n % 3}.example"
        first.append(ses.send(f"fo-{n}", [address], T + n))
        outcome = ses.bounce if n % 10 == 0 else ses.delivery
        second.append(outcome(f"fo-{n}", [address], T + n + 2_000))
    both = first + second
    return [ses.dumps(*both[i : i + 40]) for i in range(0, len(both), 40)]


async def ingest_until_stored(pipeline: Pipeline, batch: bytes, deadline: float) -> int:
    """Retries a batch until the store takes it whole; returns the failed attempts."""
    failures = 0
    while True:
        try:
            await pipeline.ingest(batch, "failover")
            return failures
        except StoreUnavailable:
            failures += 1
            assert time.monotonic() < deadline, "the cluster never recovered"
            await asyncio.sleep(0.2)


def replicated(cluster: RedisClusterServers) -> bool:
    """Every replica has what its master has (so the kill below loses nothing that
    was acknowledged: Redis replicates asynchronously, README, Redis Cluster)."""
    for node in cluster.nodes:
        info = node.cli("info", "replication")
        if "role:master" in info and "connected_slaves:1" in info:
            offset = int(info.split("master_repl_offset:")[1].split()[0])
            slave = info.split("slave0:")[1].split()[0]
            if int(slave.split("offset=")[1].split(",")[0]) != offset:
                return False
    return True


def master_of_most_groups(cluster: RedisClusterServers, store: RedisStore) -> int:
    """The node serving the most slot groups (so it holds messages to lose)."""
    owners: Counter[int] = Counter()
    slots = [key_slot(prefix.encode()) for prefix in store.keyspace.group_prefixes]
    for index, node in enumerate(cluster.nodes):
        lines = node.cli("cluster", "nodes").splitlines()
        mine = next(line for line in lines if "myself" in line)
        if "master" not in mine:
            continue
        for part in mine.split()[8:]:
            low, _, high = part.partition("-")
            owners[index] += sum(int(low) <= s <= int(high or low) for s in slots)
    return owners.most_common(1)[0][0]


async def test_a_master_dies_its_replica_takes_over_and_nothing_is_lost(
    cluster_with_replicas: RedisClusterServers,
) -> None:
    cluster = cluster_with_replicas
    store = RedisStore(RedisCluster.from_url(cluster.url), slot_groups=DEFAULT_SLOT_GROUPS)
    pipeline = Pipeline(store, clock_ms=lambda: CLOCK_MS)
    work = batches()
    half = len(work) // 2
    for batch in work[:half]:
        assert await ingest_until_stored(pipeline, batch, time.monotonic() + 10) == 0
    deadline = time.monotonic() + 10
    while not replicated(cluster):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    victim = cluster.nodes[master_of_most_groups(cluster, store)]
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait()
    victim.process = None

    deadline = time.monotonic() + 60
    for batch in work[half:]:
        await ingest_until_stored(pipeline, batch, deadline)
    # Every slot served again with the victim dead: its replica was promoted.
    cluster.wait_ok()

    # Every message as one pass leaves it, every change counted once.
    once = MemoryStore()
    reference = Pipeline(once, clock_ms=lambda: CLOCK_MS)
    for batch in work:
        await reference.ingest(batch, "failover")
    for n in range(240):
        stored, expected = await store.get(f"fo-{n}"), await once.get(f"fo-{n}")
        assert stored is not None and expected is not None
        assert stored.status() == expected.status(), n
    buckets = sorted((await once.stats_revisions()).buckets)
    stored_counts = await store.read_buckets(buckets)
    expected_counts = await once.read_buckets(buckets)
    for got, want in zip(stored_counts, expected_counts, strict=True):
        assert {k: v for k, v in got.items() if k.startswith("c:")} == {
            k: v for k, v in want.items() if k.startswith("c:")
        }
    # Search reads every slot group, the promoted one included.
    bounced = await store.search(SearchQuery(status="bounced", limit=100))
    assert len(bounced.hits) == 24
    await store.close()
