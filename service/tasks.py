"""Background tasks nobody awaits while they run: their crash must still be said."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
