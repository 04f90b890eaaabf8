"""Comparing networks scored on the same images (pure math, no I/O): layer alignment and network-level differences.

**Alignment.** Layer ℓ of a network with L Conv layers (canonical order, every Conv counted, scored or not) sits at
relative depth ℓ / (L − 1). Each layer of the reference network is matched with the scored layer of the other
network whose relative depth is nearest (ties go to the shallower layer), so every reference layer has a partner
whatever the two architectures are. Two networks with the same Conv layers align index by index.

**Network-level statistic.** T = the mean, over the reference's scored layers, of the aligned layer's value, where a
layer's value is the mean over its units of each unit's mean over classes (as in layers.csv): ``fe`` (raw feature
entropy) or ``fe_rarefied`` (units and classes with fewer than k births left out). The difference D = T(other) −
T(reference) is the mean over the reference's layers of the aligned layers' differences.

**Paired bootstrap over images.** Each class's images are resampled with replacement (:func:`image_resamples`, keyed
by (seed, class id, N), as for the per-cell intervals), and *both* networks are recomputed on the *same* resample:
a unit's resampled histogram is the integer sum of the image multiplicities over the images holding each value. The
percentile interval of the B resampled differences, re-centred on D (resampling repeats images, which lowers
plug-in entropies by amounts that differ between networks) and widened to contain D, is the CI. It needs the same images in the
same order for both networks (always so in ``onnx-fe compare``) and nothing else: the units of the two networks
need not correspond.

**Permutation test over images.** Under H0 the two networks' birth-point rows of each image are exchangeable: for
each image it does not matter which network produced which row. A permutation swaps the two networks' rows of a
random half of the images (every layer of an image at once, one fair coin per image) and recomputes D; the two-sided
p-value is (1 + #{|D*| ≥ |D|}) / (1 + P) over P permutations drawn from a fixed seed (exact at any P when H0 holds).
Swapping rows is only defined when the two networks have the same scored layers, layer by layer the same number of
units, map size and tap kind, and it swaps unit j of one network with unit j of the other. Only when unit j *is*
unit j — one network descends from the other: its initial weights, a rescaled or fine-tuned copy, another epoch, a
training from the same seed — is exchangeability a natural null ("the change left these units' responses as they
were", which implies equal T); for unrelated units (a random-init twin, trainings from different seeds) two networks
with equal T are still not exchangeable, and in
simulation the rarefied p-value then fell to 0.05 or below in 9.8 % of trials. :func:`permutation_applicable`
therefore asks for the same layers *and* corresponding units, read from the conv filters (:func:`filter_match`);
otherwise the test is not applicable and the reason is given. The bootstrap CI applies in every case (docs/method.md,
"Comparing networks").
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import OptionError
from .statistics import (
    DEFAULT_K,
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    _check_k,
    _check_level,
    _group_sums,
    _key_int,
    _rarefy_table,
    _row_quantiles,
    _x_log_x,
    image_resamples,
)

DEFAULT_PERMUTATIONS = 999
_TAG_PERM = 0x0FE_5A4B
_BLOCK_ELEMENTS = 1 << 22  # weights × births held at once (never changes a result)
STATISTICS = ("fe", "fe_rarefied")


# ---------------------------------------------------------------------------------------------
# alignment by relative depth


def relative_depth(index: int, n_layers: int) -> float:
    """Relative depth of Conv layer ``index`` of a network with ``n_layers`` Conv layers: index / (n_layers − 1)."""
    return float(_depth(index, n_layers))


def _depth(index: int, n_layers: int) -> Fraction:
    index, n_layers = int(index), int(n_layers)
    if n_layers < 1 or not 0 <= index < n_layers:
        raise OptionError(f"layer index {index} outside 0..{n_layers - 1}")
    return Fraction(index, n_layers - 1) if n_layers > 1 else Fraction(0)


def align_layers(ref: Sequence[int], ref_n_layers: int, other: Sequence[int], other_n_layers: int) -> list[int]:
    """For each reference layer index, the position in ``other`` of the layer at the nearest relative depth.

    ``ref`` and ``other`` are the scored layers' canonical indices, ``*_n_layers`` the networks' numbers of Conv
    layers. Depths are compared exactly (fractions); ties go to the shallower layer. Never leaves a gap.
    """
    if not len(other):
        raise OptionError("the other network has no scored layer to align with")
    od = [_depth(i, other_n_layers) for i in other]
    out = []
    for i in ref:
        d = _depth(i, ref_n_layers)
        out.append(min(range(len(od)), key=lambda j: (abs(od[j] - d), od[j], j)))
    return out


# ---------------------------------------------------------------------------------------------
# resampled layer values


def _class_unit_values(rows: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FE and rarefied FE of every unit of one class under each weighting of its rows.

    ``rows`` (n, C) birth points; ``weights`` (P, n) non-negative integers (how often each row counts).
    Returns (fe (P, C), fe_rarefied (P, C), NaN where a unit has fewer than k weighted births).
    A unit's weighted histogram is an integer sum over the rows holding each value (exact in any order).
    """
    n, c = rows.shape
    p = weights.shape[0]
    fe = np.zeros((p, c))
    fr = np.full((p, c), np.nan)
    img, unit = np.nonzero(rows)
    if img.size == 0:
        return fe, fr
    vmax = int(rows.max())
    key = unit.astype(np.int64) * (vmax + 1) + rows[img, unit]
    order = np.argsort(key, kind="stable")
    key, img = key[order], img[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    kunit = key[starts] // (vmax + 1)
    ustarts = np.flatnonzero(np.r_[True, kunit[1:] != kunit[:-1]])
    units = kunit[ustarts]
    key_slot = np.repeat(np.arange(len(ustarts)), np.diff(np.r_[ustarts, len(kunit)]))
    top = int(weights.sum(axis=1).max()) if p else 0
    xlx = _x_log_x(max(top, 1))
    groups = _group_sums(img, starts, n)  # (values, rows) 0/1: exact integer sums, no copy of weights[:, img]
    step = max(1, _BLOCK_ELEMENTS // max(1, len(starts)))
    for s in range(0, p, step):
        w = weights[s : s + step]
        counts = np.ascontiguousarray((groups @ w.T).T)  # (b, values) integer histograms
        nstar = np.add.reduceat(counts, ustarts, axis=1)  # (b, units with births)
        sx = np.add.reduceat(np.take(xlx, counts), ustarts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fe[s : s + step, units] = np.where(nstar > 0, (np.take(xlx, nstar) - sx) / nstar, 0.0)
        ok = nstar >= k
        if ok.any():
            n_lo, n_hi = max(int(nstar[ok].min()), k), int(nstar.max())
            table = _rarefy_table(n_lo, n_hi, k).ravel()
            ns = np.clip(nstar - n_lo, 0, n_hi - n_lo)[:, key_slot]
            g = np.add.reduceat(np.take(table, ns * (n_hi + 1) + counts), ustarts, axis=1)
            fr[s : s + step, units] = np.where(ok, 0.0 - g, np.nan)
    return fe, fr


def _layer_values(rows_by_class: list[np.ndarray], weights_by_class: list[np.ndarray], k: int) -> np.ndarray:
    """(P, 2) layer values (fe, fe_rarefied) under P weightings: mean over units of each unit's mean over classes."""
    p = weights_by_class[0].shape[0]
    c = rows_by_class[0].shape[1]
    fe_sum = np.zeros((p, c))
    fr_sum = np.zeros((p, c))
    fr_n = np.zeros((p, c), dtype=np.int64)
    for rows, w in zip(rows_by_class, weights_by_class):
        fe, fr = _class_unit_values(rows, w, k)
        fe_sum += fe
        ok = ~np.isnan(fr)
        fr_sum += np.where(ok, fr, 0.0)
        fr_n += ok
    out = np.empty((p, 2))
    out[:, 0] = (fe_sum / len(rows_by_class)).mean(axis=1) if c else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_fr = np.where(fr_n > 0, fr_sum / np.maximum(fr_n, 1), np.nan)
        n_units = (fr_n > 0).sum(axis=1)
        out[:, 1] = np.where(n_units > 0, np.nansum(unit_fr, axis=1) / np.maximum(n_units, 1), np.nan)
    return out


def _network_values(layer_values: list[np.ndarray], use: np.ndarray) -> np.ndarray:
    """(P, 2) network values: per statistic, the mean over the used layers of the finite layer values."""
    v = np.stack(layer_values, axis=2)  # (P, 2, layers)
    v = np.where(use[None, :, :], v, np.nan)
    n = np.isfinite(v).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(v, axis=2) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# the network-level comparison


class NetworkComparison(NamedTuple):
    """Network-level statistic T of two networks and their difference, one entry per statistic (fe, fe_rarefied)."""

    statistics: tuple[str, ...]  # ("fe", "fe_rarefied")
    reference: np.ndarray  # (2,) T of the reference
    reference_ci: np.ndarray  # (2, 2) bootstrap [low, high]
    other: np.ndarray  # (2,) T of the other network (over the aligned layers)
    other_ci: np.ndarray
    difference: np.ndarray  # (2,) other − reference
    difference_ci: np.ndarray  # (2, 2) paired bootstrap over images
    p_value: np.ndarray  # (2,) permutation test (NaN when not applicable or no permutations)
    permutation: str  # "applied…" or "n/a: <why>"
    n_resamples: int
    n_permutations: int
    n_layers: np.ndarray  # (2,) aligned layers that enter T (fe_rarefied: finite for both networks)


def class_key(name: str) -> int:
    """The bootstrap key of a class: from its name, as ``onnx-fe score`` keys a class's resamples."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "little")


def permutation_applicable(
    ref_layers: Sequence[dict], other_layers: Sequence[dict], alignment: Sequence[int], unit_match: float = math.nan
) -> tuple[bool, str]:
    """Whether the two networks' image rows can be swapped: the same scored layers, unit for unit.

    ``ref_layers`` and ``other_layers`` describe each network's scored layers in order (``layer_index``, ``units``,
    ``height``, ``width``, ``tap``); ``alignment`` is :func:`align_layers`'s answer. Swappable when both networks
    have as many scored layers, the alignment pairs them one to one in order, and each pair has the same number of
    units, map size and tap kind, and unit j of one network is unit j of the other: ``unit_match``
    (:func:`filter_match`) at least ``UNIT_MATCH_MIN``. Where the filters could not be compared (``unit_match``
    NaN) the test is applied with a note. Returns (applicable, "applied…" or the reason it is not).
    """
    if len(ref_layers) != len(other_layers):
        return False, f"the networks have {len(ref_layers)} and {len(other_layers)} scored layers"
    if list(alignment) != list(range(len(ref_layers))):
        return False, "relative depth does not pair the layers one to one"
    for a, b in zip(ref_layers, other_layers):
        for key, what in (("units", "units"), ("height", "map height"), ("width", "map width"), ("tap", "tap")):
            if a.get(key) != b.get(key):
                return False, (
                    f"layer {a.get('layer_index')} and its aligned layer {b.get('layer_index')} differ in {what} "
                    f"({a.get(key)} vs {b.get(key)}), so image rows cannot be swapped"
                )
    if math.isnan(unit_match):
        return True, "applied (unit correspondence not checked: conv weights are not constants)"
    if unit_match < UNIT_MATCH_MIN:
        return False, (
            f"units do not correspond (only {unit_match:.0%} of the filters are nearest to their namesake), so "
            "swapping image rows tests whether the networks are interchangeable, not whether their FE differs"
        )
    return True, f"applied (units correspond: {unit_match:.0%} of the filters are nearest to their namesake)"


UNIT_MATCH_MIN = 0.5


def filter_match(ref_filters: Sequence[np.ndarray | None], other_filters: Sequence[np.ndarray | None]) -> float:
    """Share of units whose conv filter is most similar (cosine) to the filter of the same index in the other network.

    ``*_filters``: per aligned layer, the (C, fan-in) weights (None where not a constant). Pooled over layers. About
    1/C for networks with unrelated units (the zoo's digits VGG against its random-init twin: 0.04), near 1 when one
    network descends from the other (against its initial weights, a rescaled copy, another epoch, a training from the
    same seed: 0.99–1.00 on the zoo). NaN when a layer's filters are missing or differ in shape.
    """
    hits = total = 0
    for a, b in zip(ref_filters, other_filters):
        if a is None or b is None:
            return float("nan")
        a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
        b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
        if a.shape != b.shape:
            return float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            an = a / np.linalg.norm(a, axis=1, keepdims=True)
            bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        m = np.nan_to_num(an @ bn.T, nan=-2.0)
        hits += int((m.argmax(axis=1) == np.arange(len(m))).sum())
        total += len(m)
    return hits / total if total else float("nan")


def _permutation_signs(n_images: int, n_permutations: int, seed) -> np.ndarray:
    """(P, N) int32 0/1: 1 where a permutation swaps the image's rows; a function of (seed, N, P) only."""
    ss = np.random.SeedSequence([_key_int(seed, "seed"), _TAG_PERM, int(n_images)])
    return np.random.default_rng(ss).integers(0, 2, size=(n_permutations, n_images)).astype(np.int32)


def _interval(x: np.ndarray, est: float, qs) -> tuple[float, float]:
    """Percentile interval of the resampled values ``x``, re-centred on the estimate, then widened to contain it.

    Adding est − mean(x) moves the bootstrap distribution's centre onto the estimate: resampling repeats images,
    which biases entropies down (more for broad birth distributions), so the raw percentile interval of a
    difference of two networks' FE would be shifted by the difference of their biases.
    """
    x = x[np.isfinite(x)]
    if not math.isfinite(est) or x.size == 0:
        return float("nan"), float("nan")
    lo, hi = _row_quantiles(x[None, :], qs)
    shift = est - float(x.mean())
    return min(float(lo[0]) + shift, est), max(float(hi[0]) + shift, est)


def compare_networks(
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    labels,
    *,
    class_ids=None,
    k: int = DEFAULT_K,
    level: float = DEFAULT_LEVEL,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed=DEFAULT_SEED,
    permutation: tuple[bool, str] | None = None,
) -> NetworkComparison:
    """Network-level T of two networks on the same N images, their difference, bootstrap CIs and a permutation test.

    ``reference[i]`` and ``other[i]`` are the (N, C_i) birth points of the i-th aligned layer pair (``other`` may
    repeat a layer; C may differ between the two). ``labels`` (N,) class indices, the same images in the same order
    for both. ``class_ids`` key each class's bootstrap resamples (default: the class index; ``onnx-fe compare``
    passes :func:`class_key` of the class names, as ``score`` does). ``permutation``: (applicable, reason); by
    default applicable when every layer pair has the same number of units. ``n_resamples`` = 0 or
    ``n_permutations`` = 0 skip the bootstrap or the test (NaN). Deterministic: a function of the arguments only.
    """
    if len(reference) != len(other) or not len(reference):
        raise OptionError("give one or more aligned layer pairs")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)) or labels.size == 0:
        raise OptionError("labels must be a non-empty vector of class indices")
    if labels.min() < 0:
        raise OptionError("labels must be non-negative")
    n = len(labels)
    ref = [np.asarray(b) for b in reference]
    oth = [np.asarray(b) for b in other]
    for b in ref + oth:
        if b.ndim != 2 or b.shape[0] != n:
            raise OptionError(f"birth points must be (N = {n}, C) arrays, got {b.shape}")
        if b.size and b.min() < 0:
            raise OptionError("birth points must be non-negative")
    k = _check_k(k)
    level = _check_level(level)
    for v, what in ((n_resamples, "n_resamples"), (n_permutations, "n_permutations")):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise OptionError(f"{what} must be a non-negative integer, got {v!r}")
    n_resamples, n_permutations = int(n_resamples), int(n_permutations)
    present = np.flatnonzero(np.bincount(labels))
    class_ids = np.arange(present.max() + 1) if class_ids is None else np.asarray(class_ids)
    idx = [np.flatnonzero(labels == q) for q in present]
    qs = ((1 - level) / 2, 1 - (1 - level) / 2)
    if permutation is None:
        same = all(a.shape[1] == b.shape[1] for a, b in zip(ref, oth))
        permutation = (True, "applied") if same else (False, "the aligned layers differ in their numbers of units")
    can_permute, why = permutation
    if can_permute and any(a.shape[1] != b.shape[1] for a, b in zip(ref, oth)):
        raise OptionError("a permutation needs the same number of units in every aligned layer pair")

    def values(layers, weights_by_class):
        return [_layer_values([b[i] for i in idx], weights_by_class, k) for b in layers]

    ones = [np.ones((1, len(i)), dtype=np.int32) for i in idx]
    same_arrays = all(a is b for a, b in zip(ref, oth))  # a network against itself: compute once
    ref_obs = values(ref, ones)
    oth_obs = ref_obs if same_arrays else values(oth, ones)
    # fe: every aligned pair; fe_rarefied: the pairs where both layers have a finite value
    use = np.ones((2, len(ref)), dtype=bool)
    use[1] = [math.isfinite(a[0, 1]) and math.isfinite(b[0, 1]) for a, b in zip(ref_obs, oth_obs)]
    t_ref = _network_values(ref_obs, use)[0]
    t_oth = _network_values(oth_obs, use)[0]
    diff = t_oth - t_ref
    nan2 = np.full((2, 2), np.nan)
    ref_ci, oth_ci, diff_ci = nan2.copy(), nan2.copy(), nan2.copy()
    if n_resamples:
        w = [image_resamples(len(i), n_resamples, seed=seed, class_id=int(class_ids[q])) for i, q in zip(idx, present)]
        w = [x.astype(np.int32) for x in w]
        tr = _network_values(values(ref, w), use)
        to = tr if same_arrays else _network_values(values(oth, w), use)
        for s in range(2):
            ref_ci[s] = _interval(tr[:, s], t_ref[s], qs)
            oth_ci[s] = _interval(to[:, s], t_oth[s], qs)
            diff_ci[s] = _interval(to[:, s] - tr[:, s], diff[s], qs)
    p = np.full(2, np.nan)
    if can_permute and n_permutations:
        signs = _permutation_signs(n, n_permutations, seed)
        rows = [[np.concatenate([a[i], b[i]], axis=0) for i in idx] for a, b in zip(oth, ref)]  # other's, then ref's
        w1 = [np.concatenate([1 - signs[:, i], signs[:, i]], axis=1) for i in idx]  # group "other"
        w2 = [np.concatenate([signs[:, i], 1 - signs[:, i]], axis=1) for i in idx]  # group "reference"
        g1 = _network_values([_layer_values(r, w1, k) for r in rows], use)
        g2 = _network_values([_layer_values(r, w2, k) for r in rows], use)
        dstar = g1 - g2
        for s in range(2):
            if math.isfinite(diff[s]):
                tol = 1e-12 * max(1.0, abs(diff[s]))
                hits = np.count_nonzero(np.abs(dstar[:, s]) >= abs(diff[s]) - tol)
                p[s] = (1 + hits) / (1 + n_permutations)
    perm_note = why if can_permute else f"n/a: {why}"
    if can_permute and not n_permutations:
        perm_note = "n/a: no permutations asked (0)"
    return NetworkComparison(
        STATISTICS,
        t_ref,
        ref_ci,
        t_oth,
        oth_ci,
        diff,
        diff_ci,
        p,
        perm_note,
        n_resamples,
        n_permutations if can_permute else 0,
        use.sum(axis=1),
    )
