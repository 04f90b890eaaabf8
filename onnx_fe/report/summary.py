"""The numbers a report shows, computed from loaded runs (pure functions: no file, no model, no plotting).

Everything here is descriptive: means, quantiles and rank correlations of stored scores. Intervals are shown only
where the results hold them (per-cell bootstrap CIs, the CIs of ``layers.csv``); nothing here invents one.
"""

from __future__ import annotations

import math

import numpy as np

from ..model.graph import ACTIVATIONS

# Baselines compared with the feature-entropy ranking; the keys are ``onnx-fe rank --by`` indicators.
BASELINES = ("mean_activation", "apoz", "weight_l1", "hrank", "activation_std")


def tap_kind(chain: str, attrs: dict | None = None) -> str:
    """Where a layer's map is taken: "post-activation (Relu)" or "pre-activation (BatchNormalization)".

    The stored ``activated`` and ``tap_op`` layer attributes say it; older results files are read from the chain."""
    attrs = attrs or {}
    if "tap_op" in attrs and "activated" in attrs:
        return f"{'post' if bool(attrs['activated']) else 'pre'}-activation ({attrs['tap_op']})"
    ops = [o for o in str(chain).split("→") if o]
    if not ops:
        return ""
    last = ops[-1]
    return f"{'post' if last in ACTIVATIONS or last.endswith('·Mul') else 'pre'}-activation ({last})"


def nanmean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def nanquantiles(a, qs) -> list[float]:
    a = np.asarray(a, dtype=np.float64).ravel()
    a = a[~np.isnan(a)]
    return [float(np.quantile(a, q)) for q in qs] if a.size else [float("nan")] * len(qs)


def _table_row(run, index: int) -> dict:
    for r in run.layer_table or []:
        if r.get("layer_index") == index:
            return r
    return {}


def unit_means(per_class) -> np.ndarray:
    """(K classes, C units) → (C,): each unit's mean over the classes where the value is defined."""
    from ..scores.layers import unit_values

    return unit_values(per_class)


def layer_rows(run) -> list[dict]:
    """One row per scored layer, the layer values being means over units of each unit's class mean (as in
    ``layers.csv``), completed by every column of the run's ``layers.csv`` when it has one.

    Always: layer_index, layer, chain, tap_kind, height, width, units, feature_entropy, birth_rate, fe_q25 and fe_q75
    (quartiles of the units' FE), no_birth_units (units with no birth point on any image). With per-cell statistics
    in results.h5: fe_rarefied (mean over the units where it is defined), fe_ci_width and birth_rate_ci_width (median
    width of the unit × class CIs). From layers.csv, under its own names: fe_ci_low/high, fe_rarefied with its CI,
    birth_rate_ci_low/high, null_fe, null_fe_rarefied, null_birth_rate, control_*, delta_* with CIs, cohens_d,
    rho_fe_mean_activation and rho_fe_birth_rate with their CIs (how much of FE is activity).
    """
    rows = []
    for lay in run.layers:
        ufe = unit_means(lay.feature_entropy)
        ubr = unit_means(lay.birth_rate)
        q25, q75 = nanquantiles(ufe, (0.25, 0.75))
        r = {
            "layer_index": lay.index,
            "layer": lay.name,
            "chain": lay.chain,
            "tap_kind": tap_kind(lay.chain, lay.attrs),
            "height": lay.height,
            "width": lay.width,
            "units": lay.channels,
            "feature_entropy": nanmean(ufe),
            "birth_rate": nanmean(ubr),
            "fe_q25": q25,
            "fe_q75": q75,
            "no_birth_units": int(np.sum(np.nan_to_num(ubr, nan=0.0) == 0)),
        }
        st = lay.stats
        if "fe_rarefied" in st:
            r["fe_rarefied"] = nanmean(unit_means(st["fe_rarefied"]))
        for name in ("fe", "birth_rate"):
            lo, hi = st.get(f"{name}_ci_low"), st.get(f"{name}_ci_high")
            if lo is not None and hi is not None:
                w = hi - lo
                r[f"{name}_ci_width"] = float(np.nanmedian(w)) if np.isfinite(w).any() else float("nan")
        for k, v in _table_row(run, lay.index).items():
            if v is None or k in ("layer", "layer_index", "tap"):
                continue
            if k in ("fe_rarefied",) or k not in r:  # layers.csv's own layer values win (their CIs go with them)
                r[k] = v
        rows.append(r)
    return rows


def table_value(row: dict, *names):
    """The first of ``names`` that a row holds (layers.csv column names may vary between versions)."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return None


def relative_depth(indices) -> np.ndarray:
    """Position of each scored layer between the first (0) and the last (1), by order of scored layers."""
    n = len(indices)
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)
    v = x[ok]
    if v.size == 0:
        return out
    order = np.argsort(v, kind="stable")
    sv = v[order]
    ranks = np.empty(v.size)
    starts = np.r_[0, np.flatnonzero(np.diff(sv)) + 1]
    ends = np.r_[starts[1:], v.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    out[ok] = ranks
    return out


def spearman(a, b) -> float:
    """Spearman's ρ over the pairs where both are finite; NaN when fewer than 3 pairs or either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    ra, rb = average_ranks(a[ok]), average_ranks(b[ok])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def importance(score, higher_is_important: bool) -> np.ndarray:
    """Scores turned so that larger always means more important."""
    s = np.asarray(score, dtype=np.float64)
    return s if higher_is_important else -s


def rank_agreement(rankings: dict) -> list[dict]:
    """Spearman's ρ, per layer, between the feature-entropy importance and each baseline's importance.

    ``rankings``: indicator → :class:`~onnx_fe.scores.ranking.Ranking`. ρ = +1: the baseline orders the units as
    feature entropy does; 0: unrelated orders; −1: the reverse order. Also the overlap of the top quarter of units.
    """
    from ..scores.ranking import HIGHER_IS_IMPORTANT

    fe = rankings.get("feature_entropy")
    if fe is None:
        return []
    out = []
    for lr in fe.layers:
        row = {"layer_index": lr.layer_index, "layer": lr.layer, "units": lr.channels}
        imp_fe = importance(lr.score, HIGHER_IS_IMPORTANT["feature_entropy"])
        k = max(1, lr.channels // 4)
        top_fe = set(lr.order[:k].tolist())
        for by in BASELINES:
            r = rankings.get(by)
            if r is None:
                continue
            try:
                other = r.layer(lr.layer_index)
            except KeyError:
                continue
            row[f"rho_{by}"] = spearman(imp_fe, importance(other.score, HIGHER_IS_IMPORTANT[by]))
            row[f"top_overlap_{by}"] = len(top_fe & set(other.order[:k].tolist())) / k
        out.append(row)
    return out


def best_worst(order, n: int) -> tuple[list[int], list[int]]:
    """The ``n`` most and ``n`` least important units of an importance order (disjoint when the layer is small)."""
    order = [int(u) for u in order]
    n = max(0, min(n, len(order) // 2 if len(order) > 1 else len(order)))
    return order[:n], order[::-1][:n]


def gallery_images(labels, classes: list[str], per_class: int, wanted: list[str] | None = None) -> list[int]:
    """Image rows for the gallery: the first ``per_class`` images (in stored order) of each chosen class.

    Default classes: the first class and the middle one (one class when there is one)."""
    labels = np.asarray(labels)
    if wanted:
        ks = [classes.index(c) for c in wanted]
    else:
        ks = sorted({0, len(classes) // 2}) if len(classes) > 1 else [0]
    rows = []
    for k in ks:
        rows.extend(np.flatnonzero(labels == k)[:per_class].tolist())
    return rows


def fmt(v, digits: int = 3) -> str:
    """A number for a table cell: fixed digits, integers as such, missing as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)
