"""Feature entropy: definitions and properties."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnx_fe import feature_entropy
from onnx_fe.scores.entropy import entropy_table


def test_hand_computed_values():
    fe = feature_entropy([0, 0, 3, 3, 7, 9])
    # nonzero: 3,3,7,9 → p = 1/2, 1/4, 1/4
    assert fe.feature_entropy == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert fe.birth_rate == pytest.approx(4 / 6)
    assert fe.ineffectiveness == pytest.approx(fe.feature_entropy / (4 / 6))


def test_no_birth_points_and_identical_birth_points():
    assert feature_entropy([0, 0, 0]) == (0.0, 0.0, 0.0)
    assert feature_entropy([5, 5, 5, 0]) == (0.0, 0.75, 0.0)


bps = st.lists(st.integers(0, 60), min_size=1, max_size=200)


@given(bps)
def test_bounds(b):
    fe = feature_entropy(b)
    nz = [v for v in b if v]
    assert 0 <= fe.birth_rate <= 1
    assert 0 <= fe.feature_entropy <= math.log(max(1, len(set(nz)))) + 1e-12
    assert fe.ineffectiveness >= fe.feature_entropy - 1e-12


@given(bps, st.randoms())
def test_order_and_relabelling_invariance(b, rnd):
    shuffled = list(b)
    rnd.shuffle(shuffled)
    # a bijective relabelling of nonzero birth points keeps the entropy
    relabel = {v: 1000 - v for v in set(b) if v}
    mapped = [relabel.get(v, 0) for v in b]
    assert feature_entropy(shuffled) == feature_entropy(b)
    assert feature_entropy(mapped).feature_entropy == pytest.approx(feature_entropy(b).feature_entropy)


@given(st.integers(1, 30))
def test_uniform_distribution_reaches_log_k(k):
    assert feature_entropy(list(range(1, k + 1))).feature_entropy == pytest.approx(math.log(k))


def test_entropy_table_matches_per_unit_calls():
    rng = np.random.default_rng(0)
    bp = rng.integers(0, 6, size=(30, 4))
    labels = np.repeat([0, 1, 2], 10)
    n, fe, br, ie = entropy_table(bp, labels, 3)
    assert n.tolist() == [10, 10, 10]
    for k in range(3):
        for j in range(4):
            assert (fe[k, j], br[k, j], ie[k, j]) == tuple(feature_entropy(bp[labels == k, j]))


def test_invalid_birth_points():
    with pytest.raises(ValueError):
        feature_entropy([])
    with pytest.raises(ValueError):
        feature_entropy([1, -2])
    with pytest.raises(ValueError):
        feature_entropy([1.5])
