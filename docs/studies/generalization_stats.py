"""Statistics of the generalisation study (docs/preregistration_generalization.md): Kendall's τ-b with
multiplicities, the granulated Ψ, the bootstrap over networks and Holm's correction. NumPy only, no I/O."""

from __future__ import annotations

import math

import numpy as np


def _sign(a: np.ndarray) -> np.ndarray:
    """Sign of differences, with +inf − +inf (two non-finite values of a measure) a tie."""
    s = np.sign(a)
    return np.where(np.isnan(s), 0.0, s)


def kendall_tau_b(x, y, w=None) -> float:
    """Kendall's τ-b of x and y, each item counted w_i times (integer multiplicities; copies tie with each other).

    +inf values are allowed (above every finite value, tied with each other); an item with a NaN is left out.
    Equal to scipy.stats.kendalltau(x, y) (variant 'b') when w is all ones and on the data repeated w_i times."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y)) & (w > 0)
    x, y, w = x[keep], y[keep], w[keep]
    if len(x) < 1:
        return float("nan")
    with np.errstate(invalid="ignore"):  # inf − inf: a tie
        sx = _sign(x[:, None] - x[None, :])
        sy = _sign(y[:, None] - y[None, :])
    ww = w[:, None] * w[None, :]  # pairs of copies of two items (copies of one item tie: sign 0)
    iu = np.triu_indices(len(x), 1)
    s = float((sx * sy * ww)[iu].sum())
    n_pairs = float(w.sum() * (w.sum() - 1) / 2)
    tx = float(((sx == 0) * ww)[iu].sum() + (w * (w - 1) / 2).sum())  # pairs tied in x (incl. copies)
    ty = float(((sy == 0) * ww)[iu].sum() + (w * (w - 1) / 2).sum())
    den = math.sqrt((n_pairs - tx) * (n_pairs - ty))
    return s / den if den > 0 else float("nan")


def axis_groups(bits: list[str]) -> dict[int, list[tuple[int, int]]]:
    """For each axis, the pairs (i, j) of networks whose bit strings differ in that axis only."""
    out: dict[int, list[tuple[int, int]]] = {}
    for i in range(len(bits)):
        for j in range(i + 1, len(bits)):
            d = [k for k, (a, b) in enumerate(zip(bits[i], bits[j])) if a != b]
            if len(d) == 1:
                out.setdefault(d[0], []).append((i, j))
    return out


def psi(m, g, groups: dict[int, list[tuple[int, int]]], w=None) -> tuple[float, dict[int, float]]:
    """Granulated Ψ: the mean over axes of ψ_i, the weighted mean of τ over axis i's pairs (weight w_a · w_b).

    A pair's τ is sign(Δm)·sign(Δg) (τ-b of two items; 0 at a tie). A pair with a NaN member is left out; an axis
    whose pairs all have weight 0 is left out of Ψ. Returns (Ψ, {axis: ψ_i})."""
    m, g = np.asarray(m, dtype=np.float64), np.asarray(g, dtype=np.float64)
    w = np.ones(len(m)) if w is None else np.asarray(w, dtype=np.float64)
    per = {}
    for axis, pairs in sorted(groups.items()):
        num = den = 0.0
        for a, b in pairs:
            if np.isnan([m[a], m[b], g[a], g[b]]).any():
                continue
            wt = w[a] * w[b]
            if wt == 0:
                continue
            with np.errstate(invalid="ignore"):
                num += wt * float(_sign(np.array(m[a] - m[b])) * _sign(np.array(g[a] - g[b])))
            den += wt
        if den > 0:
            per[axis] = num / den
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def tau_overall(m, g, dataset, w=None) -> float:
    """The mean over datasets of Kendall's τ-b within each dataset."""
    dataset = np.asarray(dataset)
    m, g = np.asarray(m, dtype=np.float64), np.asarray(g, dtype=np.float64)
    w = np.ones(len(m)) if w is None else np.asarray(w, dtype=np.float64)
    taus = [kendall_tau_b(m[dataset == d], g[dataset == d], w[dataset == d]) for d in sorted(set(dataset))]
    taus = [t for t in taus if np.isfinite(t)]
    return float(np.mean(taus)) if taus else float("nan")


def resample_weights(dataset, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(B, N) multiplicities: in each resample every dataset's networks are drawn with replacement."""
    dataset = np.asarray(dataset)
    rng = np.random.default_rng(seed)
    out = np.zeros((n_resamples, len(dataset)), dtype=np.int64)
    for b in range(n_resamples):
        for d in sorted(set(dataset)):
            idx = np.flatnonzero(dataset == d)
            out[b] += np.bincount(rng.choice(idx, len(idx), replace=True), minlength=len(dataset))
    return out


def bootstrap(stat, weights: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile CI of stat(w) over the resamples' weights, and the two-sided bootstrap p-value of 0."""
    return interval([stat(w) for w in weights], level)


def interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile CI of a statistic's values over the resamples (non-finite values left out), and its two-sided
    bootstrap p-value of 0: 2 · min(share ≤ 0, share ≥ 0), at most 1."""
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    p = min(1.0, 2 * min(np.mean(vals <= 0), np.mean(vals >= 0)))
    return float(lo), float(hi), float(p)


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    k, running = len(order), 0.0
    for r, i in enumerate(order):
        running = max(running, min(1.0, (k - r) * p[i]))
        out[i] = running
    return out
