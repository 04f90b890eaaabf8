"""Stage 4 — topology: birth points of feature maps (pure math, no I/O).

``cubical`` (default): cubical persistent homology (cripser with
``top_dim=True``; measured: the growing set is 4-connected, pixels that touch
only at a corner do not close a loop) of the superlevel
filtration of the map's *dense rank* (the largest value enters first; equal
values enter together). Working on ranks makes the result identical for any
strictly increasing transform of the map, positive rescaling included. The
birth point is the first filtration step at which an H1 class of positive
persistence is born, measured as the fraction of the map's pixels that have
entered, quantised into ``resolution`` steps: ``ceil(resolution * entered / H·W)``.
Steps above ``threshold`` (default 75) count as "no birth point" (0), like the
reference's absolute threshold of 50 for the clique construction. See docs/method.md.

``clique``: the paper's construction (flag complex of the symmetrised map),
exact to the authors' reference; see :mod:`onnx_fe.clique`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import OnnxFeError

METHODS = ("cubical", "clique")
CUBICAL_DEFAULTS = {"resolution": 100, "threshold": 75}  # threshold chosen in docs/reproduction.md
CLIQUE_DEFAULTS = {"threshold": 50, "max_edge_density": 0.8}


class InvalidMapError(OnnxFeError, ValueError):
    """Maps or parameters that cannot be filtered (NaN, ±inf, wrong shape, bad parameter)."""


def method_params(method: str, **params) -> dict:
    """Full parameter set of a method (defaults filled in), refusing unknown names or values."""
    if method not in METHODS:
        raise InvalidMapError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    defaults = CUBICAL_DEFAULTS if method == "cubical" else CLIQUE_DEFAULTS
    unknown = set(params) - set(defaults)
    if unknown:
        raise InvalidMapError(f"method {method!r} takes no parameter {', '.join(sorted(unknown))} (has: {', '.join(defaults)})")
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


def dense_rank(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense rank of every value of each map, from the largest (0) down, ties sharing a rank.

    ``maps`` (N, H, W) → (ranks (N, H, W) float64, sorted ranks (N, H·W) int64): row n of the
    second array lists map n's ranks in ascending order, so the number of pixels present once
    rank b has entered is ``searchsorted(sorted[n], b, side="right")``.
    """
    n = len(maps)
    flat = maps.reshape(n, -1)
    order = np.argsort(-flat, axis=1)  # ties may come in any order: they get one rank
    vals = np.take_along_axis(flat, order, axis=1)
    srt = np.zeros(vals.shape, dtype=np.int64)
    np.cumsum(vals[:, 1:] != vals[:, :-1], axis=1, out=srt[:, 1:])
    ranks = np.empty(vals.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, srt, axis=1)
    return ranks.reshape(maps.shape), srt


def _cubical_batch(maps: np.ndarray, resolution: int, threshold: int) -> np.ndarray:
    """Birth points of finite maps (N, H, W); see the module docstring."""
    import cripser

    n, h, w = maps.shape
    out = np.zeros(n, dtype=np.int32)
    if n == 0 or h < 2 or w < 2:
        return out
    ranks, srt = dense_rank(maps)
    npix = h * w
    for i in range(n):
        if srt[i, -1] == 0:  # constant map: everything enters at once, no hole can persist
            continue
        ph = cripser.computePH(ranks[i], maxdim=1, top_dim=True)
        births = ph[(ph[:, 0] == 1) & (ph[:, 2] > ph[:, 1]), 1]
        if len(births) == 0:
            continue
        entered = int(np.searchsorted(srt[i], births.min(), side="right"))
        step = (resolution * entered + npix - 1) // npix  # ceil without float rounding
        if step <= threshold:
            out[i] = step
    return out


def cubical_birth_point(m: np.ndarray, resolution: int = 100, threshold: int = 75) -> int:
    """Birth point of one finite 2-D map (0 = none); see the module docstring."""
    return int(_cubical_batch(np.asarray(m, dtype=np.float64)[None], resolution, threshold)[0])


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


def birth_points(maps, method: str = "cubical", workers: int | None = 1, **params) -> np.ndarray:
    """Birth point of every map: an array (N, H, W) (or one (H, W) map) → int32 (N,).

    ``workers`` > 1 computes maps in threads; cripser releases the GIL so the
    cubical method scales, ripser does not (the clique method is fast enough
    on one thread). The result never depends on ``workers``. ``params`` are the method's parameters
    (cubical: resolution=100, threshold=75; clique: threshold=50, max_edge_density=0.8).
    """
    p = method_params(method, **params)
    a = _as_maps(maps)
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if method == "clique":
        if a.shape[1] != a.shape[2]:
            raise InvalidMapError(f"the clique method needs square maps, got {a.shape[1]}×{a.shape[2]}")
        from .clique import clique_birth_points

        fn = lambda chunk: clique_birth_points(chunk, **p)  # noqa: E731
    else:
        fn = lambda chunk: _cubical_batch(chunk, **p)  # noqa: E731
    workers = max(1, int(workers or os.cpu_count() or 1))
    if workers == 1 or n < 2 * workers:
        return np.asarray(fn(a), dtype=np.int32)
    bounds = np.linspace(0, n, min(n, workers * 4) + 1).astype(int)
    chunks = [a[s:e] for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    with ThreadPoolExecutor(workers) as ex:
        parts = list(ex.map(fn, chunks))
    return np.concatenate(parts).astype(np.int32, copy=False)
