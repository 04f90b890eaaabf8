"""Stage 5 — statistics: sample-size-aware statistics of feature entropy (pure math, no I/O).

For one unit and one class with N images and birth points b_1..b_N (0 = none),
everything here is a function of the cell's *histogram*: how many images have
no birth point (c_0) and how many have each value v ≥ 1 (c_v).

* ``n_births`` n = N − c_0, the number of images with a birth point.
* ``birth_rate`` n / N and ``feature_entropy`` −Σ_v (c_v/n) ln(c_v/n) (0 when
  n = 0), exactly as :func:`onnx_fe.feature_entropy` computes them.
* ``fe_rarefied``: the expected plug-in entropy of k birth points drawn without
  replacement from the cell's n birth points, NaN when n < k. Exact: the count
  X_v of value v among the k draws is hypergeometric(n, c_v, k), so
  ``fe_rarefied = −Σ_v Σ_{x=1}^{k−1} P(X_v = x) (x/k) ln(x/k)``. It is the
  average of the plug-in entropy over all k-subsets of the births, a
  U-statistic, hence *unbiased* for θ_k(P) = E[plug-in entropy of k i.i.d.
  draws from P] (P = the unit's distribution of nonzero birth points), whatever
  n is. Raw FE instead estimates H(P) with a downward bias of roughly
  (d − 1)/(2n) for d distinct values, so it grows with n. k defaults to 10:
  on the digits VGG it ranks cells more reproducibly than k = 5 at the cost of
  more NaN cells (docs/statistics.md, "The default k = 10").
* Bootstrap confidence intervals over images: each class's N images are
  resampled with replacement, B times. A resample is a vector of image
  multiplicities (one multinomial(N, uniform) draw, :func:`image_resamples`),
  shared by every unit and layer of the class, so a unit's resampled histogram
  is an exact integer sum of multiplicities over the images holding each value
  (no per-cell random draws, no float rounding).

  - ``birth_rate`` and ``feature_entropy``: percentile intervals.
  - ``fe_rarefied``: the percentile interval shifted by U − θ_k(P̂), where U is
    the estimate and θ_k(P̂) the bootstrap world's true value (the expected
    entropy of k draws *with* replacement from the observed births). A
    resample repeats images, so U* is centred on θ_k(P̂), which lies below U
    by O(1/n); the shift removes that offset. Resamples with fewer than k
    births are left out (the interval is conditional on n* ≥ k; when n ≥ k
    about half of the resamples or more qualify). For births spread nearly
    uniformly over many values this interval is conservative (covers more
    than 95 %), see docs/statistics.md.
  - Every interval is then widened, if needed, to contain its point estimate:
    ``low = min(low, estimate)``, ``high = max(high, estimate)``. A percentile
    interval need not contain the estimate: the plug-in entropy of a resample
    is biased further down than the sample's own. With 6 images and 6
    different birth points only 6!/6⁶ ≈ 1.5 % of resamples keep all six
    distinct, so the 97.5 % quantile of FE* lies below the estimate ln 6. The
    widening only ever lengthens an interval.

Determinism: the resamples of a class are a function of (seed, class id,
N, B) only; every transcendental value comes from a table indexed by integers
that depend on the cell alone, and every floating-point sum runs in a fixed
order. So a cell's results are bit-identical whatever other units, layers or
classes are processed with it, in whatever order or batch (for one numpy
version: numpy does not promise the same random stream across versions).
"""

from __future__ import annotations

import hashlib
import math
import threading
from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np

from ..errors import OptionError
from . import _bootstrap_kernel as _K

DEFAULT_K = 10
DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0

_TAG_BOOT = 0x0FE_B007
_TAG_NOISE = 0x0FE_0015E
_TAG_UNITS = 0x0FE_0417
_CHUNK_ELEMENTS = 1 << 22  # resampled counts held in memory at once (never changes a result)


# ---------------------------------------------------------------------------------------------
# validation and small helpers


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise OptionError(f"level must lie strictly between 0 and 1, got {level}")
    return level


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 2:
        raise OptionError(f"k must be an integer ≥ 2, got {k!r}")
    return int(k)


def _check_resamples(b: int) -> int:
    if isinstance(b, bool) or int(b) != b or int(b) < 1:
        raise OptionError(f"n_resamples must be a positive integer, got {b!r}")
    return int(b)


def _key_int(x, what: str) -> int:
    """A non-negative int for seeding: ints as they are, strings via SHA-256 (stable across runs)."""
    if isinstance(x, str):
        return int.from_bytes(hashlib.sha256(x.encode()).digest()[:8], "little")
    if isinstance(x, (bool, np.bool_)) or int(x) != x or int(x) < 0:
        raise OptionError(f"{what} must be a non-negative integer (or a string), got {x!r}")
    return int(x)


def _as_birth_points(b, ndim: int) -> np.ndarray:
    a = np.asarray(b)
    if a.ndim != ndim:
        raise OptionError(f"birth points must have {ndim} dimension(s), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if (
            a.dtype == bool
            or not np.issubdtype(a.dtype, np.number)
            or (a.size and (not np.isfinite(a).all() or (a != np.round(a)).any()))
        ):
            raise OptionError("birth points must be integers")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise OptionError("birth points must be non-negative (0 = no birth point)")
    return a.astype(np.int64, copy=False)


_LF: list[float] = [0.0]  # ln(i!) for i = 0..len-1, each from math.lgamma (so independent of the table's length)


_LF_LOCK = threading.Lock()  # layers' statistics may run in threads (experiments.score._finish)


def _log_factorial(n: int) -> np.ndarray:
    with _LF_LOCK:
        while len(_LF) <= n:
            _LF.extend([math.lgamma(i + 1) for i in range(len(_LF), max(2 * len(_LF), n + 1))])
        return np.asarray(_LF[: n + 1])


@lru_cache(maxsize=64)
def _x_log_x(n: int) -> np.ndarray:
    """c·ln c for c = 0..n (0 at c = 0); element c depends on c only."""
    return np.array([c * math.log(c) if c > 0 else 0.0 for c in range(n + 1)])


@lru_cache(maxsize=1024)
def _rarefy_row(n: int, k: int) -> np.ndarray:
    """g[c] = Σ_{x=1}^{k−1} P(X = x)·(x/k)·ln(x/k), X ~ hypergeometric(n, c, k), c = 0..n (n ≥ k).

    A value with c copies among n births adds −g[c] to the rarefied entropy. The row depends on (n, k) only.
    """
    lf = _log_factorial(n)
    c = np.arange(n + 1)
    log_total = lf[n] - lf[k] - lf[n - k]
    acc = np.zeros(n + 1)
    for x in range(1, k):
        ok = (c >= x) & (n - c >= k - x)
        cc = np.where(ok, c, x)  # any valid index where not ok; masked below
        rest = np.where(ok, n - c, k - x)
        logp = (lf[cc] - lf[x] - lf[cc - x]) + (lf[rest] - lf[k - x] - lf[rest - (k - x)]) - log_total
        acc += np.where(ok, np.exp(logp), 0.0) * ((x / k) * math.log(x / k))
    acc.setflags(write=False)
    return acc


def _rarefy_table(n_lo: int, n_hi: int, k: int) -> np.ndarray:
    """Rows n = n_lo..n_hi of g (zero-padded to n_hi + 1 columns)."""
    t = np.zeros((n_hi - n_lo + 1, n_hi + 1))
    for n in range(max(n_lo, k), n_hi + 1):
        t[n - n_lo, : n + 1] = _rarefy_row(n, k)
    return t


# ---------------------------------------------------------------------------------------------
# per-cell estimators


def n_births(birth_points) -> int:
    """Number of images with a birth point (nonzero entries) of one unit × class."""
    return int(np.count_nonzero(_as_birth_points(birth_points, 1)))


def fe_rarefied_from_counts(counts, k: int = DEFAULT_K) -> float:
    """Rarefied FE from the counts of the distinct nonzero birth values (any order); NaN when Σ counts < k."""
    k = _check_k(k)
    c = np.asarray(counts, dtype=np.int64).ravel()
    if c.size and c.min() < 0:
        raise OptionError("counts must be non-negative")
    n = int(c.sum())
    if n < k:
        return float("nan")
    g = _rarefy_row(n, k)
    acc = 0.0
    for cv in c:  # fixed order: the order given
        acc += g[cv]
    return float(-acc) if acc != 0 else 0.0


def fe_rarefied(birth_points, k: int = DEFAULT_K) -> float:
    """Expected plug-in entropy (nats) of k of the unit's nonzero birth points drawn without replacement.

    Exact (hypergeometric), NaN when fewer than k images have a birth point. With k = n_births it is
    the plug-in feature entropy.
    """
    b = _as_birth_points(birth_points, 1)
    _, counts = np.unique(b[b != 0], return_counts=True)
    return fe_rarefied_from_counts(counts, k)


def expected_plugin_entropy(p, k: int) -> float:
    """θ_k(P): the expected plug-in entropy of k i.i.d. draws from the distribution ``p`` (exact, binomial).

    This is the quantity ``fe_rarefied`` is unbiased for; p need not be normalised (it is divided by its sum).
    """
    k = _check_k(k)
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size == 0 or (p < 0).any() or p.sum() <= 0:
        raise OptionError("p must be non-negative with a positive sum")
    p = p[p > 0] / p.sum()
    lf = _log_factorial(k)
    acc = 0.0
    for x in range(1, k):
        with np.errstate(divide="ignore"):
            logpmf = lf[k] - lf[x] - lf[k - x] + x * np.log(p) + (k - x) * np.log1p(-p)
        acc += float(np.exp(logpmf).sum()) * (x / k) * math.log(x / k)
    return -acc if acc != 0 else 0.0


def entropy_of_distribution(p) -> float:
    """Shannon entropy (nats) of a distribution given as non-negative weights."""
    p = np.asarray(p, dtype=np.float64).ravel()
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------------------------
# per-layer table of every statistic, with bootstrap CIs


class CellStatistics(NamedTuple):
    """Every statistic of a layer, arrays (K classes, C units) unless noted; NaN for a class without images."""

    n_images: np.ndarray  # (K,) int64
    n_births: np.ndarray  # int64 (0 for a class without images)
    birth_rate: np.ndarray
    birth_rate_ci_low: np.ndarray
    birth_rate_ci_high: np.ndarray
    feature_entropy: np.ndarray
    fe_ci_low: np.ndarray
    fe_ci_high: np.ndarray
    fe_rarefied: np.ndarray  # NaN where n_births < k
    fe_rarefied_ci_low: np.ndarray
    fe_rarefied_ci_high: np.ndarray


def image_resamples(
    n_images: int, n_resamples: int = DEFAULT_RESAMPLES, *, seed: int = DEFAULT_SEED, class_id=0
) -> np.ndarray:
    """How often each of a class's images appears in each bootstrap resample: int64 (n_resamples, n_images).

    Row b is one multinomial(n_images, uniform) draw. A function of (seed, class_id, n_images, n_resamples)
    only, so every unit and every layer of the class (and a control network scored on the same images)
    sees the same resamples, whatever else is computed with it.
    """
    n_images = int(n_images)
    n_resamples = _check_resamples(n_resamples)
    if n_images < 1:
        raise OptionError("n_images must be positive")
    ss = np.random.SeedSequence([_key_int(seed, "seed"), _TAG_BOOT, _key_int(class_id, "class id"), n_images])
    idx = np.random.default_rng(ss).integers(0, n_images, size=(n_resamples, n_images))
    idx += (n_images * np.arange(n_resamples))[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n_images).reshape(n_resamples, n_images)


def _resample_weights(n_img: int, n_res: int, seed, class_id) -> np.ndarray:
    """:func:`image_resamples` transposed to (n_img, n_res) int32, cached: every layer of a run uses the same ones."""
    key = (int(n_img), int(n_res), seed if isinstance(seed, str) else int(seed))
    return _resample_weights_cached(*key, class_id if isinstance(class_id, str) else int(class_id))


@lru_cache(maxsize=64)
def _resample_weights_cached(n_img, n_res, seed, class_id) -> np.ndarray:
    w = np.ascontiguousarray(image_resamples(n_img, n_res, seed=seed, class_id=class_id).T, dtype=np.int32)
    w.setflags(write=False)
    return w


def cell_statistics(
    birth_points,
    labels,
    n_classes: int | None = None,
    *,
    k: int = DEFAULT_K,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    class_ids=None,
) -> CellStatistics:
    """All statistics of every unit × class cell of one layer from its (N images, C units) birth points.

    ``labels`` (N,) are class indices 0..n_classes−1. The bootstrap resamples the images of each
    class (:func:`image_resamples`), keyed by ``seed`` and the class's id (``class_ids``, default
    its index; pass the original class indices when scoring a subset of classes). A cell's results
    depend on its own column, its class's labels and these keys only: never on the other units,
    their order, or how units and layers are split between calls. ``n_resamples`` = 0 skips the
    bootstrap (CIs are NaN).
    """
    bp = _as_birth_points(birth_points, 2)
    labels = np.asarray(labels)
    if labels.shape != (bp.shape[0],):
        raise OptionError(f"labels must have shape ({bp.shape[0]},), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise OptionError("labels must be integer class indices")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise OptionError("labels must be non-negative")
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= n_classes:
        raise OptionError(f"labels must lie in 0..{n_classes - 1}")
    k = _check_k(k)
    level = _check_level(level)
    n_res = 0 if n_resamples == 0 else _check_resamples(n_resamples)
    class_ids = np.arange(n_classes) if class_ids is None else np.asarray(class_ids)
    if class_ids.shape != (n_classes,):
        raise OptionError("class_ids must have one entry per class")
    for q in class_ids:
        _key_int(q, "class id")
    _key_int(seed, "seed")

    shape = (n_classes, bp.shape[1])
    out = {name: np.full(shape, np.nan) for name in CellStatistics._fields}
    out["n_images"] = np.bincount(labels, minlength=n_classes).astype(np.int64)
    out["n_births"] = np.zeros(shape, dtype=np.int64)
    alpha = 1.0 - level
    qs = (alpha / 2, 1 - alpha / 2)
    todo = []  # per class: (rows, cells still to bootstrap, their value counts, the cells' numbers of values)
    for ci in range(n_classes):
        rows = bp[labels == ci]
        todo.append(_class_estimates(rows, k, n_res, out, ci) if len(rows) else None)
    if n_res:
        _bootstrap(todo, k, qs, n_res, seed, class_ids, out)
    return CellStatistics(**out)


def merge_class_statistics(parts, n_classes: int, n_units: int) -> CellStatistics:
    """One layer's statistics of all ``n_classes`` classes from statistics computed for groups of its classes.

    ``parts``: (class indices, :class:`CellStatistics`) pairs, each computed by :func:`cell_statistics` on the
    images of those classes alone (their labels renumbered 0.. in the order given, and their own ``class_ids``).
    A cell depends on its own class's images and keys only, so the merged table is the one a single call on all
    the images gives, bit for bit. A class in no group is a class without images (n_images 0, n_births 0, NaN)."""
    out = {name: np.full((n_classes, n_units), np.nan) for name in CellStatistics._fields}
    out["n_images"] = np.zeros(n_classes, dtype=np.int64)
    out["n_births"] = np.zeros((n_classes, n_units), dtype=np.int64)
    for classes, st in parts:
        classes = np.asarray(classes, dtype=np.int64)
        for name in CellStatistics._fields:
            out[name][classes] = getattr(st, name)
    return CellStatistics(**out)


def _class_estimates(rows, k, n_res, out, ci):
    """Point estimates of one class's cells; the single-category cells' zero-length intervals.

    Returns what the bootstrap needs: (rows, cells to resample, every cell's nonzero value counts, every cell's
    number of distinct values), or None when nothing is to be resampled.
    """
    n_img, c = rows.shape
    if c == 0:
        return None
    vmax = int(rows.max())
    counts = np.bincount((rows + np.arange(c) * (vmax + 1)).ravel(), minlength=c * (vmax + 1)).reshape(c, vmax + 1)
    nb = n_img - counts[:, 0]
    rate = nb / n_img
    out["n_births"][ci] = nb
    out["birth_rate"][ci] = rate
    # every cell's nonzero value counts, in increasing value order, one after the other (cell j: flat[off[j]:off[j+1]])
    present = counts[:, 1:] > 0
    m = present.sum(axis=1)  # distinct values of each cell
    flat = counts[:, 1:][present]
    off = np.r_[0, np.cumsum(m)]
    nz_counts = np.split(flat, off[1:-1])
    # FE as feature_entropy computes it (entropy._entropy_of_counts: p = c / n, −Σ p ln p), a block of cells with
    # the same number of values at a time: each row's sum over the last axis of a C-contiguous block is the same
    # pairwise sum as that row's alone, so the values are bit-identical
    fe = np.zeros(c)
    for mm in np.unique(m[m > 0]):
        sel = np.flatnonzero(m == mm)
        block = flat[off[sel][:, None] + np.arange(mm)]
        pr = block / block.sum(axis=1)[:, None]
        fe[sel] = -(pr * np.log(pr)).sum(axis=1)
    fr = np.full(c, np.nan)
    big = np.flatnonzero(nb >= k)
    if len(big):  # rarefied FE: Σ of the (n, k) row's entries at the cell's counts, in value order
        ns = np.unique(nb[big])
        row_off = np.zeros(int(ns.max()) + 1, dtype=np.int64)
        row_off[ns] = np.r_[0, np.cumsum(ns + 1)[:-1]]
        g = np.concatenate([_rarefy_row(int(n), k) for n in ns])
        _K.rarefied_cells(flat, off, big, nb, row_off, g, fr)
    out["feature_entropy"][ci] = fe
    out["fe_rarefied"][ci] = fr
    if n_res == 0:
        return None
    # a cell with one category (no births, or one value in every image) gives the sample in every resample
    fixed = (counts > 0).sum(axis=1) <= 1
    for name, est in (("birth_rate", rate), ("fe", fe), ("fe_rarefied", fr)):
        out[f"{name}_ci_low"][ci, fixed] = est[fixed]
        out[f"{name}_ci_high"][ci, fixed] = est[fixed]
    todo = np.flatnonzero(~fixed)
    return (rows, todo, nz_counts, m) if todo.size else None


def _bootstrap(todo, k, qs, n_res, seed, class_ids, out):
    """Bootstrap intervals of every class's non-trivial cells, computed together.

    A cell's resampled histogram is the integer sum of its class's image multiplicities (:func:`image_resamples`)
    over the images holding each value, and everything after that is computed row by row (one row = one cell), so
    which cells share a chunk never changes a result. Cells of all classes are taken together, the widest first
    (fewest padded values per chunk).
    """
    classes = [ci for ci, t in enumerate(todo) if t is not None]
    if not classes:
        return
    offset, pairs = {}, []
    n_all = 0
    weights = []
    for ci in classes:
        rows, cells, _, m = todo[ci]
        offset[ci] = n_all
        n_all += len(rows)
        weights.append(_resample_weights(len(rows), n_res, seed, class_ids[ci]))
        pairs += [(-int(m[j]), ci, int(j)) for j in cells]
    wt = np.concatenate(weights) if len(weights) > 1 else weights[0]  # (images of these classes, B)
    pairs.sort()  # widest cells first; ties by class, then unit
    p_class = np.array([ci for _, ci, _ in pairs])
    p_unit = np.array([j for _, _, j in pairs])
    p_m = np.array([-w for w, _, _ in pairs])
    p_nimg = np.array([len(todo[ci][0]) for ci in p_class])
    xlx = _x_log_x(int(p_nimg.max()))
    vmax = max(int(todo[ci][0].max()) for ci in classes)
    s = 0
    while s < len(pairs):
        chunk = max(1, min(512, _CHUNK_ELEMENTS // (int(p_m[s]) * n_res)))
        sl = slice(s, s + chunk)
        s += chunk
        cls, units, mc, nimg = p_class[sl], p_unit[sl], p_m[sl], p_nimg[sl]
        mm = int(mc[0])  # the widest cell of the chunk
        # resampled count of each cell's t-th distinct value: (mm, cells, B), zero past the cell's values.
        # Integer sums of image multiplicities over the images holding that value: exact in any order.
        imgs, poss, vals = [], [], []
        for ci in np.unique(cls):
            at = np.flatnonzero(cls == ci)
            sub = todo[ci][0][:, units[at]]
            img, pos = np.nonzero(sub)
            imgs.append(img + offset[ci])
            poss.append(at[pos])
            vals.append(sub[img, pos])
        img, pos, val = np.concatenate(imgs), np.concatenate(poss), np.concatenate(vals)
        key = pos * (vmax + 1) + val
        order = np.argsort(key, kind="stable")
        key, img = key[order], img[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        gpos = key[starts] // (vmax + 1)
        gt = np.arange(len(starts)) - np.searchsorted(gpos, gpos)  # rank of the value within its cell
        rc = np.empty((mm, len(cls), n_res), dtype=np.int32)  # entries past a cell's values are never read
        _K.resampled_counts(np.r_[starts, len(img)], img, gpos, gt, wt, rc)
        # per cell and resample, in a fixed order (see _bootstrap_kernel): n*, its birth rate and FE
        # FE of a resample: (n ln n − Σ_v c_v ln c_v) / n, 0 when n = 0
        nstar = np.empty((len(cls), n_res), dtype=np.int64)
        rates, fes = np.empty(nstar.shape), np.empty(nstar.shape)
        _K.resampled_fe(rc, mc, nimg, xlx, nstar, rates, fes)
        lo, hi = _row_quantiles(rates, qs)
        _store(out, "birth_rate", cls, units, lo, hi, out["birth_rate"][cls, units])
        lo, hi = _row_quantiles(fes, qs)
        _store(out, "fe", cls, units, lo, hi, out["feature_entropy"][cls, units])
        # rarefied FE: over the resamples with n* ≥ k, percentile interval shifted by U − θ_k(P̂)
        est = out["fe_rarefied"][cls, units]
        use = np.flatnonzero(~np.isnan(est))
        if not len(use):
            continue
        ns = nstar[use]
        ok = ns >= k
        if not ok.any():
            continue
        n_lo, n_hi = max(int(ns[ok].min()), k), int(ns.max())
        table = _rarefy_table(n_lo, n_hi, k).ravel()
        rs = np.empty(ns.shape)
        _K.resampled_rarefied(rc, mc, use, nstar, table, n_lo, n_hi, k, rs)
        lo, hi = _row_quantiles(rs, qs)
        cls, units, est = cls[use], units[use], est[use]
        shift = est - np.array([_theta_hat(todo[ci][2][j], k) for ci, j in zip(cls, units)])
        _store(out, "fe_rarefied", cls, units, lo + shift, hi + shift, est)


def _group_sums(rows: np.ndarray, starts: np.ndarray, n_rows: int):
    """Sparse 0/1 matrix (groups, n_rows): group g sums ``rows[starts[g]:starts[g + 1]]`` (each row at most once per
    group). ``matrix @ weights`` gives the integer sums of ``np.add.reduceat(weights[rows], starts)`` — exactly,
    integers being summed — without copying ``weights[rows]`` (about 10× faster for the bootstrap)."""
    from scipy.sparse import csr_matrix

    grp = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(rows)]))
    return csr_matrix((np.ones(len(rows), dtype=np.int32), (grp, rows)), shape=(len(starts), n_rows))


@lru_cache(maxsize=1024)
def _theta_row(n: int, k: int) -> np.ndarray:
    """h[c] = Σ_{x=1}^{k−1} P(X = x)·(x/k)·ln(x/k), X ~ binomial(k, c/n), c = 0..n; depends on (n, k) only."""
    lf = _log_factorial(k)
    p = np.arange(n + 1) / n
    acc = np.zeros(n + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp, lq = np.log(p), np.log1p(-p)
        for x in range(1, k):
            pmf = np.exp(lf[k] - lf[x] - lf[k - x] + x * lp + (k - x) * lq)
            acc += np.where((p > 0) & (p < 1), pmf, 0.0) * ((x / k) * math.log(x / k))
    acc.setflags(write=False)
    return acc


def _theta_hat(nz: np.ndarray, k: int) -> float:
    """θ_k of the births' empirical distribution: the expected plug-in entropy of k draws *with* replacement."""
    h = _theta_row(int(nz.sum()), k)
    acc = 0.0
    for cv in nz:
        acc += h[cv]
    return 0.0 - acc


def _row_quantiles(x: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles of each row of x over its non-NaN entries (linear interpolation; NaN for an all-NaN row)."""
    nv = (~np.isnan(x)).sum(axis=1)
    n = x.shape[1] if x.ndim == 2 else 0
    if len(x) and n and (nv == n).all():
        # no NaN: only the order statistics used below are needed, and np.partition puts exactly those in place
        at = sorted({i for q in qs for i in (math.floor(q * (n - 1)), min(math.floor(q * (n - 1)) + 1, n - 1))})
        s = np.partition(x, at, axis=1)
    else:
        s = np.sort(x, axis=1)  # NaN sort last
    r = np.arange(len(x))
    res = []
    for q in qs:
        pos = q * np.maximum(nv - 1, 0)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, np.maximum(nv - 1, 0))
        a, b = s[r, i0], s[r, i1]
        v = a + (b - a) * (pos - i0)
        res.append(np.where(nv > 0, v, np.nan))
    return res


def _store(out, name, classes, units, lo, hi, est):
    """Write intervals widened to contain their estimates (see the module docstring); one per (class, unit) pair."""
    out[f"{name}_ci_low"][classes, units] = np.minimum(lo, est)
    out[f"{name}_ci_high"][classes, units] = np.maximum(hi, est)


# ---------------------------------------------------------------------------------------------
# layer-level helpers


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float
    n: int


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile: ``scipy.stats.t.ppf(p, df)`` bit for bit (which computes ``special.stdtrit(df, p)``,
    times the scale 1 plus the location 0), without importing scipy.stats (about 0.5 s, most of a small run's
    finish)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def mean_ci(
    values,
    *,
    level: float = DEFAULT_LEVEL,
    method: str = "t",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Mean of the finite values (e.g. one statistic over a layer's units) with a CI over them.

    ``method="t"``: mean ± t(1−α/2, n−1)·s/√n. ``method="bootstrap"``: percentile interval of the
    means of ``n_resamples`` resamples of the values (seeded; widened to contain the mean). NaN and
    ±inf are left out; the interval is NaN for fewer than two values.
    """
    level = _check_level(level)
    if method not in ("t", "bootstrap"):
        raise OptionError(f"method must be 't' or 'bootstrap', got {method!r}")
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    alpha = 1.0 - level
    if method == "t":
        half = _t_quantile(1 - alpha / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, n)
    rng = np.random.default_rng(np.random.SeedSequence([_key_int(seed, "seed"), _TAG_UNITS, n]))
    means = x[rng.integers(0, n, size=(_check_resamples(n_resamples), n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(mean, min(float(lo), mean), max(float(hi), mean), n)


def _pairs(a, b, paired: bool):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if paired:
        if a.shape != b.shape:
            raise OptionError("paired samples must have the same length")
        keep = np.isfinite(a) & np.isfinite(b)
        return a[keep], b[keep]
    return a[np.isfinite(a)], b[np.isfinite(b)]


def cohens_d(a, b, *, paired: bool = False) -> float:
    """Standardised difference a − b (e.g. trained − control, one value per unit).

    Unpaired (default): (mean a − mean b) / pooled SD, the SDs with ddof = 1. A random twin's unit j
    is a fresh draw, not unit j of the trained network, so units are *not* paired by index by default.
    ``paired=True``: d_z = mean(a − b) / SD(a − b). NaN when undefined (too few values, zero SD).
    """
    a, b = _pairs(a, b, paired)
    if paired:
        d = a - b
        if len(d) < 2:
            return float("nan")
        sd = float(d.std(ddof=1))
        return float(d.mean()) / sd if sd > 0 else float("nan")
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return float("nan")
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return float(a.mean() - b.mean()) / pooled if pooled > 0 else float("nan")


def difference_ci(a, b, *, level: float = DEFAULT_LEVEL, paired: bool = False) -> Interval:
    """Mean difference a − b with a t interval: Welch's (default) or, ``paired=True``, on the differences.

    ``n`` is the number of pairs (paired) or na + nb. NaN where a sample has fewer than two values.
    """
    level = _check_level(level)
    a, b = _pairs(a, b, paired)
    if paired:
        r = mean_ci(a - b, level=level)
        return r
    na, nb = len(a), len(b)
    nan = float("nan")
    if na == 0 or nb == 0:
        return Interval(nan, nan, nan, na + nb)
    diff = float(a.mean() - b.mean())
    if na < 2 or nb < 2:
        return Interval(diff, nan, nan, na + nb)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, na + nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = _t_quantile(1 - (1 - level) / 2, df) * se
    return Interval(diff, diff - half, diff + half, na + nb)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends - 1) / 2.0 + 1.0  # ranks 1..n, ties share their mean rank
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation over the pairs where both are finite (ties get average ranks).

    NaN for fewer than three pairs or when either side is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise OptionError("x and y must have the same length")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / den if den > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# noise null: what structureless smoothed noise maps of a given size get


# What a noise null is: bump when noise_maps or the statistics of a null change. Stored nulls (the table shipped with
# onnx-fe and the user's cache, onnx_fe.io.nullcache) are keyed by it, so a new definition never reads an old one.
NULL_VERSION = 1


def noise_maps(
    height: int,
    width: int,
    n_maps: int,
    *,
    seed: int = DEFAULT_SEED,
    unit: int = 0,
    sigma: float = 1.0,
    relu: bool = True,
    first: int = 0,
) -> np.ndarray:
    """Structureless maps (n_maps, height, width): white Gaussian noise, Gaussian-smoothed (``sigma`` pixels,
    reflecting borders), then ReLU'd (``relu``). Map i of ``unit`` depends on (seed, height, width, unit, i)
    only, so a longer run extends a shorter one; ``first`` gives maps first..first + n_maps − 1 of that sequence.
    """
    from scipy.ndimage import gaussian_filter

    h, w, n, first = int(height), int(width), int(n_maps), int(first)
    if h < 1 or w < 1 or n < 0 or first < 0:
        raise OptionError("height and width must be positive and n_maps and first non-negative")
    if sigma < 0:
        raise OptionError("sigma must be non-negative")
    out = np.empty((n, h, w))
    key = [_key_int(seed, "seed"), _TAG_NOISE, h, w, _key_int(unit, "unit")]
    for i in range(n):
        out[i] = np.random.default_rng(np.random.SeedSequence([*key, first + i])).standard_normal((h, w))
    if sigma > 0 and n:
        # one call over the stack, not smoothing across maps (σ = 0 on axis 0): bit-identical to filtering map by map
        out = gaussian_filter(out, (0.0, sigma, sigma), mode="reflect")
    if relu:
        np.maximum(out, 0.0, out=out)
    return out


_NOISE_PIXELS = 1 << 23  # noise map pixels made at once (float64: 64 MB); never changes a result


def noise_birth_points(
    height: int,
    width: int,
    n_maps: int,
    *,
    method: str = "cubical",
    params: dict | None = None,
    n_units: int = 16,
    seed: int = DEFAULT_SEED,
    sigma: float = 1.0,
    relu: bool = True,
    first: int = 0,
    birth_fn: Callable | None = None,
) -> np.ndarray:
    """Birth points (n_maps, n_units) int64 of the noise maps first..first + n_maps − 1 of every noise unit: what a
    noise null is computed from (:func:`null_of_birth_points`). Each depends on its own map alone, so rows computed
    in pieces equal rows computed at once. Birth points come from ``birth_fn(maps, method=method, **params)``
    (default ``onnx_fe.birth_points`` on all cores)."""
    h, w, n, n_units = int(height), int(width), int(n_maps), int(n_units)
    items = dict(sorted((params or {}).items()))
    bp = np.empty((n, n_units), dtype=np.int64)
    if n == 0:
        return bp
    # the default engine takes several units' maps in one call where they are small (the per-call cost), a bounded
    # number of pixels at once; a given birth_fn gets one unit's maps a call
    per_call = 1
    if birth_fn is None:
        from ..topology import birth_points

        def birth_fn(maps, method, **p):
            return birth_points(maps, method=method, workers=None, **p)

        per_call = max(1, _NOISE_PIXELS // (n * h * w))
    for u0 in range(0, n_units, per_call):
        us = range(u0, min(n_units, u0 + per_call))
        maps = np.concatenate([noise_maps(h, w, n, seed=seed, unit=u, sigma=sigma, relu=relu, first=first) for u in us])
        bp[:, us.start : us.stop] = np.asarray(birth_fn(maps, method=method, **items)).reshape(len(us), n).T
    return bp


def null_of_birth_points(height: int, width: int, bp, k: int = DEFAULT_K) -> NoiseNull:
    """The noise null of noise units' birth points ``bp`` (n_maps, n_units): each unit's FE, rarefied FE and birth
    rate over its maps (one cell each) and their means."""
    bp = _as_birth_points(bp, 2)
    n_maps, n_units = bp.shape
    if n_maps < 1 or n_units < 1:
        raise OptionError("n_maps and n_units must be positive")
    st = cell_statistics(bp, np.zeros(n_maps, dtype=np.int64), 1, k=_check_k(k), n_resamples=0)
    fe, fr, br = st.feature_entropy[0], st.fe_rarefied[0], st.birth_rate[0]
    for a in (fe, fr, br):
        a.setflags(write=False)
    mean_fr = float(np.nanmean(fr)) if np.isfinite(fr).any() else float("nan")
    return NoiseNull(
        int(height),
        int(width),
        n_maps,
        n_units,
        float(fe.mean()),
        mean_fr,
        float(br.mean()),
        float(st.n_births[0].mean()),
        fe,
        fr,
        br,
    )


class NoiseNull(NamedTuple):
    height: int
    width: int
    n_maps: int
    n_units: int
    feature_entropy: float  # mean over the noise units
    fe_rarefied: float  # mean over the noise units with n_births ≥ k (NaN if none)
    birth_rate: float
    n_births: float
    fe_units: np.ndarray  # (n_units,) one value per noise unit
    fe_rarefied_units: np.ndarray
    birth_rate_units: np.ndarray


def noise_null(
    height: int,
    width: int,
    *,
    method: str = "cubical",
    params: dict | None = None,
    n_maps: int = 50,
    n_units: int = 16,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
    sigma: float = 1.0,
    relu: bool = True,
    birth_fn: Callable | None = None,
) -> NoiseNull:
    """FE, rarefied FE and birth rate of ``n_units`` noise "units" of ``n_maps`` maps each (see :func:`noise_maps`).

    Birth points come from ``birth_fn(maps, method=method, **params)`` (default ``onnx_fe.birth_points``),
    so this module needs no topology engine. Raw FE of noise depends on ``n_maps`` (more maps, more
    distinct values); pass the number of images per class it is compared with. Pure and memoised:
    a function of its arguments only.
    """
    items = tuple(sorted((params or {}).items()))
    return _noise_null(
        int(height),
        int(width),
        method,
        items,
        int(n_maps),
        int(n_units),
        _check_k(k),
        _key_int(seed, "seed"),
        float(sigma),
        bool(relu),
        birth_fn,
    )


@lru_cache(maxsize=256)
def _noise_null(h, w, method, items, n_maps, n_units, k, seed, sigma, relu, birth_fn) -> NoiseNull:
    if n_maps < 1 or n_units < 1:
        raise OptionError("n_maps and n_units must be positive")
    bp = noise_birth_points(
        h,
        w,
        n_maps,
        method=method,
        params=dict(items),
        n_units=n_units,
        seed=seed,
        sigma=sigma,
        relu=relu,
        birth_fn=birth_fn,
    )
    return null_of_birth_points(h, w, bp, k)
