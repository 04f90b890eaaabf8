"""The combination statistics of the validity study (docs/preregistration_validity.md), pure and without I/O.

Per network, ``onnx_fe.scores.validity`` gives an effect and its B bootstrap replicates over units. This module
combines networks into the registered effect, CI and p-value, applies Holm's step-down correction and turns the
result into a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

LABELS = ("reproduced", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Combined:
    """A registered effect: m, its CI, the unadjusted two-sided p, and how many groups (seeds, networks) had a value."""

    m: float
    low: float
    high: float
    p: float
    n: int
    var_between: float
    var_units: float


NAN = float("nan")


def combine(group_effects, group_replicates, level: float = 0.95, min_groups: int = 2) -> Combined:
    """m ± t(1 − α/2, n − 1) · sqrt(s²/n + v_units) over n groups (seeds or networks).

    ``group_effects``: (n,) the effect of each group (NaN: no value). ``group_replicates``: (n, B) the same effect
    in each of B unit resamples (replicate b of every group enters replicate b of m); v_units is the variance of the
    mean over groups across replicates (ddof 1). The p-value is two-sided, from m / sqrt(s²/n + v_units) with
    n − 1 degrees of freedom. Fewer than ``min_groups`` groups with a value: m only (CI and p NaN).
    """
    e = np.asarray(group_effects, dtype=float).reshape(-1)
    if e.size == 0:
        return Combined(NAN, NAN, NAN, NAN, 0, NAN, NAN)
    r = np.asarray(group_replicates, dtype=float).reshape(len(e), -1)
    keep = np.isfinite(e)
    e, r = e[keep], r[keep]
    n = int(e.size)
    if n < min_groups:  # the mean exists, its interval does not
        return Combined(float(e.mean()) if n else NAN, NAN, NAN, NAN, n, NAN, NAN)
    m = float(e.mean())
    var_between = float(e.var(ddof=1))
    reps = r.mean(axis=0)
    reps = reps[np.isfinite(reps)]
    var_units = float(reps.var(ddof=1)) if reps.size > 1 else NAN
    if not math.isfinite(var_units):
        return Combined(m, NAN, NAN, NAN, n, var_between, var_units)
    se = math.sqrt(var_between / n + var_units)
    q = float(student_t.ppf(0.5 + level / 2, n - 1))
    if se == 0:
        p = 0.0 if m != 0 else 1.0
    else:
        p = float(2 * student_t.sf(abs(m) / se, n - 1))
    return Combined(m, m - q * se, m + q * se, p, n, var_between, var_units)


def bootstrap_p(effect: float, replicates) -> float:
    """Two-sided bootstrap p of one network: twice the smaller share of replicates on either side of 0 (at most 1)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not math.isfinite(effect) or r.size == 0:
        return NAN
    below, above = float(np.mean(r <= 0)), float(np.mean(r >= 0))
    return min(1.0, 2 * min(below, above))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    k = idx.size
    if k == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (k - i) * p[j]))
        out[j] = running
    return out


def verdict(m: float, p_adjusted: float, direction: int = 1, alpha: float = 0.05) -> str:
    """reproduced / contradicted when the Holm-adjusted p is below alpha (by the sign of m against the registered
    direction), inconclusive otherwise or when not estimable."""
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not (math.isfinite(m) and math.isfinite(p_adjusted)) or p_adjusted >= alpha or m == 0:
        return "inconclusive"
    return "reproduced" if (m > 0) == (direction > 0) else "contradicted"
