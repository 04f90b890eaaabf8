"""How much of a layer's feature entropy is activity: rank correlations over units (pure math, no I/O).

For every layer, layers.csv holds Spearman's ρ over the layer's units between each unit's class-mean feature
entropy and its class-mean mean activation (``rho_fe_mean_activation``), and between FE and the class-mean birth
rate (``rho_fe_birth_rate``). ρ near ±1 means FE orders the layer's units as the cheap statistic does and says
little beyond it; ρ near 0 means the two orders are unrelated (FE may still measure something else, or noise).

* Only units where both values are finite take part. ρ is NaN with fewer than ``MIN_UNITS`` (5) such units or
  when either side is constant over them. Ties get average ranks (as ``scipy.stats.spearmanr``).
* The CI is a percentile bootstrap over units: B resamples of the n units with replacement
  (:func:`unit_resamples`: ``numpy.random.default_rng([tag, seed, layer_index])``, B × n draws of
  ``integers(0, n)``), ρ recomputed on each resample, and the (1 − level)/2 and (1 + level)/2 quantiles (linear
  interpolation) of the resampled ρ taken. Resamples where a side is constant (ρ undefined) are left out. Both
  correlations of a layer use the same resamples when they have the same units. No resamples: NaN bounds.
* Vectorised: a resample is a vector of unit multiplicities w. A unit's average rank within the resample is
  (multiplicity of all smaller values) + (multiplicity of its own value + 1) / 2, a cumulative sum over the
  distinct values; ρ is the w-weighted Pearson correlation of these ranks (their weighted mean is (n + 1) / 2).
  So B resamples cost a few (B, n) array operations and no Python loop per resample; the numbers equal
  ``spearmanr`` on the resampled values up to rounding (about 1e-15).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .statistics import Interval, _check_level, spearman

MIN_UNITS = 5
_TAG_ACTIVITY = 0x0FE_AC71
_CHUNK = 1 << 21  # resample × unit entries computed at once (memory only; never changes a number)


def _chunks(n: int, n_resamples: int, seed: int, key: int) -> Iterator[np.ndarray]:
    """The resamples of n units, (b, n) arrays of unit indices, in blocks whose size depends on n alone."""
    rng = np.random.default_rng([_TAG_ACTIVITY, int(seed), int(key)])
    step = max(1, _CHUNK // max(n, 1))
    for b0 in range(0, n_resamples, step):
        yield rng.integers(0, n, size=(min(step, n_resamples - b0), n))


def unit_resamples(n: int, n_resamples: int, seed: int = 0, key: int = 0) -> np.ndarray:
    """All bootstrap resamples of n units, (n_resamples, n) unit indices (what :func:`spearman_ci` draws)."""
    parts = list(_chunks(n, n_resamples, seed, key))
    return np.concatenate(parts) if parts else np.zeros((0, n), dtype=np.int64)


def _group_ranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of each unit within resamples given by multiplicities w (b, n) → (b, n)."""
    _, g = np.unique(values, return_inverse=True)
    g = g.ravel()
    n_groups = int(g.max()) + 1
    gw = _group_sum(g, w, n_groups)
    below = np.cumsum(gw, axis=1) - gw
    return (below + (gw + 1.0) / 2.0)[:, g]


def _group_sum(g: np.ndarray, w: np.ndarray, n_groups: int) -> np.ndarray:
    """(b, n) weights summed by group label g (n,) → (b, n_groups), exactly (integer-valued weights)."""
    b, n = w.shape
    flat = (np.arange(b)[:, None] * n_groups + g[None, :]).ravel()
    return np.bincount(flat, weights=w.ravel(), minlength=b * n_groups).reshape(b, n_groups)


def _resampled_rho(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman's ρ of (x[idx[r]], y[idx[r]]) for every resample r of idx (b, n); NaN where a side is constant."""
    b, n = idx.shape
    w = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
    mid = (n + 1) / 2.0
    rx = _group_ranks(x, w) - mid
    ry = _group_ranks(y, w) - mid
    sxy = (w * rx * ry).sum(axis=1)
    sxx = (w * rx * rx).sum(axis=1)
    syy = (w * ry * ry).sum(axis=1)
    den = np.sqrt(sxx * syy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, sxy / np.where(den > 0, den, 1.0), np.nan)


def spearman_ci(x, y, *, level: float = 0.95, n_resamples: int = 1000, seed: int = 0, key: int = 0) -> Interval:
    """Spearman's ρ of x and y over the units where both are finite, with a percentile bootstrap CI over units
    (see the module docstring). ``key`` (the layer index) keys the resamples. Interval(estimate, low, high, n)."""
    level = _check_level(level)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    nan = float("nan")
    if n < MIN_UNITS:
        return Interval(nan, nan, nan, n)
    est = spearman(x, y)
    if not np.isfinite(est) or n_resamples <= 0:
        return Interval(est, nan, nan, n)
    rho = np.concatenate([_resampled_rho(x, y, idx) for idx in _chunks(n, int(n_resamples), seed, key)])
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return Interval(est, nan, nan, n)
    lo, hi = np.quantile(rho, [(1 - level) / 2, (1 + level) / 2])
    return Interval(est, float(lo), float(hi), n)


def fe_activity_columns(
    fe, mean_activation, birth_rate, *, level: float, n_resamples: int, seed: int, layer_index: int
) -> dict:
    """The six layers.csv columns of one layer from its units' class-mean FE, mean activation and birth rate
    (each (C,), NaN where undefined): ``rho_fe_mean_activation``, ``rho_fe_birth_rate`` and their
    ``_ci_low``/``_ci_high``."""
    out = {}
    for name, other in (("mean_activation", mean_activation), ("birth_rate", birth_rate)):
        iv = spearman_ci(fe, other, level=level, n_resamples=n_resamples, seed=seed, key=layer_index)
        out[f"rho_fe_{name}"], out[f"rho_fe_{name}_ci_low"], out[f"rho_fe_{name}_ci_high"] = (
            iv.estimate,
            iv.low,
            iv.high,
        )
    return out
