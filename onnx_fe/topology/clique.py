"""The paper's "clique" birth points (Zhao & Zhang, ICLR 2022), exact to the
authors' reference implementation (pure math, no I/O).

Construction, as the reference behaves (verified on the 386 golden maps of
``shared/golden/clique_birth_points.npz``, curves and birth points alike):

1. ``S = max(U, Uᵀ)`` is read as a weighted graph on the ``H`` row indices; the
   diagonal is ignored.
2. The distinct off-diagonal values of ``S`` are sorted in descending order and an
   edge's filtration index is the 1-based dense rank of its value: tied values
   share one index (all zeros of a ReLU map enter together, last).
3. Only indices ``≤ cap = ceil(max_edge_density · H(H-1)/2)`` take part; the product
   is taken in floating point as ``max_edge_density * (H(H-1)//2)``, exactly as the
   reference (this is what makes the 56×56 curves 1232 rows long, not 1233).
4. Flag (clique) complex up to triangles; every vertex is born at index 1.
5. β1 curve: row ``r`` is β1 at index ``r + 1``. The birth point is the first row
   with β1 ≠ 0; a row above ``threshold`` (or no such row) reads 0, and so does
   row 0 (a cycle made only of tied top values).
6. Maps smaller than 4×4 cannot hold a flag-complex cycle: birth point 0.

Two engines, identical birth points:

* :func:`clique_birth_points` (used by the pipeline): the compiled tie-group scan of
  :mod:`onnx_fe.topology.clique_scan`. It never builds a persistence diagram: it adds the
  edges one tie group at a time, keeps β1 = 0 as an invariant with a union–find forest and
  a GF(2) rank test on the triangles of the group, and stops at the first group where β1
  becomes nonzero (or at the cone, or past index ``threshold + 1``). Bounded work for
  tie-heavy maps too, and it runs without the GIL.
* :func:`clique_birth_points_ripser`: the previous engine, the persistence diagram of the
  flag filtration from ripser.py, kept as the oracle of the tests and as the "before" of
  ``benchmarks/bench_clique.py``. :func:`clique_betti_curve` (the whole β1 curve) uses it.

ripser.py is called on a *sparse* edge list whose
filtration values are the ranks themselves, so its barcode is in index units:
β1 at index ``t`` is the number of bars ``[b, d)`` with ``b ≤ t < d``
(``d = ∞`` when the bar outlives the edges given). Ripser drops zero-length
pairs, which never count in a Betti curve anyway. The compiled entry point
(``pyRipser``, the module ``ripser.ripser`` itself imports) is used directly
because the public ``ripser.ripser`` function costs far more per call than the
computation on these tiny complexes, and importing it pulls in scikit-learn
(about one second); the public function is the fallback.

Only what can matter is built:

* birth points need indices ``≤ threshold + 1`` only, so the edges are the top of
  a partial sort (``argpartition``), never the whole complex;
* once some vertex is joined to every other vertex the flag complex is a cone,
  so β1 is 0 from that index on and later edges are dropped
  (all-zero, constant and very sparse ReLU maps cost nothing);
* (ripser engine) the complex is grown in stages (about 512, 2048, … edges, whole tie groups
  at a time) and the search stops at the first stage that holds a bar, because
  only the earliest birth is wanted.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidMapError
from .clique_scan import first_birth_indices

__all__ = ["clique_betti_curve", "clique_birth_points", "clique_birth_points_ripser", "index_cap"]

# Birth points: first stage of the staged search, in edges; each stage ×4.
_FIRST_STAGE_EDGES = 512
# Maps per vectorised chunk are chosen so a chunk holds about this many matrix entries.
_CHUNK_ENTRIES = 1 << 21
# Fewer edges than this cannot hold a cycle of a flag complex (a chordless 4-cycle).
_MIN_CYCLE_EDGES = 4

try:  # the compiled core of ripser.py, as ripser.py itself imports it
    from pyRipser import doRipsFiltrationDMSparse as _rips_sparse
except ImportError:  # pragma: no cover - depends on how ripser was packaged
    _rips_sparse = None


def _h1_bars(i: np.ndarray, j: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """H1 barcode (k, 2) of the flag filtration of the edges (i, j) at values v on n vertices.

    Bars of zero length are not reported; a bar alive at the last edge has death ∞.
    """
    if _rips_sparse is not None:
        res = _rips_sparse(
            np.ascontiguousarray(i, dtype=np.int32),
            np.ascontiguousarray(j, dtype=np.int32),
            np.ascontiguousarray(v, dtype=np.float32),
            n,
            1,
            np.inf,
            2,
            0,
        )
        return np.asarray(res["births_and_deaths_by_dim"][1], dtype=np.float64).reshape(-1, 2)
    from ripser import ripser as ripser_public
    from scipy.sparse import coo_matrix

    dm = coo_matrix((np.asarray(v, np.float32), (i, j)), shape=(n, n))
    return np.asarray(ripser_public(dm, maxdim=1, distance_matrix=True)["dgms"][1], dtype=np.float64).reshape(-1, 2)


def index_cap(h: int, max_edge_density: float = 0.8) -> int:
    """Highest filtration index that takes part: ceil(density · H(H-1)/2), as the reference computes it."""
    return int(math.ceil(max_edge_density * (h * (h - 1) // 2)))


def _check_density(max_edge_density: float) -> float:
    d = float(max_edge_density)
    if not 0 < d <= 1:
        raise InvalidMapError(f"max_edge_density must lie in (0, 1], got {max_edge_density!r}")
    return d


def _as_float(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a
    return a.astype(np.float64)


def _top_edges(s: np.ndarray, iu: np.ndarray, ju: np.ndarray, limit: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """For each symmetrised map of ``s`` (n, H, H): the edges with index ≤ ``limit``,
    cut at the first index where the complex becomes a cone.

    Returns one ``(order, rank, cone)`` per map: ``order`` indexes the upper
    triangle (``iu``, ``ju``), ``rank`` holds the edges' indices (both sorted by
    decreasing value), and ``cone`` is the index at which the complex becomes a
    cone, or 0 if that is above ``limit``.
    """
    n, h, _ = s.shape
    vals = np.take(s.reshape(n, h * h), iu.astype(np.intp) * h + ju, axis=1)  # (n, E), upper triangle
    e = vals.shape[1]
    neg = -vals  # ascending order of neg = descending values
    # Largest value among each vertex's smallest edges: at its rank one vertex is
    # joined to all others, so the flag complex is a cone from there on.
    diag = np.arange(h)
    s[:, diag, diag] = np.inf
    apex = s.min(axis=2).max(axis=1)  # (n,)

    k = min(e, 2 * limit + 64)
    if k < e:
        part = np.argpartition(neg, k - 1, axis=1)[:, :k]
        sub = np.take_along_axis(neg, part, axis=1)
        srt = np.argsort(sub, axis=1, kind="stable")
        order = np.take_along_axis(part, srt, axis=1)
        sv = np.take_along_axis(sub, srt, axis=1)
    else:
        order = np.argsort(neg, axis=1, kind="stable")
        sv = np.take_along_axis(neg, order, axis=1)
    step = np.empty(sv.shape, dtype=np.int64)
    step[:, 0] = 1
    np.not_equal(sv[:, 1:], sv[:, :-1], out=step[:, 1:])
    rank = np.cumsum(step, axis=1)
    # Everything left out of the top k is ≤ their smallest value, so the top k hold
    # every edge that is wanted (index ≤ limit and value above the apex) when they
    # hold more than `limit` distinct values, or reach down to the apex, or are all.
    short = (rank[:, -1] <= limit) & (sv[:, -1] < -apex) & (k < e)
    count = (rank <= limit).sum(axis=1)
    # Cut at the cone: keep only the edges strictly above the apex value.
    above = (sv < -apex[:, None]).sum(axis=1)
    out = []
    for m in range(n):
        if short[m]:
            o = np.argsort(neg[m], kind="stable")
            v = neg[m][o]
            st = np.empty(e, dtype=np.int64)
            st[0] = 1
            np.not_equal(v[1:], v[:-1], out=st[1:])
            r = np.cumsum(st)
            c = int((r <= limit).sum())
            a = int((v < -apex[m]).sum())
        else:
            o, r, c, a = order[m], rank[m], int(count[m]), int(above[m])
        if a < c:
            out.append((o[:a], r[:a], int(r[a])))
        else:
            out.append((o[:c], r[:c], 0))
    return out


def _chunks(n: int, h: int):
    size = max(1, _CHUNK_ENTRIES // max(1, h * h))
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _first_birth(order: np.ndarray, rank: np.ndarray, iu: np.ndarray, ju: np.ndarray, h: int) -> int:
    """Smallest index at which an H1 bar of positive length is born, or 0 if none."""
    p = len(order)
    if p < _MIN_CYCLE_EDGES or rank[p - 1] < 2:  # a cycle at index 1 is row 0, which reads 0
        return 0
    end = 0
    budget = _FIRST_STAGE_EDGES
    while end < p:
        end = min(max(budget, end + 1), p)
        if end < p:  # take the whole tie group of the last edge
            end = int(np.searchsorted(rank, rank[end - 1], side="right"))
        o = order[:end]
        bars = _h1_bars(iu[o], ju[o], rank[:end], h)
        if len(bars):
            return int(bars[:, 0].min())
        budget = 4 * end
    return 0


def clique_birth_points(maps, threshold: int = 50, max_edge_density: float = 0.8) -> np.ndarray:
    """Birth point of each square map of ``maps`` (N, H, H) → int32 (N,); 0 means none.

    The birth point is the 0-based row of the reference β1 curve at which β1
    first becomes nonzero; rows above ``threshold`` and row 0 read 0. The maps
    must be finite (not checked here; :func:`onnx_fe.topology.birth_points` checks).
    Float maps are compared in their own precision (float16 is widened exactly to
    float32), integer maps as float64, as the ripser engine does.
    """
    a = np.asarray(maps)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise InvalidMapError(f"maps must have shape (N, H, H), got {a.shape}")
    density = _check_density(max_edge_density)
    n, h, _ = a.shape
    limit = min(int(threshold) + 1, index_cap(h, density))  # birth row r ≤ threshold ⇔ index ≤ threshold + 1
    if n == 0 or h < 4 or limit < 2:  # index 1 is row 0, which reads 0 anyway
        return np.zeros(n, dtype=np.int32)
    a = _as_float(a)
    dtype = np.float32 if a.dtype.itemsize <= 4 else np.float64  # float16 → float32 is exact
    a = np.ascontiguousarray(a, dtype=dtype)  # also native byte order
    b = first_birth_indices(a, limit)
    return np.where(b > 1, b - 1, 0).astype(np.int32)  # index b is row b - 1; row 0 reads 0


def clique_birth_points_ripser(maps, threshold: int = 50, max_edge_density: float = 0.8) -> np.ndarray:
    """:func:`clique_birth_points` by the previous engine (ripser.py's persistence diagram, staged search).

    Same results, slower on tie-heavy maps; kept as the oracle of the tests and the baseline of the benchmark.
    """
    a = np.asarray(maps)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise InvalidMapError(f"maps must have shape (N, H, H), got {a.shape}")
    density = _check_density(max_edge_density)
    threshold = int(threshold)
    n, h, _ = a.shape
    out = np.zeros(n, dtype=np.int32)
    limit = min(threshold + 1, index_cap(h, density))  # birth row r ≤ threshold ⇔ index ≤ threshold + 1
    if n == 0 or h < 4 or limit < 2:  # index 1 is row 0, which reads 0 anyway
        return out
    a = _as_float(a)
    iu, ju = np.triu_indices(h, 1)
    iu = iu.astype(np.int32)
    ju = ju.astype(np.int32)
    for start, stop in _chunks(n, h):
        chunk = a[start:stop]
        s = np.maximum(chunk, chunk.transpose(0, 2, 1))
        for m, (order, rank, _cone) in enumerate(_top_edges(s, iu, ju, limit)):
            b = _first_birth(order, rank, iu, ju, h)
            if b > 1:  # index b is row b - 1; row 0 reads 0
                out[start + m] = b - 1
    return out


def clique_betti_curve(m, max_edge_density: float = 0.8) -> np.ndarray:
    """Reference β1 curve of one square map: int32 of length ``index_cap(H)``, row r = index r + 1."""
    a = np.asarray(m)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidMapError(f"map must be square 2-D, got shape {a.shape}")
    density = _check_density(max_edge_density)
    h = a.shape[0]
    cap = index_cap(h, density)
    curve = np.zeros(max(cap, 0), dtype=np.int32)
    if h < 4 or cap < 1:
        return curve
    a = _as_float(a)
    iu, ju = np.triu_indices(h, 1)
    iu = iu.astype(np.int32)
    ju = ju.astype(np.int32)
    s = np.maximum(a, a.T)[None]
    order, rank, cone = _top_edges(s, iu, ju, cap)[0]
    if len(order) < _MIN_CYCLE_EDGES:
        return curve
    bars = _h1_bars(iu[order], ju[order], rank, h)
    if not len(bars):
        return curve
    # Bars still alive at the last edge given die at the cone index (β1 = 0 there),
    # or outlive the curve.
    end = cone if cone else cap + 1
    births = bars[:, 0].astype(np.int64)
    deaths = np.where(np.isfinite(bars[:, 1]), bars[:, 1], end).astype(np.int64)
    deaths = np.minimum(deaths, cap + 1)
    diff = np.zeros(cap + 2, dtype=np.int64)
    np.add.at(diff, births - 1, 1)
    np.add.at(diff, deaths - 1, -1)
    curve[:] = np.cumsum(diff)[:cap]
    return curve
