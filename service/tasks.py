"""Background tasks nobody awaits while they run: their crash must still be said."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def crash_reporter(event: str) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback logging ``event`` with the task's name and traceback when it
    ended on an exception (a cancellation is no crash)."""

    def report(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(event, task=task.get_name(), exc_info=task.exception())

    return report


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 10.0, every_s: float = 0.1
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end; returns those still running after
    ``timeout_s`` (logged). Their results and errors are dropped, as
    ``gather(return_exceptions=True)`` drops them.

    One ``cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` returns the
    result instead of raising when the awaited work finishes in the same loop turn
    as the cancellation (gh-86296, fixed in 3.12), and redis-py waits for every
    socket write that way. The cancellation is then lost and the task goes on (a
    demo's seeding ran to its end and its simulator started during a shutdown), so
    a task still running is cancelled again every ``every_s`` until it ends.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(every_s, left))
    for task in pending:
        log.error("task_ignored_cancellation", task=task.get_name(), waited_s=timeout_s)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio would otherwise warn at collection
    return pending
