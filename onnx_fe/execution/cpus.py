"""How many CPU cores this process may use: the default of ``-j``.

``os.cpu_count()`` counts the machine's cores, not the ones this process is given. A SLURM job, ``taskset`` or a
container limited with ``--cpus`` sees every core of the host, and a default of that many workers would run far more
processes than cores. The usable count is the smallest of: the CPU affinity mask (``os.sched_getaffinity``: SLURM's
``--cpus-per-task`` with task affinity or cgroups, ``taskset``, ``numactl``) and the cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``: Docker's ``--cpus``, Kubernetes limits), rounded up.
Pure function of those files and calls; no environment variable is read (``-j`` overrides it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in cores (e.g. 1.5), or None when there is none or it cannot be read."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "150000 100000"
    if v2:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        q, p = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
        if q is not None and p is not None:
            try:
                quota, period = int(q), int(p)
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cpus(root: Path = CGROUP) -> int:
    """The number of cores this process may use (at least 1): see the module's docstring."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)
