"""Latency arithmetic on event timestamps (epoch ms). Pure functions, no I/O.

Every latency is an integer number of milliseconds and never negative: SES rounds
bounce timestamps down to the second, so a bounce can carry a time before the send
it answers; that reads as 0, not as time travel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def span(start: int | None, end: int | None) -> int | None:
    """``end - start`` clamped at 0, or None when either end is unknown."""
    if start is None or end is None:
        return None
    return max(0, end - start)


def earliest(times: Iterable[int | None]) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def rollup(per_recipient: Iterable[Mapping[str, int | None]]) -> dict[str, int]:
    """Message-level latencies: the slowest recipient's figure for each kind.

    The slowest, because "this message took 40 s to deliver" should mean every
    recipient had it by then.
    """
    result: dict[str, int] = {}
    for latencies in per_recipient:
        for name, value in latencies.items():
            if value is not None and value > result.get(name, -1):
                result[name] = value
    return result
