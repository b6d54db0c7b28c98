import asyncio
import random
from collections import Counter

import orjson

from service.parser import parse_payload
from service.pipeline import Pipeline
from service.stores import MemoryStore
from service.traffic.model import TrafficModel, wrap
from service.traffic.simulator import run_simulator
from tests.support.fold import fold


def simulated(messages: int, seed: int = 1):
    rng = random.Random(seed)
    model = TrafficModel(rng)
    return rng, [item for n in range(messages) for item in model.message(1_700_000_000_000 + n)]


def test_traffic_covers_every_outcome_and_parses_cleanly() -> None:
    rng, scheduled = simulated(3_000)
    records = [record for _, record in scheduled]
    kinds = Counter(record["eventType"] for record in records)
    assert set(kinds) == {
        "Send",
        "Delivery",
        "DeliveryDelay",
        "Bounce",
        "Complaint",
        "Open",
        "Click",
        "Reject",
        "Rendering Failure",
    }
    subtypes = {r["bounce"]["bounceSubType"] for r in records if r["eventType"] == "Bounce"}
    assert "OnAccountSuppressionList" in subtypes
    # Duplicates and out-of-order arrival are part of the traffic.
    assert len({orjson.dumps(r) for r in records}) < len(records)
    visible_order = [record for _, record in sorted(scheduled, key=lambda item: item[0])]
    assert visible_order != records

    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        result = parse_payload(b"\n".join(wrap(r, rng) for r in chunk))
        assert result.rejected == [] and len(result.events) == len(chunk)


def test_auto_replies_and_multi_recipient_messages_occur() -> None:
    _, scheduled = simulated(3_000, seed=5)
    records = [record for _, record in scheduled]
    merged, _ = fold([records])
    statuses = Counter(
        record.recipient_status(address)
        for record in merged.values()
        for address in record.recipients
    )
    assert statuses["delivered"] > statuses["bounced"] > statuses["complained"] > 0
    assert any(len(r.recipients) > 1 for r in merged.values())
    notes = [
        r
        for r in merged.values()
        if any(a for a, f in r.recipients.items() if f & 4 and f & 2)  # soft bounce + delivery
    ]
    assert notes


async def test_simulator_feeds_the_pipeline_until_cancelled() -> None:
    store = MemoryStore()
    pipeline = Pipeline(store)
    task = asyncio.create_task(run_simulator(pipeline, messages_per_s=200, tick_s=0.05, seed=9))
    await asyncio.sleep(1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    counters = pipeline.counters["simulator"]
    assert counters.events > 100 and counters.rejected == 0
    assert len(store) > 50
