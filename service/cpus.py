"""How many CPUs this process may really use: what ``--workers auto`` and the parse
pool size themselves by.

``os.cpu_count()`` is the machine's count. In a container it is the node's (64 on
a large node) whatever the pod may use, and the parse pool admits two bodies of up
to 8 MiB per process: sized by the node, a burst of large bodies could take more
memory than the pod's limit. So the count here is the smallest of the CPUs this
process may run on (its affinity: taskset, cpusets) and its CFS quota (cgroup v2
``cpu.max``, or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may use: affinity, capped by a CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The CFS quota in CPUs (``2.5``), or None when there is none or it cannot be read."""
    try:
        fields = (cgroup / "cpu.max").read_text().split()  # cgroup v2: "max 100000"
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
