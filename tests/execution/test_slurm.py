"""``onnx-fe score --cluster slurm`` against a real SLURM: the CLI (in a subprocess, as users run it) submits Dask
worker jobs through dask-jobqueue's sbatch, they compute every shard, and the results equal the local ``-j 1`` run
bit for bit. No job is left behind.

It needs a SLURM whose ``sbatch`` runs jobs on this machine: ``.ci/slurm-up.sh`` starts a single-node one (root,
Debian's slurm-wlm and munge) and ``.ci/run`` then sets ``ONNX_FE_TEST_SLURM=1``. With that variable set, a SLURM
that does not work fails the test; without it the test is skipped (a developer machine without SLURM)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from shards import assert_same
from test_cluster_cli import _argv, _cli, _one_error_line, _stored

SLURM = os.environ.get("ONNX_FE_TEST_SLURM", "") not in ("", "0")

pytestmark = pytest.mark.skipif(
    not SLURM, reason="no SLURM here: run .ci/slurm-up.sh (root) and set ONNX_FE_TEST_SLURM=1, as .ci/run does"
)


def _my_jobs() -> list[str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=30, check=True)
    return [ln for ln in r.stdout.splitlines() if "onnx-fe-test" in ln]


@pytest.fixture(scope="module")
def slurm():
    """SLURM is up: sbatch is there and a node is idle (else the test fails: ONNX_FE_TEST_SLURM says it must run)."""
    for tool in ("sbatch", "squeue", "sinfo", "scancel"):
        assert shutil.which(tool), f"ONNX_FE_TEST_SLURM is set but {tool} is not on PATH"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    assert states.returncode == 0 and "idle" in states.stdout.split(), f"no idle SLURM node: {states}"
    yield
    left = _my_jobs()
    if left:
        subprocess.run(["scancel", "--name", "onnx-fe-test"], timeout=30)
    assert not left, f"jobs left in the queue: {left}"


@pytest.fixture(scope="module")
def local_cubical(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    r = _cli(_argv(root / "out", "cubical", "-j", "1", "-q"), root)
    assert r.returncode == 0, r.stderr
    return _stored(root / "out")


def test_a_scoring_run_through_sbatch_matches_the_local_run(tmp_path, slurm, local_cubical):
    argv = _argv(tmp_path / "out", "cubical", "--shard-size", "4", "-q", "--cluster", "slurm")
    for opt in ("cores=2", "processes=2", "memory=2GB", "walltime=00:10:00", "wait=90", "job_name=onnx-fe-test"):
        argv += ["--cluster-option", opt]
    r = _cli(argv, tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_same(_stored(tmp_path / "out"), local_cubical)
    # the work ran in a SLURM job: its output (sbatch's default, in the working directory) has both workers' start
    (log,) = tmp_path.glob("slurm-*.out")
    text = log.read_text()
    assert text.count("Registered to:") == 2, text
    _until_empty()


def _until_empty(timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while _my_jobs():  # the driver cancelled its job on the way out (scancel); it leaves the queue shortly
        assert time.monotonic() < end, f"the worker job was not cancelled: {_my_jobs()}"
        time.sleep(0.5)


def test_a_partition_that_does_not_exist_is_one_line(tmp_path, slurm):
    argv = _argv(tmp_path / "out", "cubical", "-q", "--cluster", "slurm", "--cluster-option", "queue=nosuchpartition")
    r = _cli(argv + ["--cluster-option", "job_name=onnx-fe-test"], tmp_path, timeout=120)
    assert r.returncode == 2
    _one_error_line(r.stderr, "sbatch refuses the worker job")
    assert not _my_jobs()
