"""Helpers of the execution tests: the zoo model they score, comparison of stored results, and shard functions
sent to worker processes (importable there: this folder is on their sys.path). Not named conftest: the tests'
root conftest module would shadow it in worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/digits_vgg/converged/model.onnx"
DATA = ROOT / "models/data/digits/test"


def contents(result) -> dict:
    """Everything a run stores that depends on the inputs: per layer birth points, baselines, scores, activations;
    and scores.csv as bytes."""
    out = {"csv": result.scores_csv.read_bytes()}
    with h5py.File(result.results_h5, "r") as f:
        for k in f["layers"]:
            g = f["layers"][k]
            for name in (
                "birth_points",
                "mean_activation",
                "zero_fraction",
                "hrank",
                "activation_std",
                "feature_entropy",
                "weight_l1",
            ):
                out[f"{k}/{name}"] = g[name][()]
        for k in f.get("activations", {}):
            out[f"act/{k}"] = f["activations"][k][()]
        out["n_done"] = int(f.attrs["n_done"])
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert v.dtype == got[k].dtype and np.array_equal(got[k], v, equal_nan=v.dtype.kind == "f"), k
        else:
            assert got[k] == v, k


def crash_once(marker: str, fn, plan, start: int, stop: int, workers: int):
    """Compute the shard, then, on the first call anywhere (the marker file does not exist yet), kill this worker
    process before it can hand the result back: the shard is lost mid-way and must be computed again."""
    r = fn(plan, start, stop, workers)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return r
    os.write(fd, f"{os.getpid()} {start} {stop}".encode())
    os.close(fd)
    os._exit(17)


class CrashOnce:
    """An executor wrapper whose shard function kills its worker once (see :func:`crash_once`)."""

    def __init__(self, inner, marker):
        self.inner, self.marker = inner, str(marker)
        self.slots, self.remote = inner.slots, inner.remote

    def map(self, fn, plan, bounds, workers, on_done=None):
        import functools

        return self.inner.map(functools.partial(crash_once, self.marker, fn), plan, bounds, workers, on_done)

    def close(self):
        self.inner.close()
