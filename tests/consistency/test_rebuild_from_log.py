"""Checker: state rebuilt naively from the input log equals what the service stored.

The input log is simulated SES traffic (wrapped in SNS and EventBridge envelopes,
duplicated, out of order), delivered at least once: some batches arrive twice. The
oracle below reads the log with plain dict access and applies the rules of the
README's "How state is decided" as written, sharing no code with the parser or the
state machine.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from service import stats
from service.pipeline import Pipeline
from service.stores import MemoryStore
from service.timestamps import parse_ms
from service.traffic.model import TrafficModel, wrap
from service.view import ViewOptions, message_view
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RANK = {"sent": 0, "delayed": 1, "delivered": 2, "bounced": 3, "complained": 4}


def unwrap(raw: bytes) -> dict[str, Any]:
    document = orjson.loads(raw)
    if document.get("Type") == "Notification":
        return orjson.loads(document["Message"])
    if document.get("source") == "aws.ses":
        return document["detail"]
    return document


def figures(counter: Counter[str]) -> Counter[str]:
    """Counts and latency sketches, without group admission's bookkeeping (``a:``,
    ``n:``), which each slot group of a cluster keeps for itself."""
    return Counter({k: v for k, v in counter.items() if not k.startswith(("a:", "n:"))})


def oracle(log: list[bytes]) -> dict[str, dict[str, Any]]:
    """{message_id: {"statuses": {address: status}, "send_to_delivery": {address: ms}}}"""
    by_message: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in log:
        record = unwrap(raw)
        by_message[record["mail"]["messageId"]].append(record)
    expected = {}
    for message_id, records in by_message.items():
        sent_at = parse_ms(records[0]["mail"]["timestamp"])
        reached: dict[str, set[str]] = defaultdict(set)
        whole = set()
        first_delivery: dict[str, int] = {}
        for record in records:
            for address in record["mail"]["destination"]:
                reached[address.lower()].add("sent")
            kind = record["eventType"]
            if kind in ("Reject", "Rendering Failure"):
                whole.add(kind)
            elif kind == "Delivery":
                at = parse_ms(record["delivery"]["timestamp"])
                for address in record["delivery"]["recipients"]:
                    reached[address.lower()].add("delivered")
                    first_delivery[address.lower()] = min(
                        at, first_delivery.get(address.lower(), at)
                    )
            elif kind == "DeliveryDelay":
                for item in record["deliveryDelay"]["delayedRecipients"]:
                    reached[item["emailAddress"].lower()].add("delayed")
            elif kind == "Bounce":
                hard = record["bounce"]["bounceType"] == "Permanent"
                for item in record["bounce"]["bouncedRecipients"]:
                    reached[item["emailAddress"].lower()].add("bounced" if hard else "soft")
            elif kind == "Complaint":
                for item in record["complaint"]["complainedRecipients"]:
                    reached[item["emailAddress"].lower()].add("complained")
        statuses = {}
        for address, steps in reached.items():
            if "soft" in steps:
                steps = steps - {"soft"} | ({"bounced"} if "delivered" not in steps else set())
            status = max(steps, key=RANK.__getitem__)
            if "Rendering Failure" in whole:
                status = "rendering_failed"
            elif "Reject" in whole:
                status = "rejected"
            statuses[address] = status
        expected[message_id] = {
            "statuses": statuses,
            "send_to_delivery": {a: max(0, t - sent_at) for a, t in first_delivery.items()},
        }
    return expected


@pytest.mark.parametrize("projected", ["inline", "after_a_crash"])
async def test_stored_state_matches_a_rebuild_from_the_input_log(
    redis_target: RedisTarget, projected: str
) -> None:
    """``after_a_crash``: the merging process applies none of its change log (as if
    killed after each merge); another process applies all of it at the end."""
    rng = random.Random(20261123)
    model = TrafficModel(rng)
    scheduled = []
    for n in range(600):
        sent_at = 1_700_000_000_000 + n * 37
        scheduled += model.message(sent_at)
    scheduled.sort(key=lambda item: item[0])
    log = [wrap(record, rng) for _, record in scheduled]

    prefix = f"consistency-{redis_target.kind}-{projected}:"
    store = redis_target.store(prefix=prefix, project_inline=projected == "inline")
    # A clock just after the traffic, so its statistics land in the live windows.
    clock = lambda: 1_700_000_000_000 + 30 * 60_000  # noqa: E731
    pipeline = Pipeline(store, clock_ms=clock)
    position = 0
    redelivered = 0
    batches = []
    while position < len(log):
        size = rng.randint(1, 80)
        batch = b"\n".join(log[position : position + size])
        batches.append(batch)
        result = await pipeline.ingest(batch, source="log")
        assert not result.rejected
        if rng.random() < 0.15:  # at-least-once: the same batch again
            await pipeline.ingest(batch, source="log")
            redelivered += 1
        position += size
    assert redelivered > 0
    if projected == "after_a_crash":
        await store.close()
        store = redis_target.store(prefix=prefix)
        assert await store.project() > 0

    # Each change counted once, though batches came twice (and, on a cluster, each
    # batch's slot groups committed on their own): the statistics equal those of one pass
    # over the same batches through the in-process merge.
    once = MemoryStore()
    for batch in batches:
        await Pipeline(once, clock_ms=clock).ingest(batch, source="log")
    buckets = sorted((await once.stats_revisions()).buckets)
    assert buckets
    got, want = await store.read_buckets(buckets), await once.read_buckets(buckets)
    assert [figures(c) for c in got] == [figures(c) for c in want]
    days = sorted({stats.day_of(1_700_000_000_000 + n * 86_400_000) for n in range(-1, 3)})
    got, want = await store.read_rollups("day", days), await once.read_rollups("day", days)
    assert [figures(c) for c in got] == [figures(c) for c in want]

    expected = oracle(log)
    kinds = defaultdict(int)
    options = ViewOptions(now_ms=1_700_000_000_000, overdue_after_ms=900_000)
    for message_id, truth in expected.items():
        record = await store.get(message_id)
        assert record is not None, message_id
        view = message_view(message_id, record, options)
        statuses = {r["address"]: r["status"] for r in view["recipients"]}
        assert statuses == truth["statuses"], message_id
        delivered = {
            r["address"]: r["latency_ms"]["send_to_delivery"]
            for r in view["recipients"]
            if "send_to_delivery" in r["latency_ms"]
        }
        assert delivered == truth["send_to_delivery"], message_id
        for status in statuses.values():
            kinds[status] += 1
    # Every final outcome occurred (the log is complete, so nothing is left pending).
    assert {"delivered", "bounced", "complained", "rejected", "rendering_failed"} <= set(kinds)
    await store.close()
