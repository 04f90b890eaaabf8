"""The cubical construction (default): birth points from cubical persistence of the map's dense rank.

cripser with ``top_dim=True`` (measured: the growing set is 4-connected, pixels that touch only at a corner do not
close a loop) computes the superlevel filtration of the map's *dense rank* (the largest value enters first; equal
values enter together). Working on ranks makes the result identical for any strictly increasing transform of the
map, positive rescaling included. The birth point is the first filtration step at which an H1 class of positive
persistence is born, measured as the fraction of the map's pixels that have entered, quantised into ``resolution``
steps: ``ceil(resolution * entered / H·W)``. Steps above ``threshold`` (default 75) count as "no birth point" (0).
See docs/method.md. Pure math, no I/O.

This module is the ``cripser`` engine, the oracle; the default ``early`` engine (:mod:`onnx_fe.topology.early`) gives
the same birth points without computing the diagram.
"""

from __future__ import annotations

import numpy as np


def dense_rank(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense rank of every value of each map, from the largest (0) down, ties sharing a rank.

    ``maps`` (N, H, W) → (ranks (N, H, W) float64, sorted ranks (N, H·W) int64): row n of the
    second array lists map n's ranks in ascending order, so the number of pixels present once
    rank b has entered is ``searchsorted(sorted[n], b, side="right")``.
    """
    n = len(maps)
    flat = maps.reshape(n, -1)
    # largest first; ties may come in any order: they get one rank. (Reversing an ascending sort, not sorting the
    # negated values: negation wraps unsigned integers and the smallest signed one.)
    order = np.argsort(flat, axis=1)[:, ::-1]
    vals = np.take_along_axis(flat, order, axis=1)
    srt = np.zeros(vals.shape, dtype=np.int64)
    np.cumsum(vals[:, 1:] != vals[:, :-1], axis=1, out=srt[:, 1:])
    ranks = np.empty(vals.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, srt, axis=1)
    return ranks.reshape(maps.shape), srt


def cubical_batch(maps: np.ndarray, resolution: int, threshold: int) -> np.ndarray:
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


def cubical_birth_point(m: np.ndarray, resolution: int = 100, threshold: int = 75, engine: str | None = None) -> int:
    """Birth point of one finite 2-D map (0 = none) by either engine ("early", the default, or "cripser")."""
    from .birth import birth_points

    m = np.asarray(m, dtype=np.float64)
    return int(birth_points(m[None], engine=engine, resolution=resolution, threshold=threshold)[0])
