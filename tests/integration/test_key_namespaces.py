"""A name an event carries cannot reach another key family (service.stores.redis.keys):
the parser refuses what is not an address, and the store keeps its families apart
even for what the parser lets through (these tests go under the parser)."""

from __future__ import annotations

import dataclasses

import pytest

from service.codec import encode_batch
from service.dimensions import Dimensions
from service.stats import Counting
from tests.support import ses
from tests.support.fold import SEEN_MS, events_of
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = ses.SENT_AT


def bounced(message_id: str, address: str):
    """Send + Permanent bounce to ``address``, whatever it holds."""
    records = [
        ses.send(message_id, ["stand-in@example.com"], sent_at=T),
        ses.bounce(message_id, ["stand-in@example.com"], T + 1_000, sent_at=T),
    ]
    events = [
        dataclasses.replace(
            event,
            recipients=tuple(address for _ in event.recipients),
            mail=dataclasses.replace(event.mail, destination=(address,)),
        )
        for event in events_of(records)
    ]
    return encode_batch(events, SEEN_MS, Dimensions())


@pytest.mark.parametrize("name", ["idx", "index", "sup:idx", "{0}", ""])
async def test_a_suppressed_name_never_meets_the_suppression_listing(
    redis_target: RedisTarget, name: str
) -> None:
    await redis_target.flush()
    store = redis_target.store(suppression_days=36_500, retention_s=10**9)
    try:
        counting = Counting(SEEN_MS)
        await store.merge(bounced("first", "gone@example.com"), None, counting)
        # Before: WRONGTYPE on every retry of this batch (the listing was sup:idx).
        await store.merge(bounced("second", name), None, counting)
        listed, _ = await store.suppressions(None, None, 10, None)
        assert {entry.address for entry in listed} == {"gone@example.com", name}
        assert (await store.get("second")) is not None
        # Before: DELETE /v1/suppressions/idx removed the whole listing.
        assert await store.remove_suppression(name)
        listed, _ = await store.suppressions(None, None, 10, None)
        assert [entry.address for entry in listed] == ["gone@example.com"]
    finally:
        await store.close()
