"""The CPUs a process may use, not the node's (service.cpus): what --workers auto
and the parse pool size themselves by."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import cpu_quota, usable_cpus
from service.settings import Settings

AFFINITY = len(os.sched_getaffinity(0))


def v2(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def v1(tmp_path: Path, quota: str, period: str) -> Path:
    (tmp_path / "cpu").mkdir(parents=True)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("junk", None)],
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, quota: float | None) -> None:
    assert cpu_quota(v2(tmp_path, text)) == quota


def test_cgroup_v1_quota_and_none(tmp_path: Path) -> None:
    assert cpu_quota(v1(tmp_path / "a", "300000", "100000")) == 3.0
    assert cpu_quota(v1(tmp_path / "b", "-1", "100000")) is None  # unlimited
    assert cpu_quota(tmp_path / "nothing-here") is None


def test_a_quota_caps_the_affinity_rounded_up_and_never_below_one(tmp_path: Path) -> None:
    assert usable_cpus(v2(tmp_path / "a", "50000 100000")) == 1  # half a CPU: one
    assert usable_cpus(v2(tmp_path / "b", "150000 100000")) == min(AFFINITY, 2)
    assert usable_cpus(v2(tmp_path / "c", f"{(AFFINITY + 8) * 100000} 100000")) == AFFINITY
    assert usable_cpus(tmp_path / "none") == AFFINITY


def test_workers_auto_is_the_usable_count() -> None:
    assert Settings(_env_file=None, workers="auto").worker_count() == usable_cpus()
