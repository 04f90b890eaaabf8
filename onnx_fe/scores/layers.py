"""Per-layer summaries with uncertainty, a control and the noise null (pure math, no I/O).

A layer's value is the mean over its units of each unit's class-averaged statistic; its CI is a t interval over
units. With a control network (e.g. a random-init twin) scored on the same images, ``delta_fe`` = trained − control
is the difference of the two layers' unit means, with Welch's CI over units and Cohen's d (unpaired: a twin's unit j
is a fresh draw, not unit j of the trained network).
"""

from __future__ import annotations

import warnings

import numpy as np

from .activity import fe_activity_columns
from .statistics import NoiseNull, cohens_d, difference_ci, mean_ci

UNIT_STATS = ("feature_entropy", "fe_rarefied", "birth_rate")


def unit_values(per_class: np.ndarray) -> np.ndarray:
    """(K classes, C units) → (C,) mean over the classes where the value is defined (NaN where none is)."""
    a = np.asarray(per_class, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN units stay NaN
        return np.nanmean(a, axis=0) if a.size else np.zeros(a.shape[1:])


def layer_row(
    layer: dict,
    level: float,
    null: NoiseNull | None = None,
    control: dict | None = None,
    *,
    n_resamples: int = 0,
    seed: int = 0,
) -> dict:
    """One row of layers.csv from a layer's (K, C) statistics (``layer`` as read by io.results.read_layer_scores).

    With the layer's class-mean ``mean_activation`` (K, C), also how much of FE is activity: Spearman's ρ over units
    of FE against the mean activation and against the birth rate, with ``n_resamples`` bootstrap resamples of units
    seeded by ``seed`` and the layer index (:func:`onnx_fe.scores.activity.fe_activity_columns`)."""
    row = {k: layer[k] for k in ("layer", "layer_index", "height", "width", "tap", "activated", "n_units")}
    units = {s: unit_values(layer[s]) for s in UNIT_STATS}
    for s, short in (("feature_entropy", "fe"), ("fe_rarefied", "fe_rarefied"), ("birth_rate", "birth_rate")):
        ci = mean_ci(units[s], level=level)
        row[short] = ci.estimate
        row[f"{short}_ci_low"], row[f"{short}_ci_high"] = ci.low, ci.high
        if s == "fe_rarefied":
            row["n_units_rarefied"] = ci.n
    if "mean_activation" in layer:
        row.update(
            fe_activity_columns(
                units["feature_entropy"],
                unit_values(layer["mean_activation"]),
                units["birth_rate"],
                level=level,
                n_resamples=n_resamples,
                seed=seed,
                layer_index=int(layer["layer_index"]),
            )
        )
    if null is not None:
        row["null_fe"], row["null_fe_rarefied"], row["null_birth_rate"] = (
            null.feature_entropy,
            null.fe_rarefied,
            null.birth_rate,
        )
    if control is not None:
        cu = {s: unit_values(control[s]) for s in UNIT_STATS}
        for s, short in (("feature_entropy", "fe"), ("fe_rarefied", "fe_rarefied"), ("birth_rate", "birth_rate")):
            row[f"control_{short}"] = mean_ci(cu[s], level=level).estimate
            d = difference_ci(units[s], cu[s], level=level)
            row[f"delta_{short}"], row[f"delta_{short}_ci_low"], row[f"delta_{short}_ci_high"] = (
                d.estimate,
                d.low,
                d.high,
            )
            if s == "feature_entropy":
                row["cohens_d"] = cohens_d(units[s], cu[s])
    return row


def verdict(low: float, high: float) -> str:
    """How a CI reads: "higher" / "lower" when it excludes 0, "inconclusive" when it contains 0 or is undefined."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "inconclusive"
