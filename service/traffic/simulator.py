"""``ses-tracker demo``'s simulated SES traffic, fed through the service's pipeline.

The records are the traffic model's (``service.traffic.model``), released as their
time comes (``service.traffic.schedule``) and parsed by the same pipeline as every
real source. Before the live traffic starts, :func:`seed_history` plays a few
messages a day for the past days through a pipeline that counts history only, so
the page's 90-day trend has something to show on first start.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import structlog

from service.clock import wall_clock_ms
from service.pipeline import Pipeline
from service.traffic.model import TrafficModel, wrap
from service.traffic.schedule import Schedule

log = structlog.get_logger(__name__)

SAMPLE_EVERY = 200  # log one simulated message id in this many


async def run_simulator(
    pipeline: Pipeline,
    *,
    messages_per_s: float = 20.0,
    tick_s: float = 0.1,
    seed: int | None = None,
) -> None:
    """Send simulated traffic through ``pipeline`` until cancelled."""
    rng = random.Random(seed)
    model = TrafficModel(rng)
    schedule = Schedule()
    owed = 0.0
    log.info("simulator_started", messages_per_s=messages_per_s)
    made = 0
    while True:
        now = wall_clock_ms()
        owed += messages_per_s * tick_s
        while owed >= 1:
            owed -= 1
            events = model.message(now - rng.randint(0, int(tick_s * 1000)))
            made += 1
            if made % SAMPLE_EVERY == 1:
                # A few ids to try with `ses-tracker lookup` or GET /v1/messages/{id}.
                log.info("simulated_message", message_id=events[0][1]["mail"]["messageId"])
            schedule.add(events)
        batch = [wrap(record, rng) for record in schedule.due(now)]
        if batch:
            try:
                await pipeline.ingest(b"\n".join(batch), source="simulator")
            except Exception:  # the demo must keep going; the cause is logged
                log.exception("simulator_batch_failed", records=len(batch))
        await asyncio.sleep(tick_s)


# Days of the seeded history that go badly (days ago -> trouble), so the trend
# crosses SES's bounce review threshold once.
TROUBLED_DAYS = {12: 0.7, 13: 0.5, 40: 0.3}
DAY_MS = 86_400_000


# Marks a store the demo has seeded (Admin.mark_replayed), for as long as the
# history it wrote is kept: a second demo on the same Redis seeds nothing.
SEEDED_MARK = "demo-history-v1"
SEEDED_KEEP_S = 400 * 86_400


async def seed_history(
    pipeline: Pipeline, *, days: int = 89, per_day: int = 150, seed: int | None = None
) -> int:
    """Merge ``per_day`` simulated messages for each of the ``days`` before today
    (every event of each at once), counting them in the history rollups only, as a
    replay does: never forwarded, never on the live stream. Once per store: one
    seeded before (its mark) is left as it is. Returns the events merged."""
    store = pipeline.store
    if await store.replayed(SEEDED_MARK):
        log.info("demo_history_already_seeded")
        return 0
    history = Pipeline(
        pipeline.store,
        live_stats=False,
        clock_ms=pipeline.clock_ms,
        dimensions=pipeline.dimensions,
        history_days=pipeline.history_days,
        hourly_days=pipeline.hourly_days,
    )
    rng = random.Random(seed)
    today = pipeline.clock_ms() // DAY_MS * DAY_MS
    merged = 0
    for ago in range(days, 0, -1):
        model = TrafficModel(rng, trouble=TROUBLED_DAYS.get(ago, 0.0))
        start = today - ago * DAY_MS
        records = [
            record
            for _ in range(per_day)
            for _, record in model.message(start + rng.randrange(DAY_MS - 600_000))
        ]
        result = await history.ingest(
            b"\n".join(orjson.dumps(record) for record in records), source="demo-history"
        )
        merged += len(result.events)
        await asyncio.sleep(0)  # one day at a time: the API answers meanwhile
    await store.mark_replayed(SEEDED_MARK, SEEDED_KEEP_S)
    log.info("demo_history_seeded", days=days, events=merged)
    return merged
