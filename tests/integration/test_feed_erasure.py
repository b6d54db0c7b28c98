"""Erasing a recipient from the live transitions stream (``feed.erase_transitions``):
no entry names it any more, and every other transition can still be followed, once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from service import feed
from service.codec import encode_batch
from service.feed import erase_transitions
from service.parser import parse_payload
from service.stores import RedisStore
from tests.support import ses
from tests.support.redis import Interleaved, RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = ses.SENT_AT
GONE = "gone@x.com"


def writes(*records: dict):
    return encode_batch(parse_payload(ses.dumps(*records)).events, T + 1_000)


def sent_and_delivered(message_id: str, recipients: list[str]) -> list[dict]:
    return [
        ses.send(message_id, recipients),
        ses.delivery(message_id, recipients, T + 500),
    ]


async def followed(store: RedisStore) -> list[tuple]:
    """Every transition the stream holds, from its start, as a follower reads it."""
    position = " ".join("0-0" for _ in store.transitions_keys)
    seen: list[tuple] = []
    while True:
        position, transitions = await store.follow_transitions(position, block_ms=10)
        if not transitions:
            return seen
        seen += [(t.message_id, t.recipient, t.from_status, t.to_status) for t in transitions]


async def stream_bytes(client, store: RedisStore) -> list[bytes]:
    found = []
    for key in store.transitions_keys:
        for entry_id, fields in await client.xrange(key):
            found += [entry_id, *fields.keys(), *fields.values()]
    return found


def expected(message_ids: list[str], recipients: list[str]) -> Counter:
    return Counter(
        (mid, address, status_from, status_to)
        for mid in message_ids
        for address in recipients
        for status_from, status_to in ((None, "sent"), ("sent", "delivered"))
    )


async def test_an_erased_recipient_leaves_the_transitions_stream(
    redis_target: RedisTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "ERASE_PAGE", 3)  # several pages
    await redis_target.flush()
    store = redis_target.store(feed_window_s=3_600)
    client = redis_target.client()
    try:
        mixed = [f"tr-{n}" for n in range(8)]
        alone = [f"solo-{n}" for n in range(3)]
        others = [f"other-{n}" for n in range(4)]
        for mid in mixed:
            await store.merge(writes(*sent_and_delivered(mid, [GONE, "keep@x.com"])))
        for mid in alone:
            await store.merge(writes(*sent_and_delivered(mid, [GONE])))
        for mid in others:
            await store.merge(writes(*sent_and_delivered(mid, ["other@x.com"])))
        assert any(GONE.encode() in value for value in await stream_bytes(client, store))
        before = Counter(await followed(store))
        assert before == expected(mixed, [GONE, "keep@x.com"]) + expected(alone, [GONE]) + expected(
            others, ["other@x.com"]
        )

        erased = 0
        for key in store.transitions_keys:
            erased += await erase_transitions(client, key, GONE)
        assert erased == len(mixed) + len(alone)  # one entry per merge named it

        assert not [v for v in await stream_bytes(client, store) if GONE.encode() in v]
        # Every other transition is still there, once; the erased recipient's gone.
        after = Counter(await followed(store))
        assert after == expected(mixed, ["keep@x.com"]) + expected(others, ["other@x.com"])
        for key in store.transitions_keys:
            assert await erase_transitions(client, key, GONE) == 0
    finally:
        await client.aclose()
        await store.close()


async def test_concurrent_erasures_and_merges_lose_no_transition(
    redis_target: RedisTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two addresses erased at once from the same entries while merges append: an
    entry one erasure replaced first is met again, by its replacement, in the other's
    pass, so neither address survives and nothing else is lost or doubled."""
    monkeypatch.setattr(feed, "ERASE_PAGE", 4)
    await redis_target.flush()
    store = redis_target.store(feed_window_s=3_600)
    client = redis_target.client()
    try:
        mixed = [f"cc-{n}" for n in range(30)]
        for mid in mixed:
            await store.merge(writes(*sent_and_delivered(mid, [GONE, "two@x.com", "keep@x.com"])))
        late = [f"late-{n}" for n in range(10)]

        async def merge_late() -> None:
            for mid in late:
                await store.merge(writes(*sent_and_delivered(mid, ["new@x.com"])))

        async def erase(address: str) -> None:
            for key in store.transitions_keys:
                await erase_transitions(client, key, address)

        await asyncio.gather(erase(GONE), erase("two@x.com"), merge_late())
        left = [
            v for v in await stream_bytes(client, store) if GONE.encode() in v or b"two@x.com" in v
        ]
        assert not left
        after = Counter(await followed(store))
        assert after == expected(mixed, ["keep@x.com"]) + expected(late, ["new@x.com"])
    finally:
        await client.aclose()
        await store.close()


async def test_an_entry_another_erasure_replaced_first_is_met_again(
    redis_target: RedisTarget,
) -> None:
    await redis_target.flush()
    store = redis_target.store(feed_window_s=3_600)
    client = redis_target.client()
    try:
        mids = [f"ie-{n}" for n in range(3)]
        for mid in mids:
            await store.merge(writes(*sent_and_delivered(mid, [GONE, "two@x.com", "keep@x.com"])))
        for key in store.transitions_keys:

            async def other(key: str = key) -> None:
                await erase_transitions(client, key, "two@x.com")

            await erase_transitions(Interleaved(client, other), key, GONE)
        left = [
            v for v in await stream_bytes(client, store) if GONE.encode() in v or b"two@x.com" in v
        ]
        assert not left
        assert Counter(await followed(store)) == expected(mids, ["keep@x.com"])
    finally:
        await client.aclose()
        await store.close()
