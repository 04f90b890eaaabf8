"""Clique (paper-faithful) birth points: golden reference, an independent oracle, hand-made cases.

Both engines (the default tie-group scan and the ripser one) are held to the golden birth points; the scan is
compared with the ripser engine in depth in test_clique_scan.py.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx_fe.topology import clique
from onnx_fe.topology.clique import clique_betti_curve, clique_birth_points, clique_birth_points_ripser, index_cap

# the paper authors' reference birth points (copied from shared/golden/; see tests/data/golden/README.md)
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "clique_birth_points.npz"


# --------------------------------------------------------------------------- golden


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as g:
        n = len(g["birth_point"])
        return {
            "maps": [g[f"map_{i:04d}"] for i in range(n)],
            "curves": [g[f"betti1_{i:04d}"] for i in range(n)],
            "birth_point": g["birth_point"],
            "kind": g["kind"],
        }


@pytest.mark.parametrize("engine", [clique_birth_points, clique_birth_points_ripser], ids=["scan", "ripser"])
def test_golden_birth_points(golden, engine):
    maps, ref, kind = golden["maps"], golden["birth_point"], golden["kind"]
    assert len(maps) == 386
    got = np.zeros(len(maps), dtype=np.int64)
    by_size: dict[int, list[int]] = {}
    for i, m in enumerate(maps):
        by_size.setdefault(m.shape[0], []).append(i)
    for idx in by_size.values():  # batched, as the pipeline calls it
        got[idx] = engine(np.stack([maps[i] for i in idx]))
    bad = np.flatnonzero(got != ref)
    detail = ", ".join(
        f"#{i} {kind[i]} {maps[i].shape[0]}×{maps[i].shape[0]}: got {got[i]}, want {ref[i]}" for i in bad[:30]
    )
    assert not len(bad), f"{len(bad)} of {len(maps)} birth points differ: {detail}"


def test_golden_betti_curves(golden):
    bad = []
    for i, (m, ref) in enumerate(zip(golden["maps"], golden["curves"])):
        got = clique_betti_curve(m)
        if got.shape != ref.shape or not np.array_equal(got, ref):
            first = "length" if got.shape != ref.shape else int(np.flatnonzero(got != ref)[0])
            bad.append(f"#{i} {golden['kind'][i]} (first difference at row {first})")
    assert not bad, f"{len(bad)} β1 curves differ: {', '.join(bad[:30])}"


def test_golden_birth_point_is_the_first_nonzero_row(golden):
    """The rule linking the two references: first row with β1 ≠ 0, 0 above 50 or at row 0."""
    for ref_curve, bp in zip(golden["curves"], golden["birth_point"]):
        assert first_nonzero_row(ref_curve) == bp


# --------------------------------------------------------------------------- oracle


def first_nonzero_row(curve, threshold=50) -> int:
    nz = np.flatnonzero(curve)
    return 0 if not len(nz) or nz[0] > threshold else int(nz[0])


def _gf2_rank(rows: np.ndarray) -> int:
    """Rank over GF(2) of a 0/1 matrix."""
    a = rows.astype(bool).copy()
    rank = 0
    for col in range(a.shape[1]):
        pivot = np.flatnonzero(a[rank:, col])
        if not len(pivot):
            continue
        p = rank + pivot[0]
        a[[rank, p]] = a[[p, rank]]
        below = np.flatnonzero(a[:, col])
        below = below[below != rank]
        a[below] ^= a[rank]
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


def oracle_curve(m, density=0.8) -> np.ndarray:
    """β1 of the flag complex at every index, from boundary ranks over GF(2): slow, independent."""
    m = np.asarray(m, dtype=np.float64)
    h = m.shape[0]
    cap = math.ceil(density * (h * (h - 1) // 2))
    s = np.maximum(m, m.T)
    pairs = list(itertools.combinations(range(h), 2))
    values = np.array([s[i, j] for i, j in pairs])
    distinct = np.unique(values)[::-1]
    rank_of = {float(v): r + 1 for r, v in enumerate(distinct)}
    edge_rank = np.array([rank_of[float(v)] for v in values])
    curve = np.zeros(cap, dtype=np.int64)
    for t in range(1, cap + 1):
        edges = [e for e, r in zip(pairs, edge_rank) if r <= t]
        if len(edges) < 4:
            continue
        col = {e: k for k, e in enumerate(edges)}
        adj = set(edges)
        # rank of ∂1 = vertices - connected components
        parent = list(range(h))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, j in edges:
            parent[find(i)] = find(j)
        rank1 = h - len({find(x) for x in range(h)})
        tris = [c for c in itertools.combinations(range(h), 3) if {(c[0], c[1]), (c[0], c[2]), (c[1], c[2])} <= adj]
        rank2 = 0
        if tris:
            d2 = np.zeros((len(tris), len(edges)), dtype=bool)
            for r, (a, b, c) in enumerate(tris):
                d2[r, [col[(a, b)], col[(a, c)], col[(b, c)]]] = True
            rank2 = _gf2_rank(d2)
        curve[t - 1] = len(edges) - rank1 - rank2
    return curve


def small_maps(min_h=4, max_h=7, levels=(2, 3, 5, 50, 10_000)):
    """Square maps with controllable ties: integer levels in 0..L-1."""

    @st.composite
    def build(draw):
        h = draw(st.integers(min_h, max_h))
        n_levels = draw(st.sampled_from(levels))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        return rng.integers(0, n_levels, size=(h, h)).astype(np.float32)

    return build()


@settings(max_examples=60, deadline=None)
@given(small_maps())
def test_curve_and_birth_point_match_an_independent_oracle(m):
    want = oracle_curve(m)
    got = clique_betti_curve(m)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    assert clique_birth_points(m[None])[0] == first_nonzero_row(want)


@settings(max_examples=40, deadline=None)
@given(small_maps(min_h=4, max_h=16), st.data())
def test_birth_point_is_invariant_under_increasing_transforms(m, data):
    # a strictly increasing lookup of the levels keeps order and ties exactly
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = np.unique(m)
    new = np.sort(rng.choice(np.arange(-1000, 1000) * 0.37, size=len(levels), replace=False))
    lut = dict(zip(levels.tolist(), new.tolist()))
    t = np.vectorize(lut.get)(m).astype(np.float64)
    maps = np.stack([m.astype(np.float64), t, 3.5 * m + 2.0, np.exp(m / m.max() if m.max() > 0 else m)])
    bp = clique_birth_points(maps)
    assert (bp == bp[0]).all(), bp


@settings(max_examples=40, deadline=None)
@given(small_maps(min_h=4, max_h=28, levels=(2, 3, 4, 8, 30, 256, 10_000)), st.integers(0, 60))
def test_birth_point_agrees_with_the_curve(m, threshold):
    """Whatever the ties and threshold, the fast path reads the curve's first nonzero row."""
    curve = clique_betti_curve(m)
    assert clique_birth_points(m[None], threshold=threshold)[0] == first_nonzero_row(curve, threshold)


# --------------------------------------------------------------------------- hand-made


def four_cycle(tied=False):
    """4×4 map: the cycle 0-1-2-3-0 enters first, then the chords 0-2 and 1-3."""
    u = np.zeros((4, 4))
    cycle = [(0, 1), (1, 2), (2, 3), (0, 3)]
    for k, (i, j) in enumerate(cycle):
        u[i, j] = 10 if tied else 10 - k  # upper triangle only: S = max(U, Uᵀ)
    u[0, 2] = 5
    u[3, 1] = 4  # below the diagonal: symmetrised into edge 1-3
    np.fill_diagonal(u, 100)  # the diagonal is ignored
    return u


def test_four_cycle_is_born_when_it_closes_and_dies_at_the_first_chord():
    # indices: cycle edges 1..4, chord 0-2 is 5 (fills the square), cap = ceil(0.8·6) = 5
    assert clique_betti_curve(four_cycle()).tolist() == [0, 0, 0, 1, 0]
    assert clique_birth_points(four_cycle()[None]).tolist() == [3]
    assert clique_birth_points(four_cycle()[None], threshold=2).tolist() == [0]
    assert clique_birth_points(four_cycle()[None], threshold=3).tolist() == [3]


def test_tied_top_cycle_reads_zero():
    # all four cycle edges share index 1: β1 = 1 at row 0, which means "no birth point"
    assert clique_betti_curve(four_cycle(tied=True)).tolist() == [1, 0, 0, 0, 0]
    assert clique_birth_points(four_cycle(tied=True)[None]).tolist() == [0]


def test_density_cap_hides_late_cycles():
    # the 5-cycle 0-1-2-3-4-0 enters first (indices 1..5), then the five chords
    u = np.zeros((5, 5))
    for k in range(5):
        u[k, (k + 1) % 5] = 20 - k
    # the remaining 5 edges (chords) at decreasing low values
    for k, (i, j) in enumerate([(0, 2), (0, 3), (1, 3), (1, 4), (2, 4)]):
        u[i, j] = 10 - k
    assert clique_birth_points(u[None]).tolist() == [4]  # cycle closes at index 5 = row 4
    assert clique_betti_curve(u).tolist() == [0, 0, 0, 0, 1, 1, 0, 0]  # chord 0-3 (index 7) fills it
    assert index_cap(5, 0.4) == 4
    assert clique_betti_curve(u, max_edge_density=0.4).tolist() == [0, 0, 0, 0]
    assert clique_birth_points(u[None], max_edge_density=0.4).tolist() == [0]


@pytest.mark.parametrize("h", [0, 1, 2, 3])
def test_tiny_maps_have_no_birth_point(h):
    rng = np.random.default_rng(h)
    maps = rng.random((3, h, h)).astype(np.float32)
    assert clique_birth_points(maps).tolist() == [0, 0, 0]
    curve = clique_betti_curve(maps[0])
    assert curve.dtype == np.int32 and len(curve) == index_cap(h) and not curve.any()


def test_constant_and_zero_maps():
    maps = np.stack([np.zeros((14, 14)), np.full((14, 14), 3.0), np.eye(14)])
    assert clique_birth_points(maps).tolist() == [0, 0, 0]
    assert not clique_betti_curve(np.full((20, 20), -1.0)).any()


def test_index_cap_matches_the_reference_lengths():
    # 0.8 · 1540 is computed on the edge count, as the reference does: 1232 rows, not 1233
    assert [index_cap(h) for h in (5, 7, 14, 28, 56)] == [8, 17, 73, 303, 1232]


def test_empty_batch_and_shapes():
    assert clique_birth_points(np.zeros((0, 8, 8))).shape == (0,)
    assert clique_birth_points(np.zeros((2, 8, 8))).dtype == np.int32
    with pytest.raises(ValueError):
        clique_birth_points(np.zeros((2, 8, 7)))
    with pytest.raises(ValueError):
        clique_birth_points(np.zeros((8, 8)))
    with pytest.raises(ValueError):
        clique_betti_curve(np.zeros((8, 7)))
    with pytest.raises(ValueError):
        clique_birth_points(np.zeros((1, 8, 8)), max_edge_density=0)


def test_integer_maps_are_accepted():
    m = (four_cycle() * 2).astype(np.int64)
    assert clique_birth_points(m[None]).tolist() == [3]


def test_chunking_and_staging_of_the_ripser_engine_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(7)
    maps = np.concatenate(
        [
            np.maximum(rng.standard_normal((20, 28, 28)), 0),
            np.floor(rng.random((20, 28, 28)) * 6),  # heavy ties: staged search over tie groups
            np.floor(rng.random((10, 28, 28)) * 40) * (rng.random((10, 28, 28)) < 0.2),
        ]
    ).astype(np.float32)
    want = np.array([first_nonzero_row(clique_betti_curve(m)) for m in maps])
    np.testing.assert_array_equal(clique_birth_points(maps), want)
    np.testing.assert_array_equal(clique_birth_points_ripser(maps), want)
    monkeypatch.setattr(clique, "_CHUNK_ENTRIES", 28 * 28 * 3)
    monkeypatch.setattr(clique, "_FIRST_STAGE_EDGES", 4)
    np.testing.assert_array_equal(clique_birth_points_ripser(maps), want)


def test_public_ripser_fallback_gives_the_same_results(monkeypatch):
    """If ripser.py ever moves its compiled entry point, the public ripser() is used instead."""
    rng = np.random.default_rng(3)
    maps = np.concatenate([rng.random((6, 14, 14)), np.floor(rng.random((6, 14, 14)) * 4)]).astype(np.float32)
    want_bp = clique_birth_points(maps)
    want_curve = clique_betti_curve(maps[0])
    monkeypatch.setattr(clique, "_rips_sparse", None)
    np.testing.assert_array_equal(clique_birth_points_ripser(maps), want_bp)
    np.testing.assert_array_equal(clique_betti_curve(maps[0]), want_curve)
    assert clique_birth_points_ripser(four_cycle()[None]).tolist() == [3]
