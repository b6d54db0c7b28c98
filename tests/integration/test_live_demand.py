"""The live stream is written only while a page is open somewhere (service.live_demand):
unwatched, merges append nothing to it; from a watcher's announcement on, every
replica's merges reach it, in every slot group; once the flag lapses they stop."""

from __future__ import annotations

import asyncio

import pytest

from service.codec import encode_batch
from service.live_demand import REFRESH_S, WATCH_TTL_MS, LiveDemand
from service.parser import parse_payload
from service.stores import RedisStore
from service.tasks import cancel_and_wait
from tests.support import ses
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def writes(*message_ids: str):
    records = [ses.send(mid, [f"{mid}@x.com"]) for mid in message_ids]
    return encode_batch(parse_payload(ses.dumps(*records)).events, ses.SENT_AT + 1_000)


async def streamed(client, store: RedisStore) -> int:
    return sum([await client.xlen(key) for key in store.transitions_keys])


async def test_merges_write_the_live_stream_only_while_someone_watches(
    redis_target: RedisTarget,
) -> None:
    watching = False
    many = [f"m-{n}" for n in range(40)]  # in every slot group of a cluster
    async with redis_target.emptied(feed_window_s=3_600, feed_when_watched=True) as (store, client):
        demand = LiveDemand(store.keyspace, lambda: watching)
        await store.merge(writes(*many))
        assert await streamed(client, store) == 0  # nobody watching: nothing written

        # A burst of pages connecting at once: the flags are written once.
        await asyncio.gather(*(demand.announce() for _ in range(10)))
        assert demand.announcements == 1
        for group in store.keyspace.groups:
            assert 0 < await client.pttl(group.live_watched) <= WATCH_TTL_MS
        await store.merge(writes(*(f"w-{mid}" for mid in many)))
        followed = await store.follow_transitions(
            " ".join("0-0" for _ in store.transitions_keys), block_ms=10
        )
        assert {t.message_id for t in followed[1]} == {f"w-{mid}" for mid in many}

        # The flag lapses (the watcher's process died, or its pages closed).
        for group in store.keyspace.groups:
            await client.delete(group.live_watched)
        before = await streamed(client, store)
        await store.merge(writes(*(f"late-{mid}" for mid in many)))
        assert await streamed(client, store) == before


async def test_a_store_not_asked_to_wait_for_watchers_always_writes(
    redis_target: RedisTarget,
) -> None:
    # Tools and tests that follow the stream themselves (feed_when_watched off).
    async with redis_target.emptied(feed_window_s=3_600) as (store, client):
        await store.merge(writes("plain"))
        assert await streamed(client, store) == 1


async def test_the_flag_is_refreshed_while_clients_stay_and_left_to_lapse_after(
    redis_target: RedisTarget,
) -> None:
    clients = [1]
    naps: list[float] = []
    rounds = asyncio.Event()

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            clients[0] = 0  # the last page closed
        if len(naps) == 5:
            rounds.set()
        await asyncio.sleep(0)

    async with redis_target.emptied(feed_window_s=3_600, feed_when_watched=True) as (store, client):
        demand = LiveDemand(store.keyspace, lambda: clients[0] > 0)
        task = asyncio.create_task(demand.run(sleep))
        try:
            await asyncio.wait_for(rounds.wait(), 10)
            assert naps[0] == REFRESH_S
            # Announced each round with a client (3), none after.
            assert demand.announcements == 3
            # Connects right after a refresh, a burst of them at once, write nothing more.
            await asyncio.gather(*(demand.announce() for _ in range(20)))
            assert demand.announcements == 3
            assert await client.exists(store.keyspace.groups[0].live_watched)
        finally:
            await cancel_and_wait([task])
