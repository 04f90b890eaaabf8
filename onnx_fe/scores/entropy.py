"""Stage 5 — entropy: feature entropy of a unit from its birth points (pure math).

For one unit and one class with N images and birth points b_1..b_N (0 = none):

* ``birth_rate`` = #{b_i ≠ 0} / N — the paper's "selective rate" (the
  authors' code reports its complement under that name);
* ``feature_entropy`` = −Σ_k p_k ln p_k over the distinct nonzero birth points
  k, p_k = their count / #{b_i ≠ 0}; 0 when no image has a birth point;
* ``ineffectiveness`` = feature_entropy / birth_rate (feature_entropy when the
  rate is 0), the score the reference code ranks units by.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import OptionError


class FeatureEntropy(NamedTuple):
    feature_entropy: float
    birth_rate: float
    ineffectiveness: float


def _entropy_of_counts(counts: np.ndarray) -> float:
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts / total
    return float(-(p * np.log(p)).sum())


def feature_entropy(birth_points) -> FeatureEntropy:
    """Feature entropy, birth rate and ineffectiveness of one unit over one class's images."""
    b = np.asarray(birth_points).ravel()
    if b.size == 0:
        raise OptionError("feature_entropy needs at least one birth point")
    if not np.issubdtype(b.dtype, np.integer):
        if not np.all(np.isfinite(b)) or np.any(b != np.round(b)):
            raise OptionError("birth points must be integers")
        b = b.astype(np.int64)
    if (b < 0).any():
        raise OptionError("birth points must be non-negative (0 = no birth point)")
    nz = b[b != 0]
    rate = nz.size / b.size
    _, counts = np.unique(nz, return_counts=True)
    h = _entropy_of_counts(counts)
    return FeatureEntropy(h, rate, h / rate if rate > 0 else h)


def entropy_table(birth_points: np.ndarray, labels: np.ndarray, n_classes: int):
    """Per class × unit scores from a (N, C) birth-point matrix.

    Returns (n_images (K,), feature_entropy (K, C), birth_rate (K, C), ineffectiveness (K, C)).
    """
    bp = np.asarray(birth_points)
    labels = np.asarray(labels)
    k_n = np.bincount(labels, minlength=n_classes)
    c = bp.shape[1]
    fe = np.zeros((n_classes, c))
    br = np.zeros((n_classes, c))
    ineff = np.zeros((n_classes, c))
    for k in range(n_classes):
        rows = bp[labels == k]
        if len(rows) == 0:
            fe[k] = br[k] = ineff[k] = np.nan
            continue
        for j in range(c):
            fe[k, j], br[k, j], ineff[k, j] = feature_entropy(rows[:, j])
    return k_n, fe, br, ineff
