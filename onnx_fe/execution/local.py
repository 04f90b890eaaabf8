"""Executors that run on this machine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


class SerialExecutor:
    """Run each shard in turn in this process (``workers`` threads are left to the shard function)."""

    def map(self, fn: Callable[..., Any], plan: Any, bounds: Iterable[tuple[int, int]], workers: int) -> Iterator[Any]:
        for start, stop in bounds:
            yield fn(plan, start, stop, workers)
