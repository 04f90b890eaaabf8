"""The compiled tie-group scan (default clique engine) against the ripser engine and known complexes.

The golden birth points and β1 curves are checked in test_clique.py (both engines); here: the two engines agree on
random tie-heavy maps of every kind, the kernel's stages compute one rank whichever way they are chosen, and
triangulated surfaces whose β1 is known (over GF(2), as the reference counts) are found or not found as they should.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx_fe.topology import birth_points
from onnx_fe.topology.clique import clique_birth_points, clique_birth_points_ripser
from onnx_fe.topology.clique_scan import first_birth_indices


def _smooth_relu(rng, n: int, h: int, width: int) -> np.ndarray:
    """Box-smoothed Gaussian noise through a ReLU: about half exact zeros, spatially correlated like activations."""
    a = rng.standard_normal((n, h + width, h + width))
    c = np.cumsum(np.cumsum(np.pad(a, ((0, 0), (1, 0), (1, 0))), 1), 2)
    box = c[:, width:, width:] - c[:, :-width, width:] - c[:, width:, :-width] + c[:, :-width, :-width]
    return np.maximum(box[:, :h, :h], 0)


@st.composite
def tie_heavy_maps(draw, min_h=4, max_h=40):
    """Square maps with many ties, of several kinds, float32 or float64."""
    h = draw(st.integers(min_h, max_h))
    kind = draw(st.sampled_from(["levels", "sparse_levels", "relu_quantised", "plateau", "binary", "distinct"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind in ("levels", "sparse_levels"):
        m = np.floor(rng.random((h, h)) * draw(st.sampled_from([2, 3, 4, 6, 10, 30, 256])))
        if kind == "sparse_levels":
            m *= rng.random((h, h)) < draw(st.sampled_from([0.05, 0.2, 0.5]))
    elif kind == "relu_quantised":
        m = np.round(_smooth_relu(rng, 1, h, 3)[0] * draw(st.sampled_from([0.5, 2.0, 8.0])))
    elif kind == "plateau":  # a flat top over a share of the map: one huge tie group at index 1
        m = _smooth_relu(rng, 1, h, 3)[0]
        m = np.minimum(m, np.quantile(m, draw(st.sampled_from([0.5, 0.8, 0.9, 0.97]))))
    elif kind == "binary":
        m = (rng.random((h, h)) < draw(st.sampled_from([0.02, 0.1, 0.3]))).astype(float)
    else:
        m = rng.random((h, h))
    return m.astype(draw(st.sampled_from([np.float32, np.float64])))


@settings(max_examples=150, deadline=None)
@given(tie_heavy_maps(), st.integers(0, 60), st.sampled_from([0.8, 0.8, 0.3, 1.0]))
def test_scan_agrees_with_the_ripser_engine(m, threshold, density):
    got = clique_birth_points(m[None], threshold=threshold, max_edge_density=density)
    want = clique_birth_points_ripser(m[None], threshold=threshold, max_edge_density=density)
    assert got.tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(tie_heavy_maps(min_h=12, max_h=12), min_size=1, max_size=6))
def test_kernel_stages_compute_one_rank(maps):
    """Peeling, the column union–find, breadth-first forests: shortcuts to one GF(2) rank; all dense must agree."""
    a = np.ascontiguousarray(np.stack(maps), dtype=np.float64)
    want = first_birth_indices(a, 51)
    for stages, bfs_min in [(0, 10**9), (0, 0), (1, 0), (2, 10**9), (3, 0)]:
        np.testing.assert_array_equal(first_birth_indices(a, 51, bfs_min=bfs_min, stages=stages), want)


def test_kernel_stages_agree_on_many_small_maps():
    """Small maps of 2–3 levels make every stage stop half-way often (and reach dense elimination often)."""
    rng = np.random.default_rng(0)
    a = np.floor(rng.random((1200, 8, 8)) * rng.choice([2, 3], size=(1200, 1, 1)))
    a *= rng.random(a.shape) < rng.choice([0.5, 0.7, 1.0], size=(1200, 1, 1))
    a = np.ascontiguousarray(a)
    want = first_birth_indices(a, 51, stages=0)  # every rank by dense elimination
    for stages, bfs_min in [(1, 32), (2, 32), (2, 0), (3, 0), (3, 32)]:
        stats = np.zeros(3, dtype=np.int64)
        np.testing.assert_array_equal(first_birth_indices(a, 51, bfs_min=bfs_min, stages=stages, stats=stats), want)
        assert stats[1] > 0
    assert (want > 1).any() and (want == 0).any()
    np.testing.assert_array_equal(np.where(want > 1, want - 1, 0), clique_birth_points_ripser(a))


def test_larger_tie_heavy_maps_agree_and_reach_every_stage():
    """56² to 224² maps like the benchmark's slow tail (plateaus, few levels); the stats prove the slow paths ran."""
    rng = np.random.default_rng(12)
    maps = []
    for h in (56, 112, 224):
        relu = _smooth_relu(rng, 4, h, max(3, h // 28))
        maps += list(np.minimum(relu, np.quantile(relu, 0.9, axis=(1, 2), keepdims=True)))  # plateau at the top
        maps += list(np.round(relu * 4))  # quantised activations
        maps += list(np.floor(rng.random((2, h, h)) * 3))  # 3 levels, no spatial structure
        maps += list(np.floor(rng.random((2, h, h)) * 2) * (rng.random((2, h, h)) < 0.2))  # sparse binary
        by_h = np.stack(maps[-12:]).astype(np.float32)
        got = clique_birth_points(by_h)
        np.testing.assert_array_equal(got, clique_birth_points_ripser(by_h))
        stats = np.zeros(3, dtype=np.int64)
        first_birth_indices(by_h, 51, stats=stats)
        assert stats[0] > 0 and stats[1] > 0, stats  # groups with new cycles; some needing more than peeling
    # dense elimination is rare with every shortcut on; these 28×28 maps were picked because they reach it
    a = np.floor(np.random.default_rng(5).random((400, 28, 28)) * 3) * (
        np.random.default_rng(6).random((400, 28, 28)) < 0.5
    )
    a = np.ascontiguousarray(a)
    stats = np.zeros(3, dtype=np.int64)
    got = first_birth_indices(a, 51, stats=stats)
    assert stats[2] > 0, stats
    np.testing.assert_array_equal(got, first_birth_indices(a, 51, stages=0))
    b = np.where(got > 1, got - 1, 0)
    np.testing.assert_array_equal(b, clique_birth_points_ripser(a))


# --------------------------------------------------------------------------- known complexes

# 6-vertex real projective plane and 7-vertex (Möbius) torus, as lists of triangles; the boundary of a tetrahedron
RP2 = [(0, 1, 2), (0, 2, 3), (0, 3, 4), (0, 4, 5), (0, 1, 5), (1, 2, 4), (2, 3, 5), (1, 3, 4), (2, 4, 5), (1, 3, 5)]
TORUS = [tuple(sorted((i, (i + 1) % 7, (i + 3) % 7))) for i in range(7)]
TORUS += [tuple(sorted((i, (i + 2) % 7, (i + 3) % 7))) for i in range(7)]
SPHERE = list(itertools.combinations(range(4), 3))


def subdivision_graph(triangles) -> tuple[int, list[tuple[int, int]]]:
    """1-skeleton of the barycentric subdivision: its flag complex is the subdivided surface (flag by construction)."""
    simplices = sorted(
        {f for t in triangles for k in (1, 2, 3) for f in itertools.combinations(sorted(t), k)},
        key=lambda f: (len(f), f),
    )
    index = {f: i for i, f in enumerate(simplices)}
    edges = [(index[a], index[b]) for a in simplices for b in simplices if len(a) < len(b) and set(a) <= set(b)]
    return len(simplices), edges


def surface_map(triangles, seed: int, distinct: bool) -> np.ndarray:
    """A map whose flag filtration builds the subdivided surface: index 1 is a pendant edge, then the surface's
    edges (all tied at index 2, or one index each in a random order), then everything else at once (a cone)."""
    n, edges = subdivision_graph(triangles)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    u = np.zeros((n + 1, n + 1))
    values = 10.0 + (rng.permutation(len(edges)) if distinct else np.zeros(len(edges)))
    for (a, b), v in zip(edges, values):
        i, j = (perm[a], perm[b]) if rng.random() < 0.5 else (perm[b], perm[a])
        u[i, j] = v  # one triangle of the matrix: S = max(U, Uᵀ)
    u[n, perm[0]] = 1000.0
    return u


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("name", "triangles", "beta1"), [("RP²", RP2, 1), ("torus", TORUS, 2), ("sphere", SPHERE, 0)])
def test_surfaces_are_born_when_their_first_cycle_survives(name, triangles, beta1, seed):
    # all surface edges tied at index 2: β1(2) is the surface's β1 over GF(2) (RP²: 1, though 0 over Q)
    tied = surface_map(triangles, seed, distinct=False)
    assert clique_birth_points(tied[None]).tolist() == [1 if beta1 else 0]
    # one edge an index: the first surviving cycle, wherever it appears, agrees with ripser (threshold past all edges)
    one_by_one = surface_map(triangles, seed, distinct=True)
    got = clique_birth_points(one_by_one[None], threshold=10_000)
    assert got.tolist() == clique_birth_points_ripser(one_by_one[None], threshold=10_000).tolist()
    assert got[0] > 1  # some cycle closes before the surface is complete


# --------------------------------------------------------------------------- inputs and threads


def test_dtypes_layouts_and_byte_order_give_the_same_result():
    rng = np.random.default_rng(3)
    m = np.floor(rng.random((6, 20, 20)) * 8)
    want = clique_birth_points_ripser(m)
    for variant in (
        m.astype(np.float32),
        m.astype(np.float16),
        m.astype(np.int16),
        m.astype(">f8"),  # big-endian
        np.asfortranarray(m),
        np.stack([m, m], axis=-1)[..., 0],  # non-contiguous view
    ):
        np.testing.assert_array_equal(clique_birth_points(variant), want)


def test_float64_values_are_not_rounded_to_float32():
    # 1 + 2⁻³⁰ and 1 differ in float64 but not in float32: the 4-cycle closes at index 4 only if they differ
    u = np.zeros((4, 4))
    for k, (i, j) in enumerate([(0, 1), (1, 2), (2, 3), (0, 3)]):
        u[i, j] = 3.0 - k * 2**-30
    np.testing.assert_array_equal(clique_birth_points(u[None]), clique_birth_points_ripser(u[None]))
    assert clique_birth_points(u[None]).tolist() == [3]
    assert clique_birth_points(u[None].astype(np.float32)).tolist() == [0]  # tied at index 1 in float32


def test_non_finite_maps_do_not_crash_the_kernel():
    """Birth points need finite maps (birth_points refuses others); the kernel must still stay in bounds."""
    rng = np.random.default_rng(4)
    a = rng.random((8, 30, 30))
    a[0, 3, 4] = np.nan
    a[1] = np.nan
    a[2, :5] = np.inf
    a[3, :, 7] = -np.inf
    assert clique_birth_points(a).shape == (8,)


def test_threads_give_the_same_result():
    rng = np.random.default_rng(9)
    maps = np.concatenate([np.round(_smooth_relu(rng, 24, 56, 3) * 4), np.floor(rng.random((24, 56, 56)) * 5)])
    one = birth_points(maps, method="clique", workers=1)
    np.testing.assert_array_equal(birth_points(maps, method="clique", workers=2), one)
    np.testing.assert_array_equal(one, clique_birth_points_ripser(maps))
