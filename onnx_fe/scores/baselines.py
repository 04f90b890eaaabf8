"""Per-map magnitude baselines the field compares unit-importance indicators with (pure math, no I/O).

Each function takes a stack of one unit's maps, shape (n, H, W), and gives one value per map; a value depends on
its own map alone, so the chunk a map is computed in (batch size, shard size, workers) never changes it.

* ``hrank``: the matrix rank of the map (HRank, Lin et al., CVPR 2020, who rank a filter by the average rank of
  its feature maps). It is what ``numpy.linalg.matrix_rank`` gives for the map as float32: the singular values
  S of the float32 map (``numpy.linalg.svd(..., compute_uv=False)``, which runs LAPACK's float64 ``dgesdd`` on the
  exact float64 copy of the map and rounds the values to float32), counted above the float32 tolerance
  ``S.max() · max(H, W) · eps(float32)``. float32 because the maps are float32: their own rounding
  (≈ 1e-7 relative) would make nearly every low-rank map full rank against a float64 tolerance, and HRank itself
  took the rank of float32 maps. An all-zero map has rank 0 (found without an SVD). The SVD runs on one BLAS thread (threadpoolctl):
  the shards already run in parallel, and a multithreaded SVD of small matrices is slower on a busy machine.
* ``activation_std``: the population standard deviation (ddof 0) of the map's H·W values, accumulated in
  float64 (``numpy.std(map, dtype=float64)``), stored as float32 like the mean activation. The lesson of the
  critique of "neural persistence": a topological summary may track little more than the spread of the values.

A unit's score in a class is the mean of its per-image values over the class's images (as for
``mean_activation``); see ``onnx_fe.io.results`` (scores.csv) and ``onnx_fe.scores.ranking``.
"""

from __future__ import annotations

import threading

import numpy as np

_CONTROLLER = None
_LOCK = threading.Lock()


def _one_blas_thread():
    """A context in which BLAS/LAPACK runs on one thread (a no-op when threadpoolctl cannot be imported)."""
    global _CONTROLLER
    with _LOCK:
        if _CONTROLLER is None:
            try:
                from threadpoolctl import ThreadpoolController

                _CONTROLLER = ThreadpoolController()
            except Exception:  # threadpoolctl missing or unable to inspect the process: leave BLAS as it is
                _CONTROLLER = False
    if _CONTROLLER is False:
        from contextlib import nullcontext

        return nullcontext()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _stack(maps) -> np.ndarray:
    m = np.asarray(maps)
    if m.ndim != 3:
        raise ValueError(f"expected a stack of maps (n, H, W), got shape {m.shape}")
    return m


def map_ranks(maps, workers: int = 1) -> np.ndarray:
    """Matrix rank of each float32 map of a stack (n, H, W) → int32 (n,), as ``numpy.linalg.matrix_rank`` of each
    map cast to float32 (its default tolerance). ``workers`` > 1 splits the maps between that many threads (LAPACK
    runs without the GIL, each call on one BLAS thread); a map's rank never depends on it."""
    m = _stack(maps).astype(np.float32, copy=False)
    n, h, w = m.shape
    if n == 0 or h == 0 or w == 0:
        return np.zeros(n, dtype=np.int32)
    out = np.zeros(n, dtype=np.int32)
    live = np.flatnonzero(m.any(axis=(1, 2)))  # an all-zero map (common after a ReLU) has rank 0: no SVD needed
    if len(live) == 0:
        return out
    sub = m[live] if len(live) < n else m
    workers = max(1, int(workers or 1))
    with _one_blas_thread():  # entered once, here: the limit is process-wide, so the threads below never change it
        if workers == 1 or len(sub) < 2 * workers:
            s = _singular_values(sub)
        else:
            from concurrent.futures import ThreadPoolExecutor

            cut = np.linspace(0, len(sub), workers + 1).astype(int)
            with ThreadPoolExecutor(workers) as ex:
                s = np.concatenate(list(ex.map(_singular_values, [sub[a:b] for a, b in zip(cut[:-1], cut[1:])])))
    rtol = np.float32(max(h, w)) * np.finfo(np.float32).eps  # exact: max(H, W) times a power of two
    tol = s.max(axis=-1, keepdims=True) * rtol
    out[live] = np.count_nonzero(s > tol, axis=-1)
    return out


def _singular_values(m: np.ndarray) -> np.ndarray:
    """Singular values of each float32 map, descending → float32 (n, min(H, W)). NumPy computes them in float64
    (LAPACK ``dgesdd``, values only, on the exact float64 copy of each map) and rounds them to float32; each map's
    values are computed on their own, whatever other maps share the call."""
    return np.linalg.svd(m, compute_uv=False)


def map_std(maps, mean=None) -> np.ndarray:
    """Population standard deviation of each map of a stack (n, H, W), accumulated in float64 → float32 (n,).
    ``mean``: the maps' float64 means as ``maps.mean(axis=(1, 2), dtype=numpy.float64)`` gives them, when the caller
    has them already (NumPy then skips that pass; the same numbers, NumPy's own ``mean=`` argument)."""
    m = _stack(maps)
    if m.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    if mean is not None:
        mean = np.asarray(mean, dtype=np.float64).reshape(len(m), 1, 1)
        return np.std(m, axis=(1, 2), dtype=np.float64, mean=mean).astype(np.float32)
    return np.std(m, axis=(1, 2), dtype=np.float64).astype(np.float32)
