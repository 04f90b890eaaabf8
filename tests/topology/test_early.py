"""The early-stop cubical engine gives the cripser engine's birth points, map for map.

The oracle is the cripser path (``cubical_batch``: dense rank, ``computePH(top_dim=True)``); every test compares the
two on the same input, over ties, constant maps, every ternary 3×3 map, thin and non-square maps, tiny and huge value
ranges, float32, float64, integers, and real activations.
"""

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import onnx_fe
from onnx_fe.topology import InvalidMapError, birth_points, cubical_birth_point
from onnx_fe.topology.cubical import cubical_batch
from onnx_fe.topology.early import early_birth_points

ROOT = Path(__file__).resolve().parents[2]
PARAMS = [(100, 75), (100, 100), (10, 3), (7, 7), (1, 1)]  # (resolution, threshold)
params = st.sampled_from(PARAMS)
shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))
F32_MAX = float(np.finfo(np.float32).max)


def agree(maps, resolution=100, threshold=75):
    """Both engines on the same maps; they must agree exactly. Returns the birth points."""
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    got = early_birth_points(maps, resolution, threshold)
    want = cubical_batch(maps, resolution, threshold)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32 and got.shape == (len(maps),)
    return got


@settings(max_examples=300, deadline=None)
@given(
    arrays(np.int8, st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)), elements=st.integers(-3, 3)),
    params,
    st.sampled_from([np.float32, np.float64, np.int64]),
)
def test_few_distinct_values_many_ties(m, p, dtype):
    agree(m.astype(dtype), *p)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, shapes, elements=st.floats(-1e300, 1e300)), params)
def test_float64_of_any_magnitude(m, p):
    agree(m, *p)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, shapes, elements=st.floats(-F32_MAX, F32_MAX, width=32)), params)
def test_float32_of_any_magnitude_subnormals_and_signed_zeros(m, p):
    agree(m, *p)


@settings(max_examples=200, deadline=None)
@given(arrays(np.int64, shapes, elements=st.integers(0, 40)), st.floats(1e-15, 1e-6), st.floats(-1e6, 1e6), params)
def test_tiny_value_range_in_float64(k, eps, offset, p):
    # distinct values a few float32 ulps apart or closer: float64 keeps them distinct and in order
    agree(offset + k * (eps * max(1.0, abs(offset))), *p)


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 16), st.integers(2, 16)), elements=st.floats(-5, 5)),
    params,
)
def test_relu_maps_in_both_precisions(m, p):
    r = np.maximum(m, 0)
    agree(r, *p)
    agree(r.astype(np.float32), *p)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.floats(-1e9, 1e9), st.sampled_from([np.float32, np.float64]))
def test_constant_maps_have_no_birth_point(h, w, v, dtype):
    m = np.full((2, h, w), v, dtype=dtype)
    assert agree(m, 100, 100).tolist() == [0, 0]


def test_all_zero_relu_maps():
    z = np.zeros((3, 16, 16), np.float32)
    z[1] = -0.0
    assert agree(z).tolist() == [0, 0, 0]
    assert agree(np.maximum(-np.abs(np.random.default_rng(0).normal(size=(4, 9, 7))), 0)).tolist() == [0] * 4


def test_every_ternary_3x3_map():
    maps = np.array(list(itertools.product(range(3), repeat=9)), dtype=np.float64).reshape(-1, 3, 3)
    # the only hole a 3×3 map has is the ring of 8 closing before the centre enters: step ceil(res·8/9)
    for (res, th), step in [((100, 100), 89), ((9, 8), 8)]:
        assert set(agree(maps, res, th).tolist()) == {0, step}
    assert not agree(maps, 9, 7).any()


@pytest.mark.parametrize("h,w", [(2, 2), (2, 40), (40, 2), (1, 50), (50, 1), (3, 17), (17, 3), (5, 64), (64, 9)])
def test_thin_and_non_square_maps(h, w):
    rng = np.random.default_rng(h * 100 + w)
    for m in (rng.normal(size=(20, h, w)), rng.integers(0, 3, (20, h, w)).astype(float)):
        for p in PARAMS:
            agree(m, *p)
            agree(m.astype(np.float32), *p)


def _smooth(rng, h, w, k):
    a = rng.normal(size=(h + k - 1, w + k - 1))
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]  # k×k box sums: blobs and holes of many sizes


@pytest.mark.parametrize("seed", range(4))
def test_smooth_maps_up_to_224(seed):
    rng = np.random.default_rng(seed)
    for size in (8, 28, 56, 112, 224):
        h, w = size, int(rng.integers(max(2, size // 2), size + 1))
        m = np.stack([_smooth(rng, h, w, int(k)) for k in rng.integers(1, 9, 6)])
        for x in (m, np.maximum(m, 0), np.round(m), np.maximum(np.round(4 * m), 0) * 1e-30, 1 + 1e-7 * m):
            agree(x)
            agree(x.astype(np.float32))


def test_float64_values_that_round_to_one_float32_keep_their_order():
    # a ring of 8 closes (a hole at 8/16 of the map) just before its centre fills it; the gaps are far below
    # float32 precision, so as float32 the ring and its centre tie and the hole never persists
    m = np.zeros((4, 4))
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    for k, (i, j) in enumerate(ring):
        m[i, j] = 1 + (k + 2) * 1e-12
    m[1, 1] = 1 + 1e-12
    assert agree(m).tolist() == [50]
    assert agree(m.astype(np.float32)).tolist() == [0]


def test_minus_zero_ties_with_zero():
    # a ring of +0 around a centre of −0 in a field of −1: tied, ring and centre enter together and close no hole;
    # were −0 ordered after +0, the ring would close a hole at 8/25 of the map that the centre then fills
    m = np.full((5, 5), -1.0)
    m[1:4, 1:4] = 0.0
    m[2, 2] = -0.0
    for dt in (np.float64, np.float32):
        assert agree(m.astype(dt)).tolist() == [0]
    m[2, 2] = -0.5
    assert agree(m).tolist() == [32]


def test_integer_maps_are_ordered_exactly():
    rng = np.random.default_rng(3)
    # int64 values 1 apart near 2**62 are one float64: the early engine must still tell them apart
    m = (rng.integers(-(2**62), 2**62, size=(30, 6, 7)) // 2) * 2 + rng.integers(0, 2, size=(30, 6, 7))
    agree(m)
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.bool_):
        m = rng.integers(0, 2 if dt is np.bool_ else 100, size=(30, 5, 6))
        np.testing.assert_array_equal(early_birth_points(m.astype(dt)), cubical_batch(m.astype(np.float64), 100, 75))
        agree(m.astype(dt))  # the cripser engine on the integers themselves (its dense rank must not wrap)


def test_unsigned_zeros_rank_last_in_the_cripser_engine():
    # a ring of 2 around a centre of 1 in a field of 0: hole at 8/25, filled by the centre; the zeros come last
    m = np.zeros((5, 5), np.uint8)
    m[1:4, 1:4] = 2
    m[2, 2] = 1
    for engine in ("early", "cripser"):
        assert birth_points(m, engine=engine).tolist() == [32]


def test_engine_choice_in_the_public_api():
    rng = np.random.default_rng(7)
    maps = np.maximum(rng.normal(size=(40, 12, 10)), 0).astype(np.float32)
    want = birth_points(maps, engine="cripser")
    assert want.any()
    for workers in (1, 3):
        assert np.array_equal(birth_points(maps, workers=workers), want)  # early is the default
        assert np.array_equal(
            birth_points(maps, engine="early", workers=workers, threshold=90), early_birth_points(maps, 100, 90)
        )
    assert cubical_birth_point(maps[0], engine="cripser") == cubical_birth_point(maps[0]) == want[0]
    with pytest.raises(InvalidMapError, match="engine"):
        birth_points(maps, engine="ripser")
    with pytest.raises(InvalidMapError, match="NaN"):
        birth_points(np.array([[[0.0, np.nan], [1.0, 2.0]]]), engine="early")


def test_float16_and_long_double_maps():
    m = np.round(np.random.default_rng(5).normal(size=(40, 9, 8)), 1)
    for dt in (np.float16, np.longdouble):  # long double has no early kernel: birth_points uses cripser for it
        assert np.array_equal(birth_points(m.astype(dt)), birth_points(m.astype(dt), engine="cripser"))


def test_non_contiguous_and_single_map_inputs():
    rng = np.random.default_rng(11)
    m = rng.normal(size=(12, 15, 5))
    t = m.transpose(2, 0, 1)  # (5, 12, 15), not contiguous
    np.testing.assert_array_equal(early_birth_points(t), cubical_batch(np.ascontiguousarray(t), 100, 75))
    assert early_birth_points(m[0]).tolist() == cubical_batch(m[:1], 100, 75).tolist()
    assert early_birth_points(np.zeros((0, 5, 5))).shape == (0,)
    with pytest.raises(TypeError):
        early_birth_points(np.zeros((1, 3, 3), complex))


def test_real_activations_of_the_demo_model(tmp_path):
    # every map of 30 demo images, three layers (32², 16², 8²), as float32 and as float64
    onnx_fe.score(
        ROOT / "models/demo/model.onnx",
        ROOT / "models/demo/data",
        tmp_path,
        images_per_class=3,
        keep_activations=True,
        device="cpu",
    )
    with h5py.File(tmp_path / "results.h5", "r") as f:
        acts = [f["activations"][k][()] for k in sorted(f["activations"])]
    n = 0
    for a in acts:
        maps = a.reshape(-1, *a.shape[-2:])
        bp = agree(maps)
        agree(maps.astype(np.float64))
        assert bp.any() and not bp.all()
        n += len(maps)
    assert n == 30 * (8 + 16 + 32)


def test_every_kernel_is_compiled_to_release_the_gil():
    # birth_points(..., workers=n) runs the engine in threads: they only run in parallel if the kernel drops the GIL
    from onnx_fe.topology import early

    kernels = [early._batch, early._descending_keys, early._radix_sort, early._entered_at_first_hole]
    assert all(k.targetoptions.get("nogil") is True for k in kernels)
