"""Reproduction v2, statistics (pure math, no I/O): the quantities and effects of docs/preregistration.md.

Every quantity is computed under P weightings of the images at once: row 0 of a weight matrix is the data as they
are (every image once), rows 1..B are stratified bootstrap resamples (image multiplicities, drawn per class). A
network's value under every row comes from the same exact integer histograms as onnx-fe's own statistics
(``onnx_fe.scores.compare._class_unit_values``), so row 0 equals the package's ``feature_entropy`` and
``fe_rarefied`` for every cell.

Aggregation (pre-registration, "Common definitions"): a unit's value is the mean over its cells (class × unit) with a
value, a layer's the mean over its units with a value, a network's the mean over the layers a claim names.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from onnx_fe.scores.compare import _class_unit_values

QUANTITIES = ("fe_rarefied", "fe", "ineffectiveness", "birth_rate")


def stratified_weights(labels: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + B, N) image multiplicities: row 0 all ones, then B resamples with replacement within each class."""
    labels = np.asarray(labels)
    n = labels.size
    w = np.zeros((1 + n_resamples, n), dtype=np.int64)
    w[0] = 1
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        draws = rng.integers(0, idx.size, size=(n_resamples, idx.size))
        counts = np.zeros((n_resamples, idx.size), dtype=np.int64)
        np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
        w[1:, idx] = counts
    return w


def subsample_weights(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) 0/1 weights: ``fraction`` of every class's images drawn without replacement."""
    labels = np.asarray(labels)
    w = np.zeros(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        w[rng.choice(idx, int(round(fraction * idx.size)), replace=False)] = 1
    return w


def cell_values(bp: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every quantity of every cell under every weighting: arrays (P, K, C), K = classes in label order.

    fe_rarefied is NaN where a cell has fewer than k weighted births; the others are defined for every class with
    images (fe = 0 and ineffectiveness = 0 for a cell without births, as onnx-fe computes them).
    """
    bp = np.asarray(bp)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    p, c = weights.shape[0], bp.shape[1]
    out = {q: np.full((p, classes.size, c), np.nan) for q in QUANTITIES}
    for j, cl in enumerate(classes):
        sel = labels == cl
        rows = np.ascontiguousarray(bp[sel]).astype(np.int64)
        w = np.ascontiguousarray(weights[:, sel])
        fe, fr = _class_unit_values(rows, w, k)
        tot = w.sum(axis=1).astype(np.float64)
        births = w @ (rows > 0).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            br = births / tot[:, None]
            ineff = np.where(br > 0, fe / br, fe)
        out["fe"][:, j], out["fe_rarefied"][:, j], out["birth_rate"][:, j], out["ineffectiveness"][:, j] = (
            fe,
            fr,
            br,
            ineff,
        )
    return out


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    s = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def unit_values(cells: np.ndarray) -> np.ndarray:
    """(P, K, C) cells → (P, C): each unit's mean over its classes with a value."""
    return _nanmean(cells, axis=1)


def layer_value(cells: np.ndarray) -> np.ndarray:
    """(P, K, C) cells → (P,): the mean over units with a value of each unit's mean over classes."""
    return _nanmean(unit_values(cells), axis=1)


def coverage(cells: np.ndarray) -> float:
    """Share of the cells with a value in the data as they are (row 0)."""
    return float(np.isfinite(cells[0]).mean()) if cells[0].size else float("nan")


def mean_over(values: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean of (P,) arrays over those that are finite (NaN where none is)."""
    return _nanmean(np.stack(values, axis=0), axis=0)


def ols_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x for each row of y (P, L); points with NaN y are left out of that row."""
    x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    ok = np.isfinite(y)
    n = ok.sum(axis=1)
    xs = np.where(ok, x[None, :], 0.0)
    ys = np.where(ok, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(axis=1) / n
        my = ys.sum(axis=1) / n
        dx = np.where(ok, x[None, :] - mx[:, None], 0.0)
        sxy = (dx * np.where(ok, y - my[:, None], 0.0)).sum(axis=1)
        sxx = (dx * dx).sum(axis=1)
        return np.where((n >= 2) & (sxx > 0), sxy / sxx, np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ between a fixed x (L,) and each row of y (P, L) (average ranks for ties); NaN where a row has a NaN
    or no spread."""
    x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    out = np.full(y.shape[0], np.nan)
    ok = np.isfinite(y).all(axis=1)
    if not ok.any():
        return out
    rx = rankdata(x)
    ry = rankdata(y[ok], axis=1)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[ok] = np.where(den > 0, (ry * rx[None, :]).sum(axis=1) / den, np.nan)
    return out


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean a − mean b) / pooled SD, over the finite values of each."""
    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return float("nan")
    s = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / s) if s > 0 else float("nan")


def seed_summary(per_seed: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """From each seed's effect under every weighting (P,), the per-seed point effects (S,), the seed mean under
    every resample (B,) and v_img, the variance of that mean over the resamples (ddof 1).

    A seed counts when its point effect (row 0) is finite; under a resample, the mean is over those of the counted
    seeds whose effect is finite there.
    """
    seeds = sorted(s for s, e in per_seed.items() if np.isfinite(e[0]))
    if not seeds:
        return np.array([]), np.array([]), float("nan")
    e = np.stack([per_seed[s] for s in seeds])
    m = _nanmean(e[:, 1:], axis=0)
    m = m[np.isfinite(m)]
    v = float(m.var(ddof=1)) if m.size > 1 else float("nan")
    return e[:, 0], m, v
