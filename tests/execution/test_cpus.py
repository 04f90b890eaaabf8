"""The default -j counts the cores this process may use, not the host's (affinity mask, cgroup quota)."""

import os

import pytest

from onnx_fe.execution import cpus
from onnx_fe.execution.cpus import cgroup_quota, usable_cpus


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    write(tmp_path / "cpu.max", "max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "200000\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path) == 2.0
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")  # no limit
    assert cgroup_quota(tmp_path) is None


@pytest.mark.parametrize("text", ["", "garbage", "x 100000", "100000 0"])
def test_unreadable_quota_is_no_quota(tmp_path, text):
    write(tmp_path / "cpu.max", text)
    assert cgroup_quota(tmp_path) is None


def test_affinity_and_quota_both_bound_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert usable_cpus(tmp_path) == 3  # a SLURM job or taskset on a 64-core host
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert usable_cpus(tmp_path) == 2  # docker --cpus 1.5: rounded up
    write(tmp_path / "cpu.max", "10000 100000\n")
    assert usable_cpus(tmp_path) == 1  # never 0


def test_without_affinity_falls_back_to_cpu_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus(tmp_path) == 6


def test_default_workers_of_a_run_follow_the_affinity_mask(monkeypatch):
    """The scoring run's default -j is the usable count (one core here: in-process, no pool)."""
    from onnx_fe.execution import will_use_processes

    monkeypatch.setattr(cpus, "usable_cpus", lambda root=cpus.CGROUP: 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert will_use_processes(None) is False
    monkeypatch.setattr(cpus, "usable_cpus", lambda root=cpus.CGROUP: 4)
    assert will_use_processes(None) is True


def test_a_process_pinned_to_one_core_defaults_to_one_worker():
    """As a SLURM job or `taskset -c 0` runs it: a fresh process whose affinity mask holds one core defaults to no
    pool, whatever os.cpu_count() says (no monkeypatching: the real mask of a real child process)."""
    import subprocess
    import sys

    code = "from onnx_fe.execution import will_use_processes as w; from onnx_fe.execution.cpus import usable_cpus as u; print(u(), w(None))"
    first = sorted(os.sched_getaffinity(0))[0]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
    ).stdout.split()
    assert out == ["1", "False"]
