"""Stopping background tasks: a cancellation lost on the way (Python 3.11's
``wait_for``, inside redis-py) must not keep a task, or the shutdown, going."""

from __future__ import annotations

import asyncio

import pytest

from service.tasks import cancel_and_wait


async def swallows_cancellations(times: list[int]) -> None:
    """Work that loses cancellations while ``times[0]`` says so, and goes on, as a
    task does whose cancel lands in the turn a ``wait_for`` inside it completes."""
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if times[0] <= 0:
                raise
            times[0] -= 1


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    task = asyncio.create_task(swallows_cancellations([3]))
    await asyncio.sleep(0.02)
    # Before: cancel() then gather() waited for as long as the work went on.
    late = await asyncio.wait_for(cancel_and_wait([task], every_s=0.01), 5)
    assert late == set()
    assert task.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_and_named(capsys) -> None:
    forever = [10**9]
    task = asyncio.create_task(swallows_cancellations(forever), name="stubborn")
    late = await asyncio.wait_for(cancel_and_wait([task], timeout_s=0.2, every_s=0.02), 5)
    assert late == {task}
    assert "task_ignored_cancellation" in capsys.readouterr().out
    forever[0] = 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_errors_and_results_are_dropped_not_raised() -> None:
    async def fails() -> None:
        raise ValueError("dropped, as gather(return_exceptions=True) drops it")

    async def sleeps() -> None:
        await asyncio.sleep(10)

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeping = asyncio.create_task(sleeps())
    assert await cancel_and_wait([failed, sleeping]) == set()
    assert sleeping.cancelled()
    assert isinstance(failed.exception(), ValueError)


async def test_the_caller_can_still_be_cancelled_while_it_waits() -> None:
    forever = [10**9]
    stubborn = asyncio.create_task(swallows_cancellations(forever))
    waiter = asyncio.create_task(cancel_and_wait([stubborn], timeout_s=60))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    forever[0] = 0
    stubborn.cancel()
    await asyncio.wait_for(asyncio.gather(stubborn, return_exceptions=True), 5)
