"""How well an indicator predicts what a unit does: rank correlations with a ground truth, within layers.

Pure numbers, no I/O (``onnx_fe.experiments.validate`` reads the files). The definitions are the pre-registered ones
(docs/preregistration_validity.md, "Quantities"):

- **Spearman ρ per layer**: over the layer's units where both values are finite, average ranks for ties; NaN with
  fewer than ``MIN_UNITS`` units or a constant side.
- **Pooled within layers**: both sides ranked and standardised (mean 0, population SD 1) within each eligible layer;
  ρ = the mean over all their units of z_x·z_y, i.e. the unit-weighted mean of the per-layer ρs.
- **Partial ρ** of x and y given covariates: within-layer ranks of all of them, centred within each layer; the
  Pearson correlation of the OLS residuals of x and of y on the covariates (per layer, or pooled over layers).
  Computed from the cross-product matrix S of the centred ranks: the residual cross-products are the Schur
  complement S_aa − S_ab S_bb⁺ S_ba (a = x, y; b = the covariates).
- **Incremental gain**: 5-fold cross-validated OLS (with intercept) from within-layer standardised ranks; the
  pooled within-layer ρ of the out-of-fold prediction with the target, full features minus base features.

Every statistic is computed on a stack of samples at once: axis 0 of the arrays is the sample (the data itself, or
bootstrap resamples: units drawn with replacement within each layer, :func:`resample_indices`). Invalid entries
(a unit with a missing value) are NaN and drop out of that sample only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

MIN_UNITS = 5  # per-layer statistics need at least this many units
N_FOLDS = 5
BLOCK_VALUES = 2_000_000  # resamples are processed in blocks of about this many unit values (memory, not results)


# --------------------------------------------------------------------------- resampling and intervals


def resample_indices(sizes, resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap draws stratified by layer: for each layer (in the given order) an int (resamples, n) array of unit
    positions drawn with replacement, all from one ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), np.int64) for n in sizes]


def percentile_ci(replicates, level: float) -> tuple[float, float]:
    """The percentile interval of the finite bootstrap replicates (NaN, NaN when there is none)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return float(lo), float(hi)


def _blocks(resamples: int, n_values: int):
    step = max(1, BLOCK_VALUES // max(1, n_values))
    for b0 in range(0, resamples, step):
        yield slice(b0, min(resamples, b0 + step))


# --------------------------------------------------------------------------- ranks


def _joint(*arrays):
    """The arrays with every entry set to NaN where any of them is not finite, and the count of finite entries."""
    ok = np.ones(np.shape(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return [np.where(ok, a, np.nan) for a in arrays], ok.sum(axis=-1)


def ranks(a) -> np.ndarray:
    """Average ranks (1..n) along the last axis, NaN entries left out (and NaN)."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape[-1] == 0:
        return a.copy()
    return rankdata(a, axis=-1, nan_policy="omit")


def standardised(r) -> tuple[np.ndarray, np.ndarray]:
    """(z, sd): values minus their mean over the last axis, divided by the population SD (NaN entries ignored);
    z is 0 where the SD is 0 (a constant side carries no order)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.isfinite(r).sum(axis=-1, keepdims=True)
        mean = np.nansum(r, axis=-1, keepdims=True) / np.maximum(n, 1)
        d = r - mean
        sd = np.sqrt(np.nansum(d * d, axis=-1, keepdims=True) / np.maximum(n, 1))
        z = np.where(sd > 0, d / np.where(sd > 0, sd, 1.0), np.where(np.isfinite(r), 0.0, np.nan))
    return z, sd[..., 0]


# --------------------------------------------------------------------------- Spearman, per layer and pooled


def spearman_terms(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (..., n) samples of one layer: (Σ z_x z_y, n, eligible) over the units where both are finite, eligible
    when n ≥ MIN_UNITS and neither side is constant. ρ of the layer = Σ / n where eligible."""
    (x, y), n = _joint(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    zx, sx = standardised(ranks(x))
    zy, sy = standardised(ranks(y))
    s = np.nansum(zx * zy, axis=-1)
    ok = (n >= MIN_UNITS) & (sx > 0) & (sy > 0)
    return s, n, ok


def _rho(s, n, ok):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, s / np.maximum(n, 1), np.nan)


def _pool(terms) -> np.ndarray:
    """Pooled ρ per sample from the layers' (Σ, n, eligible): Σ over eligible layers of Σ / of n."""
    num = sum(np.where(ok, s, 0.0) for s, _, ok in terms)
    den = sum(np.where(ok, n, 0) for _, n, ok in terms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def spearman(x, y) -> float:
    """Spearman's ρ of one layer's units (average ranks; NaN with < MIN_UNITS finite pairs or a constant side)."""
    s, n, ok = spearman_terms(np.asarray(x, dtype=np.float64)[None], np.asarray(y, dtype=np.float64)[None])
    return float(_rho(s, n, ok)[0])


def pooled_spearman(xs, ys) -> float:
    """The pooled within-layer Spearman ρ of lists of per-layer arrays (layers without a ρ left out)."""
    terms = [spearman_terms(np.asarray(x, float)[None], np.asarray(y, float)[None]) for x, y in zip(xs, ys)]
    return float(_pool(terms)[0]) if terms else float("nan")


# --------------------------------------------------------------------------- partial ρ


def _partial_from_cross(S) -> np.ndarray:
    """Partial correlation of variables 0 and 1 given the rest, from (..., q, q) cross-product matrices."""
    a, b = S[..., :2, :2], S[..., :2, 2:]
    if S.shape[-1] > 2:
        cond = a - b @ np.linalg.pinv(S[..., 2:, 2:], hermitian=True) @ np.swapaxes(b, -1, -2)
    else:
        cond = a
    xx, yy, xy = cond[..., 0, 0], cond[..., 1, 1], cond[..., 0, 1]
    tol = 1e-12 * np.maximum(S[..., 0, 0], S[..., 1, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = xy / np.sqrt(xx * yy)
    return np.where((xx > tol) & (yy > tol), np.clip(rho, -1.0, 1.0), np.nan)


def partial_terms(x, y, covariates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (..., n) samples of one layer: (S, n, eligible) with S the (..., q, q) cross-products of the centred
    within-layer ranks of (x, y, *covariates) over the units where all are finite; eligible when n ≥ MIN_UNITS and
    neither x nor y is constant."""
    arrays, n = _joint(*(np.asarray(a, dtype=np.float64) for a in (x, y, *covariates)))
    c = []
    for a in arrays:
        r = ranks(a)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(r, axis=-1, keepdims=True) / np.maximum(n, 1)[..., None]
        c.append(np.where(np.isfinite(r), r - mean, 0.0))
    C = np.stack(c, axis=-1)  # (..., n, q)
    S = np.einsum("...ni,...nj->...ij", C, C)
    ok = (n >= MIN_UNITS) & (S[..., 0, 0] > 0) & (S[..., 1, 1] > 0)
    return S, n, ok


def _pool_partial(terms) -> np.ndarray:
    S = sum(np.where(ok[..., None, None], S, 0.0) for S, _, ok in terms)
    any_ok = sum(ok.astype(int) for _, _, ok in terms) > 0
    return np.where(any_ok, _partial_from_cross(S), np.nan)


def partial_spearman(x, y, covariates) -> float:
    """Partial rank correlation of one layer's x and y given the covariates (see the module docstring)."""
    S, n, ok = partial_terms(
        *(np.asarray(a, float)[None] for a in (x, y)), [np.asarray(c, float)[None] for c in covariates]
    )
    return float(np.where(ok, _partial_from_cross(S), np.nan)[0])


def pooled_partial_spearman(xs, ys, covariates) -> float:
    """Pooled over layers: ``covariates`` is a list (per layer) of lists of arrays."""
    terms = [
        partial_terms(np.asarray(x, float)[None], np.asarray(y, float)[None], [np.asarray(c, float)[None] for c in cs])
        for x, y, cs in zip(xs, ys, covariates)
    ]
    return float(_pool_partial(terms)[0]) if terms else float("nan")


# --------------------------------------------------------------------------- cross-validated incremental gain


def _fold_ids(valid: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Fold of each (sample, unit): the valid units in the order of ``keys`` go to folds 0, 1, ..., 4, 0, ...;
    invalid units get -1."""
    order = np.argsort(np.where(valid, keys, np.inf), axis=-1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(order.shape[-1])[None, :].repeat(order.shape[0], 0), axis=-1)
    return np.where(valid, pos % N_FOLDS, -1)


def _oof_predictions(X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold OLS predictions (with intercept) per sample: X (B, N, p), y (B, N), folds (B, N) in -1..4."""
    D = np.concatenate([np.ones(X.shape[:-1] + (1,)), X], axis=-1)
    D = np.where((folds >= 0)[..., None], D, 0.0)
    y0 = np.where(folds >= 0, y, 0.0)
    pred = np.full(y.shape, np.nan)
    for f in range(N_FOLDS):
        train = ((folds >= 0) & (folds != f)).astype(np.float64)
        A = np.einsum("bn,bni,bnj->bij", train, D, D)
        v = np.einsum("bn,bni,bn->bi", train, D, y0)
        beta = np.einsum("bij,bj->bi", np.linalg.pinv(A, hermitian=True), v)
        test = folds == f
        pred = np.where(test, np.einsum("bni,bi->bn", D, beta), pred)
    return pred


def increment_samples(target, base, extra, layer_sizes, fold_keys) -> np.ndarray:
    """The CV gain of adding ``extra`` to ``base`` for each sample.

    ``target``: (B, N) values of the target, the layers' units side by side (``layer_sizes`` says how many each);
    ``base``: a list of (B, N) features; ``extra``: (B, N); ``fold_keys``: (B, N) numbers whose order within each
    layer sets the folds (see :func:`_fold_ids`). A unit with any value not finite is left out of its sample."""
    bounds = np.concatenate([[0], np.cumsum(layer_sizes)]).astype(int)
    arrays, _ = _joint(target, *base, extra)
    valid = np.isfinite(arrays[0])
    zs = [
        np.concatenate([standardised(ranks(a[:, s:e]))[0] for s, e in zip(bounds[:-1], bounds[1:])], axis=1)
        for a in arrays
    ]
    folds = np.concatenate(
        [_fold_ids(valid[:, s:e], fold_keys[:, s:e]) for s, e in zip(bounds[:-1], bounds[1:])], axis=1
    )
    y = zs[0]
    out = []
    for feats in (zs[1:-1], zs[1:]):
        X = np.stack(feats, axis=-1) if feats else np.zeros(y.shape + (0,))
        pred = _oof_predictions(X, y, folds)
        terms = [spearman_terms(pred[:, s:e], y[:, s:e]) for s, e in zip(bounds[:-1], bounds[1:])]
        out.append(_pool(terms))
    return out[1] - out[0]


def permutation_keys(sizes, seed: int) -> np.ndarray:
    """Fold keys of the data itself: each layer's units in the order of ``default_rng(seed).permutation(n)`` (one
    generator, layers in order), as (1, N) positions."""
    rng = np.random.default_rng(seed)
    keys = []
    for n in sizes:
        k = np.empty(n)
        k[rng.permutation(n)] = np.arange(n)
        keys.append(k)
    return np.concatenate(keys)[None] if keys else np.zeros((1, 0))


# --------------------------------------------------------------------------- whole estimates with CIs


@dataclass
class Estimate:
    """One statistic: its value on the data, the bootstrap CI, the units it used, and its replicates."""

    value: float
    ci_low: float
    ci_high: float
    n_units: int
    replicates: np.ndarray = field(repr=False)  # (resamples,), NaN where a resample had no value


@dataclass
class LayerEstimates:
    layers: list[Estimate]  # one per layer, in the given order
    pooled: Estimate


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return a[idx] if idx.size else np.zeros(idx.shape)


def correlation(xs, ys, indices, level: float = 0.95) -> LayerEstimates:
    """Spearman ρ of x with y per layer and pooled, with percentile bootstrap CIs. ``xs``, ``ys``: per-layer
    arrays (NaN = missing); ``indices``: per-layer (B, n) resample draws (:func:`resample_indices`)."""
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    ys = [np.asarray(y, dtype=np.float64) for y in ys]
    base = [spearman_terms(x[None], y[None]) for x, y in zip(xs, ys)]
    B = indices[0].shape[0] if indices else 0
    reps_layer = [np.full(B, np.nan) for _ in xs]
    reps_pool = np.full(B, np.nan)
    for blk in _blocks(B, sum(len(x) for x in xs)):
        terms = []
        for k, (x, y, idx) in enumerate(zip(xs, ys, indices)):
            t = spearman_terms(_gather(x, idx[blk]), _gather(y, idx[blk]))
            reps_layer[k][blk] = _rho(*t)
            terms.append(t)
        reps_pool[blk] = _pool(terms) if terms else np.nan
    layers = []
    for (s, n, ok), r in zip(base, reps_layer):
        layers.append(Estimate(float(_rho(s, n, ok)[0]), *percentile_ci(r, level), int(n[0]), r))
    pooled_n = int(sum(int(n[0]) for _, n, ok in base if ok[0]))
    pooled = Estimate(
        float(_pool(base)[0]) if base else float("nan"), *percentile_ci(reps_pool, level), pooled_n, reps_pool
    )
    return LayerEstimates(layers, pooled)


def partial_correlation(xs, ys, covariates, indices, level: float = 0.95) -> LayerEstimates:
    """Partial rank correlation of x and y given the covariates, per layer and pooled, with bootstrap CIs.
    ``covariates``: per layer, a list of arrays."""
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    ys = [np.asarray(y, dtype=np.float64) for y in ys]
    cs = [[np.asarray(c, dtype=np.float64) for c in cc] for cc in covariates]
    base = [partial_terms(x[None], y[None], [c[None] for c in cc]) for x, y, cc in zip(xs, ys, cs)]
    B = indices[0].shape[0] if indices else 0
    reps_layer = [np.full(B, np.nan) for _ in xs]
    reps_pool = np.full(B, np.nan)
    q = 2 + (len(cs[0]) if cs else 0)
    for blk in _blocks(B, q * sum(len(x) for x in xs)):
        terms = []
        for k, (x, y, cc, idx) in enumerate(zip(xs, ys, cs, indices)):
            i = idx[blk]
            t = partial_terms(_gather(x, i), _gather(y, i), [_gather(c, i) for c in cc])
            reps_layer[k][blk] = np.where(t[2], _partial_from_cross(t[0]), np.nan)
            terms.append(t)
        reps_pool[blk] = _pool_partial(terms) if terms else np.nan
    layers = []
    for (S, n, ok), r in zip(base, reps_layer):
        v = float(np.where(ok, _partial_from_cross(S), np.nan)[0])
        layers.append(Estimate(v, *percentile_ci(r, level), int(n[0]), r))
    pooled_n = int(sum(int(n[0]) for _, n, ok in base if ok[0]))
    pooled = Estimate(
        float(_pool_partial(base)[0]) if base else float("nan"), *percentile_ci(reps_pool, level), pooled_n, reps_pool
    )
    return LayerEstimates(layers, pooled)


def incremental_gain(ys, base, extra, indices, *, seed: int = 0, level: float = 0.95) -> Estimate:
    """Cross-validated gain of adding ``extra`` to the ``base`` features in predicting y (see the module docstring).

    ``ys``, ``extra``: per-layer arrays; ``base``: per layer, a list of arrays (the same features in every layer).
    Folds of the data: ``default_rng(seed).permutation`` of each layer's complete units. Folds of a resample: the
    same rule with its own seeded permutation of each layer's resampled units (``default_rng([seed, 1])``).
    """
    ys = [np.asarray(y, dtype=np.float64) for y in ys]
    ex = [np.asarray(e, dtype=np.float64) for e in extra]
    bs = [[np.asarray(b, dtype=np.float64) for b in bb] for bb in base]
    nb = len(bs[0]) if bs else 0
    complete = [np.all([np.isfinite(a) for a in (y, e, *bb)], axis=0) for y, e, bb in zip(ys, ex, bs)]

    def stack(per_layer):
        return np.concatenate([a[m] for a, m in zip(per_layer, complete)])[None]

    # the data: each layer's complete units, folds by default_rng(seed).permutation over them
    sizes = [int(m.sum()) for m in complete]
    value = increment_samples(
        stack(ys), [stack([bb[j] for bb in bs]) for j in range(nb)], stack(ex), sizes, permutation_keys(sizes, seed)
    )[0]
    n_units = int(sum(sizes))
    B = indices[0].shape[0] if indices else 0
    reps = np.full(B, np.nan)
    rng = np.random.default_rng([seed, 1])
    full_sizes = [len(y) for y in ys]
    keys = [rng.random((B, n)) for n in full_sizes]
    for blk in _blocks(B, (nb + 2) * 4 * sum(full_sizes)):
        idx = [i[blk] for i in indices]

        def cat(per_layer, idx=idx):
            return np.concatenate([_gather(a, i) for a, i in zip(per_layer, idx)], axis=1)

        reps[blk] = increment_samples(
            cat(ys),
            [cat([bb[j] for bb in bs]) for j in range(nb)],
            cat(ex),
            full_sizes,
            np.concatenate([k[blk] for k in keys], axis=1),
        )
    return Estimate(float(value), *percentile_ci(reps, level), n_units, reps)
