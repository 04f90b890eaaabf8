"""``onnx-fe score --scheduler`` as users run it: a real ``dask scheduler`` and ``dask worker`` processes, the CLI in
a subprocess, and no Dask client in the test process. The results equal a local ``-j 1`` run bit for bit, for both
methods; a worker killed mid-run costs nothing; a scheduler killed mid-run ends the run with one line, and the same
command run locally resumes after the written shards and gives the same bytes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
from shards import ROOT, assert_same, contents

MODEL = ROOT / "models/demo/model.onnx"
DATA = ROOT / "models/demo/data"
BIN = Path(sys.executable).parent
HOLD = Path(__file__).with_name("hold_shards.py")
N_PER_CLASS = 3  # 10 classes: 30 images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(cond, timeout: float, what: str, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Cluster:
    """A scheduler and ``n`` single-threaded workers, each a ``dask`` command in its own process group."""

    def __init__(self, root: Path, n: int = 2, hold_from: int | None = None):
        self.root, self.shards = root, root / "shards"
        self.shards.mkdir(parents=True)
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen] = []
        self.scheduler = self._start(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        )
        _until(lambda: _accepts(port), 60, "the scheduler to listen")
        env = {"ONNX_FE_TEST_SHARDS": str(self.shards)}
        if hold_from is not None:
            env["ONNX_FE_TEST_HOLD_FROM"] = str(hold_from)
        args = ["worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--preload", str(HOLD)]
        self.workers = [
            self._start(f"worker{i}", [*args, "--local-directory", str(root / f"w{i}")], env) for i in range(n)
        ]
        _until(lambda: all("Registered to" in self.log(f"worker{i}") for i in range(n)), 60, "the workers")

    def _start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "wb") as out:
            p = subprocess.Popen(
                [str(BIN / "dask"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: a kill takes the nanny and its worker together
            )
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(30)

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def cluster_factory(tmp_path):
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        made.append(Cluster(tmp_path / f"cluster{len(made)}", **kw))
        return made[-1]

    try:
        yield make
    finally:  # even when the test failed: no scheduler or worker outlives it
        for c in made:
            c.close()


def _argv(out: Path, method: str, *extra: str) -> list[str]:
    return [
        str(BIN / "onnx-fe"),
        "score",
        str(MODEL),
        str(DATA),
        "-o",
        str(out),
        "-n",
        str(N_PER_CLASS),
        "--method",
        method,
        "--device",
        "cpu",
        "--resamples",
        "50",
        *extra,
    ]


def _cli(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _start_cli(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )


def _stored(out: Path) -> dict:
    return contents(SimpleNamespace(scores_csv=out / "scores.csv", results_h5=out / "results.h5"))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The local runs every cluster run must equal: ``onnx-fe score ... -j 1``, both methods."""
    root = tmp_path_factory.mktemp("local")
    refs = {}
    for method in ("cubical", "clique"):
        r = _cli(_argv(root / method, method, "-j", "1", "-q"), root)
        assert r.returncode == 0, r.stderr
        refs[method] = _stored(root / method)
    return refs


def _one_error_line(stderr: str, expected: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: ") and expected in lines[0], stderr


def _n_done(partial: Path) -> int:
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(f.attrs.get("n_done", 0))
    except OSError:  # the driver is writing it just now
        return 0


@pytest.mark.parametrize("method", ["cubical", "clique"])
def test_scheduler_option_matches_the_local_run(tmp_path, cluster_factory, local, method):
    c = cluster_factory()
    r = _cli(_argv(tmp_path / "out", method, "--scheduler", c.address, "--shard-size", "4", "-q"), tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same(_stored(tmp_path / "out"), local[method])
    ran = {p.name.split("-")[2] for p in c.shards.glob("started-*")}
    assert len(ran) == 2  # both worker processes computed shards


def test_a_worker_killed_mid_run_costs_nothing(tmp_path, cluster_factory, local):
    hold = 6
    c = cluster_factory(hold_from=hold)
    run = _start_cli(_argv(tmp_path / "out", "cubical", "--scheduler", c.address, "--shard-size", "1", "-q"), tmp_path)
    try:
        # both workers are inside a held shard, after the shards before it were written
        busy = _until(lambda: len(started := list(c.shards.glob("started-*"))) >= hold + 2 and started, 60, "shards")
        _until(lambda: _n_done(tmp_path / "out/results.h5.partial") == hold, 60, "the first shards to be written")
        shard, victim = next((int(s), int(pid)) for _, s, pid in (p.name.split("-") for p in busy) if int(s) >= hold)
        Cluster.kill(next(w for w in c.workers if os.getpgid(victim) == w.pid))
        (c.shards / "go").touch()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert_same(_stored(tmp_path / "out"), local["cubical"])
    assert len(list(c.shards.glob("done-*"))) == 30
    assert len(list(c.shards.glob(f"started-{shard}-*"))) == 2  # the killed worker's shard ran again elsewhere


def test_a_scheduler_killed_mid_run_is_one_line_and_resumes_locally(tmp_path, cluster_factory, local):
    hold = 6
    c = cluster_factory(hold_from=hold)
    argv = _argv(tmp_path / "out", "cubical", "--shard-size", "1", "-q")
    run = _start_cli([*argv, "--scheduler", c.address], tmp_path)
    try:
        _until(lambda: len(list(c.shards.glob("started-*"))) >= hold + 2, 60, "both workers to hold a shard")
        _until(lambda: _n_done(tmp_path / "out/results.h5.partial") == hold, 60, "the first shards to be written")
        Cluster.kill(c.scheduler)
        t = time.monotonic()
        out, err = run.communicate(timeout=60)
        waited = time.monotonic() - t
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2
    _one_error_line(err, f"lost the connection to the Dask scheduler at {c.address}")
    assert waited < 30
    assert _n_done(tmp_path / "out/results.h5.partial") == hold  # nothing written is lost
    assert not (tmp_path / "out/results.h5").exists()
    again = _cli([*argv[:-1], "-v", "-j", "1"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"resuming an interrupted run at image {hold} of 30" in again.stderr
    assert_same(_stored(tmp_path / "out"), local["cubical"])


def test_an_address_where_no_scheduler_runs_fails_in_seconds(tmp_path):
    t = time.monotonic()
    r = _cli(_argv(tmp_path / "out", "cubical", "--scheduler", f"tcp://127.0.0.1:{_free_port()}"), tmp_path)
    took = time.monotonic() - t
    assert r.returncode == 2
    _one_error_line(r.stderr, "cannot connect to the Dask scheduler")
    assert took < 15  # it used to wait for Dask's 20 s connect timeout
    assert not (tmp_path / "out/results.h5").exists()


_NO_WORKER_SCRIPT = """
import sys
import onnx_fe
from onnx_fe.config import ScoreConfig
from onnx_fe.execution.dask import DaskExecutor
from onnx_fe.experiments.score import run

model, data, out, address = sys.argv[1:]
cfg = ScoreConfig.build(model, data, out, images_per_class=3, device="cpu", shard_size=1, resamples=0)
try:
    with DaskExecutor.connect(address, wait_s=5) as ex:
        run(cfg, executor=ex)
except onnx_fe.OnnxFeError as e:
    print(e)
    sys.exit(2)
"""


def test_a_cluster_left_without_workers_stops_with_one_line(tmp_path, cluster_factory):
    c = cluster_factory(n=1, hold_from=2)
    run = _start_cli(
        [sys.executable, "-c", _NO_WORKER_SCRIPT, str(MODEL), str(DATA), str(tmp_path / "out"), c.address], tmp_path
    )
    try:
        _until(lambda: _n_done(tmp_path / "out/results.h5.partial") == 2, 60, "the first shards to be written")
        Cluster.kill(c.workers[0])  # the only worker, while it holds a shard; none joins again
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2, err
    # the scheduler drops the shards (their one input, the plan's key, was only on that worker), or 5 s pass
    assert "every Dask worker left the cluster mid-run" in out or "no Dask worker has been left" in out, out
    assert "lost the connection" not in out and "resumes after them" in out
    assert _n_done(tmp_path / "out/results.h5.partial") == 2
