"""Execution: how the shards of a run are computed.

An executor maps ``fn(plan, start, stop, workers)`` over shard bounds and yields the results **in order**; the
driver writes them as they arrive. :class:`SerialExecutor` runs them one after the other in this process. Process
pools and Dask clusters plug in here with the same ``map`` signature.
"""

from .local import SerialExecutor

__all__ = ["SerialExecutor"]
