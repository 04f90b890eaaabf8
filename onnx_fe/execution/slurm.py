"""Dask workers as SLURM jobs (``onnx-fe score --cluster slurm --cluster-option KEY=VALUE ...``).

Needs the optional extra ``onnx-fe[slurm]`` (dask-jobqueue). The driver (the process you started) runs the Dask
scheduler itself and submits ``jobs`` batch jobs through ``sbatch``, each running ``processes`` single-threaded Dask
workers with the driver's own Python (``sys.executable``: the same virtual environment on every node). The jobs are
cancelled when the run ends, however it ends.

What avoids dask-jobqueue's known failures of adaptive scaling (workers retired while they hold results, jobs
submitted and cancelled in loops, a cluster that scales to zero mid-run):

- **Fixed scaling**: ``cluster.scale(jobs=N)`` once; never ``adapt()``.
- **Walltime margins**: each worker retires by itself (``--lifetime``) a margin before the job's walltime (a tenth of
  it, at least a minute, at most half), staggered so that the workers of a job do not all leave at once. A shard
  running on a retiring worker is handed to another one: nothing is lost and the results do not change. When every
  job has ended, the run stops with one line after ``wait`` seconds and the same command resumes after the written
  shards.
- **A bounded wait**: the driver waits at most ``wait`` seconds for the first worker, and stops at once with one line
  when every job has left the queue without a worker joining (a job that fails to start: see its log).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..errors import OnnxFeError, OptionError


@dataclass(frozen=True)
class _Key:
    kind: str  # "int", "float", "str", "list" (repeat the key to give several)
    help: str
    own: bool = False  # onnx-fe's, not a SLURMCluster keyword


KEYS: dict[str, _Key] = {
    "jobs": _Key("int", "SLURM jobs to start (fixed; default 1)", own=True),
    "wait": _Key("float", "seconds to wait for the first worker to join (default 600)", own=True),
    "queue": _Key("str", "partition (sbatch -p)"),
    "account": _Key("str", "account (sbatch -A)"),
    "walltime": _Key("str", "walltime of each job, e.g. 02:00:00 (default 01:00:00)"),
    "cores": _Key("int", "cores per job (default 1)"),
    "processes": _Key("int", "Dask worker processes per job, one thread each (default: cores)"),
    "memory": _Key("str", "memory per job, e.g. 16GB (default 2GB per core)"),
    "job_cpu": _Key("int", "--cpus-per-task, when it differs from cores"),
    "job_mem": _Key("str", "--mem, when it differs from memory"),
    "job_extra_directives": _Key("list", "an extra #SBATCH line, e.g. --exclusive (repeat the key for several)"),
    "job_directives_skip": _Key("list", "an #SBATCH line to leave out, e.g. --mem"),
    "job_script_prologue": _Key("list", "a shell line run before the worker, e.g. 'module load cuda'"),
    "worker_extra_args": _Key("list", "an extra argument of dask worker, e.g. --resources=GPU=1"),
    "lifetime": _Key("str", "worker lifetime, e.g. 55m, or 'none' (default: the walltime less a margin)", own=True),
    "lifetime_stagger": _Key("str", "spread of the lifetimes, e.g. 2m (default: a quarter of the margin)", own=True),
    "local_directory": _Key("str", "node-local scratch directory of the workers"),
    "log_directory": _Key("str", "where the jobs' output goes (default: sbatch's, the current directory)"),
    "interface": _Key("str", "network interface the scheduler and workers use, e.g. ib0"),
    "job_name": _Key("str", "job name (default dask-worker)"),
    "death_timeout": _Key("float", "seconds a worker waits for a lost scheduler before it exits (default 60)"),
    "python": _Key("str", "the jobs' Python (default: this one, " + sys.executable + ")"),
}

DEFAULT_WAIT_S = 600.0


def parse_options(items) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings (``--cluster-option``), checked against :data:`KEYS`; the pairs, in the given order."""
    out = []
    for item in items or ():
        text = str(item)
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise OptionError(f"--cluster-option {text!r}: expected KEY=VALUE, e.g. queue=cpu")
        if key not in KEYS:
            raise OptionError(f"--cluster-option {key}: unknown key; known: {', '.join(sorted(KEYS))}")
        _typed(key, value.strip())  # refuse a bad number now, not after the model is loaded
        out.append((key, value.strip()))
    cluster_kwargs(out)  # the walltime's format, processes against cores: refused now too
    return tuple(out)


def _typed(key: str, value: str):
    kind = KEYS[key].kind
    try:
        if kind == "int":
            v = int(value)
            if v < 1:
                raise ValueError
            return v
        if kind == "float":
            v = float(value)
            if not v > 0:
                raise ValueError
            return v
    except ValueError:
        raise OptionError(f"--cluster-option {key}={value}: expected a positive {kind}") from None
    if not value:
        raise OptionError(f"--cluster-option {key}= is empty")
    return value


def cluster_kwargs(options) -> tuple[dict[str, Any], dict[str, Any]]:
    """(SLURMCluster keyword arguments, onnx-fe's own settings) from the ``(key, value)`` pairs, defaults filled in."""
    kw: dict[str, Any] = {}
    own: dict[str, Any] = {"jobs": 1, "wait": DEFAULT_WAIT_S, "lifetime": None, "lifetime_stagger": None}
    for key, value in options:
        v = _typed(key, value)
        if KEYS[key].kind == "list":
            kw.setdefault(key, []).append(v)
        elif KEYS[key].own:
            own[key] = v
        else:
            kw[key] = v
    kw.setdefault("cores", 1)
    kw.setdefault("processes", kw["cores"])
    if kw["processes"] > kw["cores"]:
        raise OptionError(f"--cluster-option processes={kw['processes']} exceeds cores={kw['cores']}")
    kw.setdefault("memory", f"{2 * kw['cores']}GB")
    kw.setdefault("walltime", "01:00:00")
    kw.setdefault("python", sys.executable)
    walltime = _seconds(kw["walltime"])
    if own["lifetime"] != "none":
        margin = min(max(60.0, walltime / 10), walltime / 2)
        lifetime = own["lifetime"] or f"{int(walltime - margin)}s"
        stagger = own["lifetime_stagger"] or f"{int(margin / 4)}s"
        kw.setdefault("worker_extra_args", [])
        kw["worker_extra_args"] += ["--lifetime", lifetime, "--lifetime-stagger", stagger]
    return kw, own


def _seconds(walltime: str) -> float:
    """SLURM's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", walltime.strip())
    if not m:
        raise OptionError(f"--cluster-option walltime={walltime}: expected e.g. 02:00:00 or 1-12:00:00")
    d, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if d is not None:  # D-HH[:MM[:SS]]
        secs = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        secs = a * 60 + b
    else:  # MM
        secs = a * 60
    if secs <= 0:
        raise OptionError(f"--cluster-option walltime={walltime}: must be more than zero")
    return float(secs)


def start(options, log=None):
    """Start a SLURMCluster with fixed scaling, wait for its first worker, and return a
    :class:`~onnx_fe.execution.dask.DaskExecutor` that owns the client and the cluster (closing it cancels the
    jobs)."""
    kw, own = cluster_kwargs(options)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise OptionError(
            "--cluster slurm needs the slurm extra: pip install 'onnx-fe[slurm]' (dask-jobqueue)"
        ) from None
    from distributed import Client

    from .dask import DaskExecutor, _QuietDistributed

    if shutil.which("sbatch") is None:
        raise OnnxFeError("--cluster slurm: sbatch is not on PATH (run on a SLURM login node)")
    quiet = _QuietDistributed()
    cluster = client = None
    try:
        try:
            cluster = SLURMCluster(scheduler_options={"dashboard_address": None}, **kw)
        except (TypeError, ValueError) as e:
            raise OptionError(f"--cluster slurm: {str(e).splitlines()[0]}") from None
        _test_submit(cluster.job_script())
        cluster.scale(jobs=own["jobs"])
        client = Client(cluster, set_as_default=False)
        if log is not None:
            log(
                f"note: submitted {own['jobs']} SLURM job(s) of {kw['processes']} Dask worker(s); waiting for the "
                "first worker"
            )
        _wait_for_first_worker(cluster, client, own["wait"], kw.get("log_directory"))
        ex = DaskExecutor(client, own_client=True, cluster=cluster, wait_s=own["wait"])
        ex._quiet = quiet
        return ex
    except BaseException:
        for closing in (client, cluster):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # closing what failed to start: the first error is the one to show
                    pass
        quiet.restore()
        raise


def _test_submit(script: str) -> None:
    """``sbatch --test-only`` on the job script: a bad partition, account or walltime is one line now."""
    r = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        why = " ".join((r.stderr or r.stdout).split()) or f"exit status {r.returncode}"
        raise OnnxFeError(f"--cluster slurm: sbatch refuses the worker job: {why}")


def job_ids(cluster) -> list[str]:
    return [str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None)]


def _queue_state(ids: list[str]) -> dict[str, str]:
    """``job id → "STATE (reason)"`` for the jobs still in the queue."""
    if not ids:
        return {}
    r = subprocess.run(
        ["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True, text=True, timeout=60
    )
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            out[parts[0]] = parts[1] + (f" ({parts[2]})" if len(parts) > 2 and parts[2] != "None" else "")
    return out


def _wait_for_first_worker(cluster, client, wait_s: float, log_directory: str | None) -> None:
    end = time.monotonic() + wait_s
    seen_jobs = False
    while True:
        if client.nthreads():
            return
        ids = job_ids(cluster)
        seen_jobs = seen_jobs or bool(ids)
        if seen_jobs and not _queue_state(ids):
            logs = log_directory or "the current directory (slurm-<id>.out)"
            raise OnnxFeError(
                f"--cluster slurm: the worker job(s) {', '.join(ids)} ended before a Dask worker joined; "
                f"see their output in {logs}"
            )
        if time.monotonic() > end:
            states = _queue_state(ids)
            what = "; ".join(f"job {i}: {s}" for i, s in states.items()) or "no job submitted"
            raise OnnxFeError(
                f"--cluster slurm: no Dask worker joined in {wait_s:g} s ({what}); the jobs were cancelled. "
                "Raise --cluster-option wait=SECONDS for a busy queue"
            )
        time.sleep(1.0)
