"""The per-map baselines HRank (matrix rank) and activation_std against numpy's own functions, map by map."""

import numpy as np
import pytest

from onnx_fe.scores.baselines import map_ranks, map_std


def fixed_maps(h: int, w: int) -> tuple[np.ndarray, list[int | None]]:
    """A stack of float32 (h, w) maps and the rank each must have (None: whatever matrix_rank says)."""
    rng = np.random.default_rng([h, w])
    maps, want = [], []

    def add(m, r):
        maps.append(np.asarray(m, dtype=np.float32))
        want.append(r)

    add(np.zeros((h, w)), 0)
    add(np.full((h, w), 1.5), 1)
    add(np.full((h, w), -3e-4), 1)
    add(np.outer(rng.random(h) + 0.1, rng.random(w) + 0.1), 1)  # rank-1 outer product (computed in float64)
    u, v = rng.standard_normal(h).astype(np.float32), rng.standard_normal(w).astype(np.float32)
    add(np.outer(u, v), 1)  # rank-1 outer product computed in float32, signed
    add(np.maximum(np.outer(u, v), 0), None)  # ReLU of a rank-1 map: rank 1 or 2 (sign patterns)
    k = min(h, w)
    r2 = min(2, k)
    add(rng.standard_normal((h, r2)) @ rng.standard_normal((r2, w)), r2)
    full = np.maximum(rng.standard_normal((h, w)), 0)
    add(full, None)
    zeroed = full.copy()
    zeroed[: h // 2, :] = 0  # a ReLU-zeroed block of rows: at most h - h//2 independent rows
    add(zeroed, None)
    block = rng.standard_normal((h, w))
    block[h // 3 :, w // 3 :] = 0
    add(np.maximum(block, 0), None)
    one = np.zeros((h, w))
    one[h // 2, w // 2] = 7.0  # a single nonzero pixel
    add(one, 1)
    add(np.eye(h, w) * 1e30, k)  # large values: the tolerance is relative
    add(np.eye(h, w) * np.float32(1e-30), k)
    tiny = np.eye(h, w)
    tiny[0, 0] = 1e9  # one huge singular value hides the others below the relative tolerance
    add(tiny, 1)
    return np.stack(maps), want


SHAPES = [(1, 1), (1, 9), (5, 9), (8, 8), (9, 5), (16, 16), (28, 28)]


@pytest.mark.parametrize("h,w", SHAPES)
def test_hrank_is_numpy_matrix_rank_of_each_float32_map(h, w):
    maps, want = fixed_maps(h, w)
    got = map_ranks(maps)
    assert got.dtype == np.int32 and got.shape == (len(maps),)
    ref = np.array([np.linalg.matrix_rank(m) for m in maps])  # each map alone, float32 as stored
    np.testing.assert_array_equal(got, ref)
    for i, r in enumerate(want):
        if r is not None:
            assert got[i] == r, (i, got[i], r)
    assert got[8] <= h - h // 2  # half the rows zeroed (ReLU): at most the other half are independent


def test_hrank_of_float64_maps_is_taken_on_float32():
    """A map handed over as float64 is ranked as its float32 values: a float32 outer product stays rank 1."""
    rng = np.random.default_rng(3)
    m = np.outer(rng.random(12), rng.random(12)).astype(np.float32).astype(np.float64)
    m += 1e-9 * rng.standard_normal((12, 12))  # below float32 resolution
    assert np.linalg.matrix_rank(m) == 12  # float64: full rank
    assert map_ranks(m[None])[0] == np.linalg.matrix_rank(m.astype(np.float32)) == 1


def test_hrank_and_std_do_not_depend_on_the_chunk():
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.standard_normal((37, 14, 14)), 0).astype(np.float32)
    maps[::5, :7] = 0
    r, s = map_ranks(maps), map_std(maps)
    for a, b in ((0, 1), (3, 4), (5, 20), (11, 37)):
        np.testing.assert_array_equal(map_ranks(maps[a:b]), r[a:b])
        np.testing.assert_array_equal(map_std(maps[a:b]), s[a:b])


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_hrank_in_threads_is_the_same_map_for_map(workers):
    maps = np.concatenate([fixed_maps(h, w)[0] for h, w in [(16, 16)] * 3])
    rng = np.random.default_rng(5)
    maps = np.concatenate([maps, np.maximum(rng.standard_normal((40, 16, 16)), 0).astype(np.float32)])
    rng.shuffle(maps)
    want = np.array([np.linalg.matrix_rank(m) for m in maps])
    np.testing.assert_array_equal(map_ranks(maps, workers=workers), want)
    np.testing.assert_array_equal(map_ranks(maps[:3], workers=workers), want[:3])  # fewer maps than threads


@pytest.mark.parametrize("h,w", SHAPES + [(112, 112)])
def test_activation_std_is_numpy_std_in_float64(h, w):
    maps, _ = fixed_maps(h, w)
    got = map_std(maps)
    assert got.dtype == np.float32
    ref = np.array([np.std(m, dtype=np.float64) for m in maps]).astype(np.float32)
    np.testing.assert_array_equal(got, ref)
    assert got[0] == 0 and got[1] == 0  # zeros, constant
    # population (ddof 0), not sample std
    one = maps[-5].astype(np.float64)
    assert got[-5] == np.float32(np.sqrt(((one - one.mean()) ** 2).mean()))


def test_empty_stack():
    assert map_ranks(np.zeros((0, 4, 4), np.float32)).shape == (0,)
    assert map_std(np.zeros((0, 4, 4), np.float32)).shape == (0,)
    with pytest.raises(ValueError):
        map_ranks(np.zeros((4, 4)))


def test_map_std_with_the_callers_means_is_numpys_std_bit_for_bit():
    rng = np.random.default_rng(7)
    for shape in [(30, 7, 7), (12, 28, 28), (5, 56, 56), (6, 13, 17)]:
        for m in (rng.standard_normal(shape).astype(np.float32), np.maximum(rng.standard_normal(shape), 0) * 1e3):
            m = m.astype(np.float32)
            want = np.std(m, axis=(1, 2), dtype=np.float64).astype(np.float32)
            got = map_std(m, m.mean(axis=(1, 2), dtype=np.float64))
            assert got.tobytes() == want.tobytes()
