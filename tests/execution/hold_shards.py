"""Dask worker preload of the cluster tests (``dask worker --preload tests/execution/hold_shards.py``).

With ``ONNX_FE_TEST_SHARDS`` set to a folder, every shard this worker starts leaves ``started-<start>-<pid>`` there
and every shard it finishes ``done-<start>``; shards from image ``ONNX_FE_TEST_HOLD_FROM`` on wait for a file
``go`` in that folder before they compute. A test can then kill a worker or the scheduler while shards are surely
running and the ones before them surely written. The shard function the driver sends is pickled by reference
(``onnx_fe.experiments.score.compute_shard``), so the worker resolves it to this wrapper; nothing else changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnx_fe.experiments.score as _score

_DIR = os.environ.get("ONNX_FE_TEST_SHARDS")
_HOLD_FROM = int(os.environ.get("ONNX_FE_TEST_HOLD_FROM", "-1"))
# Dask may import a preload more than once: wrap the original function, never the wrapper
_compute = getattr(_score.compute_shard, "__wrapped__", _score.compute_shard)


def compute_shard(plan, start, stop, workers=1):
    d = Path(_DIR)
    (d / f"started-{start}-{os.getpid()}").touch()
    if 0 <= _HOLD_FROM <= start:
        while not (d / "go").exists():
            time.sleep(0.05)
    r = _compute(plan, start, stop, workers)
    (d / f"done-{start}").touch()
    return r


compute_shard.__wrapped__ = _compute
if _DIR:
    _score.compute_shard = compute_shard
