"""Cubical birth points: hand-computed maps, invariances, input checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from onnx_fe import birth_points
from onnx_fe.topology import InvalidMapError, cubical_birth_point, dense_rank
from onnx_fe.topology.cubical import cubical_batch


def ring_map():
    """7×7: a ring of 16 pixels at 5, its inside at 1 and the centre at 0, outside 0."""
    m = np.zeros((7, 7))
    m[1:6, 1:6] = 5
    m[2:5, 2:5] = 1
    m[3, 3] = 0
    return m


def test_ring_is_born_when_the_ring_closes():
    # the 16 ring pixels enter first (all tied); the hole is born then: 16/49 of the map → step ceil(100·16/49) = 33
    assert birth_points(ring_map()).tolist() == [33]
    assert cubical_birth_point(ring_map(), resolution=10, threshold=10) == 4  # ceil(10·16/49)
    assert cubical_birth_point(ring_map(), resolution=100, threshold=32) == 0  # beyond the threshold


def test_ring_built_up_pixel_by_pixel():
    # values decrease around the ring; the hole appears when the last ring pixel (the 8th) enters
    m = np.zeros((4, 4))
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    for k, (i, j) in enumerate(ring):
        m[i, j] = 10 - k
    assert cubical_birth_point(m) == int(np.ceil(100 * 8 / 16))


def test_diagonal_touches_do_not_close_a_hole():
    # 4 pixels around a lower centre, touching only at corners. The growing set is 4-connected
    # (cripser's cubical complex), so the centre is enclosed only when the background enters.
    m = np.zeros((5, 5))
    m[2, 2] = -1
    for i, j in [(1, 2), (2, 1), (2, 3), (3, 2)]:
        m[i, j] = 1
    assert cubical_birth_point(m, threshold=100) == int(np.ceil(100 * 24 / 25))
    assert cubical_birth_point(m) == 0  # beyond the default threshold of 75


def test_no_hole_maps_give_zero():
    assert birth_points(np.zeros((3, 6, 6))).tolist() == [0, 0, 0]
    blob = np.exp(-((np.arange(9)[:, None] - 4) ** 2 + (np.arange(9)[None] - 4) ** 2) / 8.0)
    assert birth_points(blob).tolist() == [0]  # a single peak grows as a disc
    assert birth_points(np.arange(20.0).reshape(4, 5)).tolist() == [0]  # a ramp
    assert birth_points(np.ones((1, 1, 1))).tolist() == [0]


def test_ties_enter_together_so_a_zero_filled_hole_has_no_persistence():
    # ring at 1, everything else 0 (ReLU-like): the hole inside fills with the zeros, which
    # enter at the same step as the outside zeros: born at the ring's step, killed at the zeros' step
    m = np.zeros((5, 5))
    m[1:4, 1:4] = 1
    m[2, 2] = 0
    assert cubical_birth_point(m) == int(np.ceil(100 * 8 / 25))


increasing = st.sampled_from(
    [
        lambda a: 3.7 * a,
        lambda a: a + 100.0,
        lambda a: np.exp(a / 4),
        lambda a: np.tanh(a / 10),
        lambda a: a**3,
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(4, 12), st.integers(4, 12)), elements=st.integers(-8, 8).map(float)),
    increasing,
)
def test_invariant_under_strictly_increasing_transforms(m, f):
    assert cubical_birth_point(m) == cubical_birth_point(f(m))


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(2, 10), st.integers(2, 10)),
        elements=st.floats(-5, 5, width=32),
    )
)
def test_workers_do_not_change_results(maps):
    assert np.array_equal(birth_points(maps, workers=1), birth_points(maps, workers=3))


def test_dtype_does_not_matter():
    m = np.random.default_rng(0).normal(size=(20, 10, 10))
    assert np.array_equal(birth_points(m), birth_points(m.astype(np.float32)))  # ranks agree when no ties are created


def test_bad_inputs_are_refused_with_clear_errors():
    with pytest.raises(InvalidMapError, match="NaN"):
        birth_points(np.array([[[0.0, np.nan], [1.0, 2.0]]]))
    with pytest.raises(InvalidMapError, match="map 1"):
        birth_points(np.stack([np.zeros((3, 3)), np.full((3, 3), np.inf)]))
    with pytest.raises(InvalidMapError, match="shape"):
        birth_points(np.zeros(5))
    with pytest.raises(ValueError, match="method"):
        birth_points(np.zeros((1, 4, 4)), method="vietoris")
    with pytest.raises(ValueError, match="no parameter"):
        birth_points(np.zeros((1, 4, 4)), max_edge_density=0.5)
    with pytest.raises(ValueError, match="threshold"):
        birth_points(np.zeros((1, 4, 4)), threshold=101)


def test_dense_rank_of_integers_does_not_wrap():
    # negating unsigned values (or the smallest int64) wraps around: the minimum must still rank last
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64, np.int64):
        lo = np.iinfo(dt).min
        m = np.array([[[lo, 3], [2, 7]]], dtype=dt)
        ranks, srt = dense_rank(m)
        assert ranks.tolist() == [[[3.0, 1.0], [2.0, 0.0]]], dt
        assert srt.tolist() == [[0, 1, 2, 3]]
    ring = np.zeros((5, 5), np.uint8)  # a ring of 2 around a centre of 1 in a field of 0: hole at 8/25, then filled
    ring[1:4, 1:4] = 2
    ring[2, 2] = 1
    assert cubical_batch(ring[None], 100, 75).tolist() == [32]
