"""Execution: where the shards of a run are computed.

An executor has one method, ``map(fn, plan, bounds, workers, on_done=None)``: it computes
``fn(plan, start, stop, workers)`` for every ``(start, stop)`` in ``bounds`` and yields the results **in the order of
bounds**, so the driver can write them as they come; ``on_done(start, stop)`` is called (in the caller's thread) as
each shard finishes, in whatever order they finish (progress). Executors that run shards elsewhere send only
``plan.key()`` (the config and two digests) and the bounds; each worker process rebuilds the plan once
(:meth:`PlanKey.plan <onnx_fe.experiments.score.PlanKey.plan>`) and checks that it sees the driver's model and images.
At most a fixed number of shards is in flight, so the driver's memory stays bounded whatever the number of images.

- :class:`SerialExecutor`: one shard after the other in this process, ``workers`` threads for birth points.
- :class:`ProcessExecutor`: a pool of ``workers`` local processes, one shard each at a time (the default for
  ``-j`` > 1).
- :class:`~onnx_fe.execution.dask.DaskExecutor`: the workers of a Dask cluster (``--scheduler``, ``client=``), or of
  one started as SLURM jobs (``--cluster slurm``, :mod:`onnx_fe.execution.slurm`).

Every executor gives the same results, bit for bit. Executors are context managers (``close()`` frees workers).
"""

from __future__ import annotations

from .local import ProcessExecutor, SerialExecutor, prestart


def make_executor(
    workers: int, client=None, scheduler: str | None = None, cluster: str | None = None, cluster_options=(), log=None
):
    """The executor a run uses: a Dask ``client`` or ``scheduler`` address if given; Dask workers started as SLURM
    jobs for ``cluster="slurm"`` (``cluster_options``: checked ``(key, value)`` pairs, see
    :mod:`onnx_fe.execution.slurm`); else a pool of ``workers`` processes, else (``workers`` = 1) this process."""
    if client is not None or scheduler is not None:
        from .dask import DaskExecutor

        return DaskExecutor(client) if client is not None else DaskExecutor.connect(scheduler)
    if cluster == "slurm":
        from . import slurm

        return slurm.start(cluster_options, log=log)
    if cluster is not None:
        raise ValueError(f"unknown cluster {cluster!r}")
    if workers > 1:
        return ProcessExecutor(workers)
    return SerialExecutor()


def will_use_processes(
    workers: int | None, client=None, scheduler: str | None = None, cluster: str | None = None
) -> bool:
    """Whether :func:`make_executor` will start local worker processes (``workers`` None: every usable core, :func:`~onnx_fe.execution.cpus.usable_cpus`)."""
    from .cpus import usable_cpus

    return client is None and scheduler is None and cluster is None and (workers or usable_cpus()) > 1


def prestart_for(workers: int | None, client=None, scheduler: str | None = None, cluster: str | None = None) -> bool:
    """Start the local pool's fork server now (see :func:`~onnx_fe.execution.local.prestart`) when these settings
    certainly run one: ``workers`` > 1 given, no Dask. (The default -j decides only once the plan is built.) Returns
    whether it did."""
    if workers is None or not will_use_processes(workers, client, scheduler, cluster):
        return False
    prestart()
    return True


def __getattr__(name):
    if name == "DaskExecutor":
        from .dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DaskExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "make_executor",
    "prestart",
    "prestart_for",
    "will_use_processes",
]
