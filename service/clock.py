"""The wall clock, in the one unit the service keeps time in: epoch milliseconds."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
