"""Birth points of feature maps: the methods, their parameters and the batch entry point (pure math, no I/O).

See :mod:`onnx_fe.topology.cubical` and :mod:`onnx_fe.topology.clique` for the two constructions. The cubical
construction has two engines with identical results: ``early`` (default, :mod:`onnx_fe.topology.early`, stops at the
first hole) and ``cripser`` (the full persistence diagram; the oracle in tests).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InvalidMapError
from .cubical import cubical_batch

METHODS = ("cubical", "clique")
ENGINES = ("early", "cripser")  # cubical engines, same birth points; the first is the default
CUBICAL_DEFAULTS = {"resolution": 100, "threshold": 75}  # threshold chosen in docs/reproduction.md
CLIQUE_DEFAULTS = {"threshold": 50, "max_edge_density": 0.8}


def method_params(method: str, **params) -> dict:
    """Full parameter set of a method (defaults filled in), refusing unknown names or values."""
    if method not in METHODS:
        raise InvalidMapError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    defaults = CUBICAL_DEFAULTS if method == "cubical" else CLIQUE_DEFAULTS
    unknown = set(params) - set(defaults)
    if unknown:
        raise InvalidMapError(
            f"method {method!r} takes no parameter {', '.join(sorted(unknown))} (has: {', '.join(defaults)})"
        )
    out = {k: (defaults[k] if params.get(k) is None else params[k]) for k in defaults}
    if method == "cubical":
        out = {k: int(v) for k, v in out.items()}
        if out["resolution"] < 1:
            raise InvalidMapError("resolution must be at least 1")
        if not 1 <= out["threshold"] <= out["resolution"]:
            raise InvalidMapError(f"threshold must lie in 1..resolution ({out['resolution']})")
    else:
        out["threshold"] = int(out["threshold"])
        out["max_edge_density"] = float(out["max_edge_density"])
        if out["threshold"] < 0:
            raise InvalidMapError("threshold must be non-negative")
        if not 0 < out["max_edge_density"] <= 1:
            raise InvalidMapError("max_edge_density must lie in (0, 1]")
    return out


def _as_maps(maps) -> np.ndarray:
    a = np.asarray(maps)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InvalidMapError(f"maps must have shape (N, H, W), got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InvalidMapError(f"maps must be real numbers, got dtype {a.dtype}")
    if a.size and not np.isfinite(a).all():
        bad = int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).argmax())
        raise InvalidMapError(f"map {bad} contains NaN or ±inf; birth points need finite values")
    return a


def check_engine(engine: str | None) -> str:
    """The cubical engine to use (None → the default), refusing unknown names."""
    if engine is None:
        return ENGINES[0]
    if engine not in ENGINES:
        raise InvalidMapError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


def birth_points(
    maps, method: str = "cubical", workers: int | None = 1, engine: str | None = None, **params
) -> np.ndarray:
    """Birth point of every map: an array (N, H, W) (or one (H, W) map) → int32 (N,).

    ``workers`` > 1 computes maps in threads; the compiled kernels of both methods (and cripser) release the GIL,
    so both scale across cores. The result never depends on ``workers``. ``params`` are the method's parameters
    (cubical: resolution=100, threshold=75; clique: threshold=50, max_edge_density=0.8). ``engine`` picks how the
    cubical method is computed, with identical results: "early" (default) or "cripser"; the clique method has one
    engine and ignores it.
    """
    p = method_params(method, **params)
    engine = check_engine(engine)
    a = _as_maps(maps)
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if method == "clique":
        if a.shape[1] != a.shape[2]:
            raise InvalidMapError(f"the clique method needs square maps, got {a.shape[1]}×{a.shape[2]}")
        from .clique import clique_birth_points

        fn = lambda chunk: clique_birth_points(chunk, **p)
    elif engine == "early" and a.dtype.itemsize <= 8:  # wider floats (long double): the cripser engine, same result
        from .early import early_birth_points

        fn = lambda chunk: early_birth_points(chunk, **p)
    else:
        fn = lambda chunk: cubical_batch(chunk, **p)
    if not workers:
        from ..execution.cpus import usable_cpus  # here: execution imports the pipeline, which imports this module

        workers = usable_cpus()
    workers = max(1, int(workers))
    if workers == 1 or n < 2 * workers:
        return np.asarray(fn(a), dtype=np.int32)
    bounds = np.linspace(0, n, min(n, workers * 4) + 1).astype(int)
    chunks = [a[s:e] for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    with ThreadPoolExecutor(workers) as ex:
        parts = list(ex.map(fn, chunks))
    return np.concatenate(parts).astype(np.int32, copy=False)
