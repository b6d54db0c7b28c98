"""``ses-tracker demo``'s simulated SES traffic, fed through the service's pipeline.

The records are the traffic model's (``service.traffic.model``), released as their
time comes (``service.traffic.schedule``) and parsed by the same pipeline as every
real source.
"""

from __future__ import annotations

import asyncio
import random

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
