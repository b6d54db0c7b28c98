"""The parse pool: bounded admission, refusal or backpressure, in worker processes."""

from __future__ import annotations

import asyncio
import functools
import os

import pytest

from service.parser import parse_payload
from service.parsing import ParsePool, ParseQueueFull, processes_per_worker
from service.pipeline import Pipeline
from service.stores import MemoryStore
from tests.support import ses

pytestmark = pytest.mark.timeout(60)


def test_the_cores_are_shared_out_among_the_server_workers() -> None:
    assert processes_per_worker(1, cores=8) == 8
    assert processes_per_worker(3, cores=8) == 2
    assert processes_per_worker(16, cores=8) == 1


async def test_a_payload_is_parsed_in_another_process_and_its_result_comes_back() -> None:
    pool = ParsePool(1)
    body = ses.dumps(*(ses.send(f"p-{n}", ["a@x.com"]) for n in range(300)))
    result = await pool.run(functools.partial(parse_payload, body), wait=False)
    assert result.accepted == 300 and result.events[0].message_id == "p-0"
    pid = await pool.run(functools.partial(os.getpid), wait=False)  # type: ignore[arg-type]
    assert pid != os.getpid()
    assert pool.busy == 0 and pool.parsed == 2


async def test_a_full_pool_refuses_a_caller_that_can_come_back_and_queues_one_that_cannot() -> None:
    pool = ParsePool(1, capacity=2)
    await pool._admit(wait=False)
    await pool._admit(wait=False)
    with pytest.raises(ParseQueueFull) as refused:
        await pool._admit(wait=False)
    assert refused.value.retry_after_s >= 1 and pool.refused == 1
    # A consumer waits its turn, first come first served, and is never refused.
    first = asyncio.create_task(pool._admit(wait=True))
    second = asyncio.create_task(pool._admit(wait=True))
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done() and pool.busy == 4
    # While consumers wait, a newcomer that could come back is refused too.
    with pytest.raises(ParseQueueFull):
        await pool._admit(wait=False)
    pool._release()
    await asyncio.wait_for(first, 1)
    assert not second.done()
    second.cancel()  # a waiter that gives up leaves no slot behind
    await asyncio.gather(second, return_exceptions=True)
    for _ in range(2):
        pool._release()
    assert pool.busy == 0
    await asyncio.wait_for(pool._admit(wait=False), 1)


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_the_slot_on() -> None:
    pool = ParsePool(1, capacity=1)
    await pool._admit(wait=False)
    first = asyncio.create_task(pool._admit(wait=True))
    second = asyncio.create_task(pool._admit(wait=True))
    await asyncio.sleep(0.01)
    pool._release()  # handed to first...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert pool.busy == 1


async def test_a_consumer_waits_for_room_and_is_never_refused() -> None:
    pool = ParsePool(1, capacity=1)
    pipeline = Pipeline(MemoryStore(), parsing=pool)
    big = ses.dumps(*(ses.send(f"k-{n}", ["a@x.com"]) for n in range(300)))
    await pool._admit(wait=False)  # a hostile body holds the only slot
    consumer = asyncio.create_task(pipeline.parse_off_loop(big, "kafka"))
    await asyncio.sleep(0.05)
    assert not consumer.done() and pool.busy == 2
    with pytest.raises(ParseQueueFull):
        await pipeline.parse_off_loop(big, "http", wait=False)
    pool._release()
    result = await asyncio.wait_for(consumer, 30)
    assert result.accepted == 300 and pool.refused == 1 and pool.busy == 0
