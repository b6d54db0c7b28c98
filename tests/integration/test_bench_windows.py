"""bench.bench_windows in small: `ses-tracker serve` on Redis takes a flood of
values over the last hour, keeps answering /healthz, and its live buckets hold a
bounded number of values per dimension (issue #23, point 5)."""

from __future__ import annotations

import shutil

import pytest

from bench.bench_windows import bench
from service import stats

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

EVENTS = 1_200  # past twice the hour's cap of each dimension


async def test_a_served_flood_of_values_keeps_the_hour_bounded_and_healthz_answering() -> None:
    results = await bench(EVENTS, 1.0, ["redis"])
    figures, stored = results["redis"]
    assert figures.posted == EVENTS
    assert figures.healthz["during"] and figures.healthz["after"]
    # Generous: a shared CI machine; the bench reports the real figures.
    assert max(figures.healthz["after"]) < 2.0
    for dimension in ("configuration_set", "identity", "domain"):
        assert figures.window[dimension]["sent"] == EVENTS
        # Every live bucket together: two hours' admission at most, and (other).
        assert stored[f"values of {dimension}"] <= 2 * stats.LIVE_GROUP_CAP + 1
