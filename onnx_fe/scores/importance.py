"""Unit importance from per-image ablation effects (pure math, no I/O): per-image metrics and the table rows.

Per image and unit, ``onnx-fe importance`` measures the effect of zeroing the unit alone:

* ``delta_loss``: cross-entropy of the label with the unit zeroed minus without (float64, from the float32 output);
* ``delta_top1``: 1 when the image's top-1 was right without the unit zeroed and wrong with it, -1 for the
  reverse, else 0 (so its mean over images is the drop in top-1 accuracy);
* ``delta_output``: ||out_masked − out|| / ||out||, the L2 norm over the flattened first output.

The table holds the means over images, with percentile bootstrap intervals over images for the first two: every
unit of every layer sees the same image resamples (:func:`onnx_fe.scores.statistics.image_resamples`), so the
intervals of two units are comparable and a unit's interval does not depend on which other units were measured.
"""

from __future__ import annotations

import numpy as np

from ..errors import OnnxFeError
from .statistics import _check_level, image_resamples

# the image resamples of the importance intervals are keyed by this "class id" (one group: all images)
RESAMPLE_KEY = "importance"


def as_logits(out: np.ndarray) -> np.ndarray | None:
    """The first output as (N, classes) float64, or None when it is not one (trailing 1×1 dims are dropped)."""
    a = np.asarray(out)
    if a.ndim > 2 and all(d == 1 for d in a.shape[2:]):
        a = a.reshape(a.shape[0], a.shape[1])
    if a.ndim != 2 or a.shape[1] < 1:
        return None
    return a.astype(np.float64)


def looks_like_probabilities(out: np.ndarray) -> bool:
    """Rows in [0, 1] that sum to 1: the output is read as probabilities (loss −ln p_y), else as logits."""
    a = np.asarray(out, dtype=np.float64)
    return bool((a >= 0).all() and (a <= 1).all() and np.allclose(a.sum(axis=1), 1, atol=1e-3))


def cross_entropy(out: np.ndarray, labels: np.ndarray, probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the cross-entropy of the label (float64) and whether the top-1 is the label (int8).
    Each row's values depend on that row alone."""
    a = out.astype(np.float64)
    rows = np.arange(len(a))
    y = np.asarray(labels, dtype=np.int64)
    if probabilities:
        loss = -np.log(np.clip(a[rows, y], 1e-12, None))
    else:
        mx = a.max(axis=1, keepdims=True)
        lse = np.log(np.exp(a - mx).sum(axis=1)) + mx[:, 0]
        loss = lse - a[rows, y]
    correct = (a.argmax(axis=1) == y).astype(np.int8)
    return loss, correct


def output_change(out: np.ndarray, base: np.ndarray) -> np.ndarray:
    """||out − base|| / ||base|| per image (L2 over each image's flattened output), float64; 0 where both are 0 and
    +inf where only the base is 0."""
    n = len(base)
    o = np.asarray(out, dtype=np.float64).reshape(n, -1)
    b = np.asarray(base, dtype=np.float64).reshape(n, -1)
    num = np.sqrt(np.square(o - b).sum(axis=1))
    den = np.sqrt(np.square(b).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den > 0, r, np.where(num > 0, np.inf, 0.0))


def mean_with_ci(values: np.ndarray, weights: np.ndarray | None, level: float):
    """Means over images (axis 0) of (N, U) per-image values, and percentile bootstrap intervals from the
    resample multiplicities ``weights`` (B, N) (None: no interval), widened to contain the mean."""
    v = np.asarray(values, dtype=np.float64)
    est = v.mean(axis=0)
    if weights is None or not len(weights) or v.shape[1] == 0:
        nan = np.full(v.shape[1], np.nan)
        return est, nan, nan.copy()
    means = (weights.astype(np.float64) @ v) / v.shape[0]  # (B, U)
    alpha = 1.0 - level
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return est, np.minimum(lo, est), np.maximum(hi, est)


def importance_rows(values: dict, *, level: float = 0.95, resamples: int = 1000, seed: int = 0) -> list[dict]:
    """The rows of importance.csv from the per-image values (``onnx_fe.io.importance.read_values``)."""
    level = _check_level(level)
    n = int(values["n_images"])
    if n < 1:
        raise OnnxFeError("no image was measured")
    classifier = values["output_kind"] == "classifier"
    weights = image_resamples(n, resamples, seed=seed, class_id=RESAMPLE_KEY) if resamples else None
    rows = []
    for lay in values["layers"]:
        units = lay["units"]
        d_out = lay["delta_output"].astype(np.float64).mean(axis=0)
        if classifier:
            dl, dl_lo, dl_hi = mean_with_ci(lay["delta_loss"], weights, level)
            dt, dt_lo, dt_hi = mean_with_ci(lay["delta_top1"], weights, level)
        for j, unit in enumerate(units):
            r = {"layer": lay["name"], "layer_index": lay["index"], "unit": int(unit), "n_images": n}
            if classifier:
                r.update(
                    delta_loss=float(dl[j]),
                    delta_loss_ci_low=float(dl_lo[j]),
                    delta_loss_ci_high=float(dl_hi[j]),
                    delta_top1=float(dt[j]),
                    delta_top1_ci_low=float(dt_lo[j]),
                    delta_top1_ci_high=float(dt_hi[j]),
                )
            r["delta_output"] = float(d_out[j])
            rows.append(r)
    return rows
