"""bench.bench_hostile's merge part in small: `ses-tracker serve` on Redis takes the
bodies that once made one script call of seconds (events naming 100 new recipients,
to their own messages and all to one), answers 202, and cuts the work into several
calls (issue #23, point 4; the bench reports the slowest call's time)."""

from __future__ import annotations

import pytest

from bench.bench_hostile import slowest_merge_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_wide_bodies_are_taken_in_several_bounded_calls() -> None:
    results = await slowest_merge_call(events=300, seconds_between=0.0)
    assert [status for _, status, _, _ in results] == [202, 202]
