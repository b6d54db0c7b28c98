"""The load generator holds its rate from the clock, whatever the target's speed."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.traffic.loadgen import Target, generate, messages_due


def test_a_run_makes_rate_times_duration_messages() -> None:
    assert messages_due(50, 0.0, None, 1.0) == 1  # the first is due at once
    assert messages_due(50, 0.5, None, 1.0) == 26
    assert messages_due(50, 5.0, None, 1.0) == 50  # however late the last tick
    assert messages_due(50, 5.0, 30, None) == 30
    assert messages_due(0, 0.0, 80, None) == 80


@given(
    rate=st.floats(0.1, 10_000),
    times=st.lists(st.floats(0, 100), min_size=2, max_size=20),
)
def test_what_is_due_never_shrinks_and_never_exceeds_the_run(
    rate: float, times: list[float]
) -> None:
    dues = [messages_due(rate, t, None, 10.0) for t in sorted(times)]
    assert dues == sorted(dues)
    assert all(1 <= due <= math.ceil(rate * 10.0) for due in dues)


class SlowTarget(Target):
    """Takes longer per send than the generator's tick, like a loaded service."""

    name = "slow"

    def __init__(self, seconds_per_send: float = 0.25) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []
        self.seconds_per_send = seconds_per_send

    async def send(self, records: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.seconds_per_send)
        self.records.extend(records)


async def test_a_slow_target_gets_the_full_rate() -> None:
    target = SlowTarget()
    report = await generate(target, rate=100, duration_s=1.0, seed=4)
    # Counted per tick, a 250 ms send would have cut this to about a third.
    assert report.messages == 100
    assert report.events == len(target.records) >= 100
    assert len({r["mail"]["messageId"] for r in target.records}) == 100


async def test_a_target_that_cannot_keep_up_is_reported() -> None:
    target = SlowTarget(seconds_per_send=1.2)
    report = await generate(target, rate=50, duration_s=1.0, seed=4, batch_size=10)
    assert report.events == len(target.records)  # everything was still sent
    assert len(report.warnings) == 1 and "could not keep up" in report.warnings[0]


async def test_a_target_that_keeps_up_has_no_warning() -> None:
    report = await generate(SlowTarget(seconds_per_send=0), rate=50, duration_s=1.0, seed=4)
    assert report.warnings == ()
