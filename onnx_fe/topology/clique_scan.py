"""The clique method's birth points without a persistence diagram: a compiled scan of the tie groups.

It gives exactly the birth points of the ripser path (:func:`onnx_fe.topology.clique.clique_birth_points_ripser`,
itself exact to the authors' reference): the first filtration index ``t`` at which β1 of the flag complex of
``S = max(U, Uᵀ)`` is nonzero, looking at indices ``≤ limit`` only.

- **Edges.** One pass over the upper triangle keeps the ``limit`` largest distinct values of ``S`` in a small sorted
  buffer and each vertex's smallest edge; the largest of those minima is the *apex*: from its index on one vertex is
  joined to all others, the flag complex is a cone and β1 = 0, so only the indices above it can hold a birth. A
  second pass collects the edges of those indices, bucketed by index (tie group).
- **Scan.** The tie groups are added in order. As long as no birth has been found, β1 = 0 before the group, i.e.
  every cycle of the graph so far, ``Z1(t-1)``, bounds. A spanning forest grown by union–find (extending the forest
  of the earlier groups) splits the group's edges into tree edges and ``p`` non-tree edges, and the classes of the
  latter's fundamental cycles are a basis of ``Z1(t)/Z1(t-1)``: cycles of the earlier graph live in the earlier
  forest plus earlier edges. The boundary of a triangle that enters with the group has, in that basis, exactly its
  own non-tree group edges as coordinates. So β1(t) = p − rank over GF(2) of those rows, and the group holds a
  birth exactly when the rows fail to span all ``p`` columns. Bars born and killed within one group (zero length)
  are thereby never counted, as in the reference.
- **Rank.** A group with no non-tree edge (``p = 0``) adds no cycle. Otherwise, for a big group the forest is
  grown breadth-first from the vertices of highest degree, so that many triangles hold two tree edges. Then
  *peeling*: an edge with a triangle whose two other edges are tree, earlier or already settled edges is spanned
  (its row reduces to a unit vector); repeat until nothing changes, with bitset adjacency (⌈H/64⌉ words a vertex).
  What is left is reduced further with a union–find over columns (a row reducing to two columns identifies
  them, to one column settles it) and the rest, usually nothing, by dense GF(2) elimination over bitsets.
- **Stop** at the first group holding a birth, or at the apex, or after ``limit`` groups.

Pure: no I/O; compiled with numba, and the kernel runs without the GIL, so threads over chunks of maps scale.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["first_birth_indices"]

# Tie groups with more edges than this grow the spanning forest breadth-first (a parameter of the kernel so that
# tests can force either order: both give the same rank, so the same result).
BFS_MIN_EDGES = 32

_ONE = np.uint64(1)


@njit(nogil=True, cache=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(nogil=True, cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(nogil=True, cache=True, inline="always")
def _lowest_bit(x):
    """Index of the lowest set bit of x ≠ 0."""
    return _popcount((x & (~x + _ONE)) - _ONE)


@njit(nogil=True, cache=True, inline="always")
def _count_above(top, v):
    """How many entries of ``top`` (descending, padded with -inf, a power of two long) exceed v; branch-free."""
    c = 0
    step = top.shape[0] >> 1
    while step:
        c += step * (top[c + step - 1] > v)
        step >>= 1
    return c


@njit(nogil=True, cache=True, inline="always")
def _set_bit(bits, u, v):
    bits[u, v >> 6] |= _ONE << np.uint64(v & 63)
    bits[v, u >> 6] |= _ONE << np.uint64(u & 63)


@njit(nogil=True, cache=True, inline="always")
def _clear_bit(bits, u, v):
    bits[u, v >> 6] &= ~(_ONE << np.uint64(v & 63))
    bits[v, u >> 6] &= ~(_ONE << np.uint64(u & 63))


@njit(nogil=True, cache=True)
def _add_group_bfs(eu, ev, g0, g1, h, parent, ntu, ntv, deg, off, nbr, eid, done, queue, visited):
    """Add the edges [g0, g1) to the union–find forest breadth-first from the vertices of highest degree in the
    group; the non-tree edges go to (ntu, ntv). Returns their count."""
    for i in range(h):
        deg[i] = 0
        visited[i] = False
    for e in range(g0, g1):
        deg[eu[e]] += 1
        deg[ev[e]] += 1
    off[0] = 0
    for i in range(h):
        off[i + 1] = off[i] + deg[i]
        deg[i] = off[i]
    for e in range(g0, g1):
        u = eu[e]
        v = ev[e]
        nbr[deg[u]] = v
        eid[deg[u]] = e - g0
        deg[u] += 1
        nbr[deg[v]] = u
        eid[deg[v]] = e - g0
        deg[v] += 1
        done[e - g0] = False
    for i in range(h):
        deg[i] = off[i + 1] - off[i]
    roots = np.argsort(-deg, kind="mergesort")
    p = 0
    for r in roots:
        if deg[r] == 0:
            break
        if visited[r]:
            continue
        visited[r] = True
        qh = 0
        qt = 1
        queue[0] = r
        while qh < qt:
            x = queue[qh]
            qh += 1
            for k in range(off[x], off[x + 1]):
                e = eid[k]
                if done[e]:
                    continue
                done[e] = True
                y = nbr[k]
                rx = _find(parent, x)
                ry = _find(parent, y)
                if rx != ry:
                    parent[rx] = ry
                else:
                    ntu[p] = x
                    ntv[p] = y
                    p += 1
                if not visited[y]:
                    visited[y] = True
                    queue[qt] = y
                    qt += 1
    return p


@njit(nogil=True, cache=True)
def _residual_full_rank(nl, p, alive, ntu, ntv, adj, live, colid, merge, stats):
    """Do the rows of the group's triangles span all ``nl`` columns still live after peeling (GF(2))?

    Each row (a triangle with two or three live edges, listed once) has already lost its settled columns. Rows that
    reduce to one or two column classes settle or merge classes of a union–find (class ``nl`` = settled, i.e. in
    the span); the rows left over, three distinct unsettled classes each, are eliminated densely over the classes.
    """
    nw = adj.shape[1]
    nrows = 0
    rows = np.empty((0, 3), dtype=np.int32)
    for fill in range(2):  # count, then fill
        if fill:
            rows = np.empty((nrows, 3), dtype=np.int32)
            nrows = 0
        for q in range(p):
            if not alive[q]:
                continue
            u = ntu[q]
            v = ntv[q]
            c = colid[u, v]
            for w in range(nw):
                x = adj[u, w] & adj[v, w]
                while x:
                    b = _lowest_bit(x)
                    x &= x - _ONE
                    z = (w << 6) + np.int64(b)
                    c1 = -1
                    c2 = -1
                    if live[u, w] & (_ONE << b):
                        c1 = colid[u, z]
                        if c1 < c:  # listed from its lowest live column only
                            continue
                    if live[v, w] & (_ONE << b):
                        c2 = colid[v, z]
                        if c2 < c:
                            continue
                    if fill:
                        rows[nrows, 0] = c
                        rows[nrows, 1] = c1
                        rows[nrows, 2] = c2
                    nrows += 1
        if nrows < nl:
            return False  # rank ≤ rows < columns
    zero = np.int64(nl)
    cls = np.arange(nl + 1, dtype=np.int64)
    unsettled = nl
    active = np.ones(nrows, dtype=np.bool_)
    nact = nrows
    changed = merge
    while changed:
        changed = False
        for r in range(nrows):
            if not active[r]:
                continue
            a0 = _find(cls, np.int64(rows[r, 0]))
            a1 = _find(cls, np.int64(rows[r, 1])) if rows[r, 1] >= 0 else zero
            a2 = _find(cls, np.int64(rows[r, 2])) if rows[r, 2] >= 0 else zero
            if a0 == a1:  # e + e = 0
                a0 = zero
                a1 = zero
            if a0 == a2:
                a0 = zero
                a2 = zero
            if a1 == a2:
                a1 = zero
                a2 = zero
            k = 0
            t0 = zero
            t1 = zero
            for y in (a0, a1, a2):
                if y != zero:
                    if k == 0:
                        t0 = y
                    else:
                        t1 = y
                    k += 1
            if k == 3:
                continue
            active[r] = False
            nact -= 1
            if k == 0:
                continue
            cls[t0] = t1  # k == 1: t1 is the settled class
            unsettled -= 1
            changed = True
            if unsettled == 0:
                return True
        if nact < unsettled:
            return False
    stats[2] += 1
    idx = np.full(nl, -1, dtype=np.int64)
    ncol = 0
    for y in range(nl):
        if _find(cls, np.int64(y)) == y:
            idx[y] = ncol
            ncol += 1
    lw = (ncol + 63) >> 6
    piv = np.zeros((ncol, lw), dtype=np.uint64)
    has = np.zeros(ncol, dtype=np.bool_)
    row = np.zeros(lw, dtype=np.uint64)
    rank = 0
    for r in range(nrows):
        if not active[r]:
            continue
        row[:] = 0
        for k in range(3):
            if rows[r, k] >= 0:
                col = idx[_find(cls, np.int64(rows[r, k]))]
                row[col >> 6] ^= _ONE << np.uint64(col & 63)
        while True:
            lead = -1
            for y in range(lw):
                if row[y]:
                    lead = (y << 6) + np.int64(_lowest_bit(row[y]))
                    break
            if lead < 0:
                break
            if not has[lead]:
                piv[lead, :] = row
                has[lead] = True
                rank += 1
                if rank == ncol:
                    return True
                break
            for y in range(lead >> 6, lw):
                row[y] ^= piv[lead, y]
    return False


@njit(nogil=True, cache=True)
def _first_birth_index(a, limit, bfs_min, stages, w, stats):
    """First index t ≤ limit (1-based) at which β1 of the flag filtration of max(a, aᵀ) is nonzero, or 0."""
    (top, rowmin, eu, ev, er, cnt, start, adj, live, parent, colid, alive, ntu, ntv) = w[:14]
    (deg, off, nbr, eid, done, queue, visited) = w[14:]
    h = a.shape[0]
    nw = adj.shape[1]
    # pass 1: the `limit` largest distinct values (descending) and every vertex's smallest edge
    k = 0
    top[:] = -np.inf
    rowmin[:] = np.inf
    for i in range(h):
        for j in range(i + 1, h):
            v = max(a[i, j], a[j, i])
            if v < rowmin[i]:
                rowmin[i] = v
            if v < rowmin[j]:
                rowmin[j] = v
            if k == limit and v <= top[limit - 1]:
                continue
            c = _count_above(top, v)
            if c < k and top[c] == v:
                continue
            if c >= limit:  # cannot happen for finite maps; keeps indices in range whatever the input
                continue
            last = k if k < limit else limit - 1
            for q in range(last, c, -1):
                top[q] = top[q - 1]
            top[c] = v
            if k < limit:
                k += 1
    # the apex: from its index on one vertex is joined to all others (a cone, β1 = 0)
    apex = rowmin[0]
    for i in range(1, h):
        if rowmin[i] > apex:
            apex = rowmin[i]
    kk = 0
    while kk < k and top[kk] > apex:
        kk += 1
    if kk == 0:
        return 0
    tau = top[kk - 1]
    # pass 2: the edges of indices 1..kk, bucketed by index (stable)
    cnt[: kk + 1] = 0
    m = 0
    for i in range(h):
        for j in range(i + 1, h):
            v = max(a[i, j], a[j, i])
            if v >= tau:
                r = _count_above(top, v)
                if r < kk and top[r] == v:
                    eu[m] = i
                    ev[m] = j
                    er[m] = r
                    cnt[r] += 1
                    m += 1
    start[0] = 0
    for t in range(kk):
        start[t + 1] = start[t] + cnt[t]
        cnt[t] = start[t]
    for e in range(m):
        t = er[e]
        ntu[cnt[t]] = eu[e]
        ntv[cnt[t]] = ev[e]
        cnt[t] += 1
    eu[:m] = ntu[:m]
    ev[:m] = ntv[:m]
    # scan the tie groups
    for i in range(h):
        parent[i] = i
    adj[:, :] = 0
    live[:, :] = 0
    for t in range(kk):
        g0 = start[t]
        g1 = start[t + 1]
        for e in range(g0, g1):
            _set_bit(adj, eu[e], ev[e])
        if g1 - g0 > bfs_min:
            p = _add_group_bfs(eu, ev, g0, g1, h, parent, ntu, ntv, deg, off, nbr, eid, done, queue, visited)
        else:
            p = 0
            for e in range(g0, g1):
                u = eu[e]
                v = ev[e]
                ru = _find(parent, u)
                rv = _find(parent, v)
                if ru != rv:
                    parent[ru] = rv
                else:
                    ntu[p] = u
                    ntv[p] = v
                    p += 1
        if p == 0:
            continue  # no new cycle
        stats[0] += 1
        for q in range(p):
            _set_bit(live, ntu[q], ntv[q])
            alive[q] = True
        # peel: a triangle whose other two edges are not live spans the edge
        nlive = p
        changed = (stages & 1) != 0
        while changed and nlive > 0:
            changed = False
            for q in range(p):
                if not alive[q]:
                    continue
                u = ntu[q]
                v = ntv[q]
                for y in range(nw):
                    if adj[u, y] & adj[v, y] & ~live[u, y] & ~live[v, y]:
                        alive[q] = False
                        _clear_bit(live, u, v)
                        nlive -= 1
                        changed = True
                        break
        if nlive == 0:
            continue
        stats[1] += 1
        nl = 0
        for q in range(p):
            if alive[q]:
                colid[ntu[q], ntv[q]] = nl
                colid[ntv[q], ntu[q]] = nl
                nl += 1
        if not _residual_full_rank(nl, p, alive, ntu, ntv, adj, live, colid, (stages & 2) != 0, stats):
            return t + 1
        for q in range(p):
            if alive[q]:
                _clear_bit(live, ntu[q], ntv[q])
    return 0


@njit(nogil=True, cache=True)
def _scan(maps, limit, bfs_min, stages, stats):
    n, h, _ = maps.shape
    out = np.zeros(n, dtype=np.int32)
    n_edges = h * (h - 1) // 2
    nw = (h + 63) >> 6
    npad = 2
    while npad <= limit:
        npad *= 2
    work = (
        np.empty(npad, dtype=maps.dtype),  # top
        np.empty(h, dtype=maps.dtype),  # rowmin
        np.empty(n_edges, dtype=np.int32),  # eu
        np.empty(n_edges, dtype=np.int32),  # ev
        np.empty(n_edges, dtype=np.int32),  # er
        np.empty(limit + 1, dtype=np.int64),  # cnt
        np.empty(limit + 1, dtype=np.int64),  # start
        np.empty((h, nw), dtype=np.uint64),  # adj
        np.empty((h, nw), dtype=np.uint64),  # live
        np.empty(h, dtype=np.int64),  # parent
        np.zeros((h, h), dtype=np.int32),  # colid
        np.empty(n_edges, dtype=np.bool_),  # alive
        np.empty(n_edges, dtype=np.int32),  # ntu
        np.empty(n_edges, dtype=np.int32),  # ntv
        np.empty(h, dtype=np.int64),  # deg
        np.empty(h + 1, dtype=np.int64),  # off
        np.empty(2 * n_edges, dtype=np.int32),  # nbr
        np.empty(2 * n_edges, dtype=np.int64),  # eid
        np.empty(n_edges, dtype=np.bool_),  # done
        np.empty(h, dtype=np.int64),  # queue
        np.empty(h, dtype=np.bool_),  # visited
    )
    for i in range(n):
        out[i] = _first_birth_index(maps[i], limit, bfs_min, stages, work, stats)
    return out


def first_birth_indices(
    maps: np.ndarray, limit: int, bfs_min: int = BFS_MIN_EDGES, stages: int = 3, stats: np.ndarray | None = None
) -> np.ndarray:
    """First filtration index (1-based) ≤ ``limit`` with β1 ≠ 0 of each square map (N, H, H) → int32 (N,); 0: none.

    ``maps`` must be a C-contiguous float32 or float64 array in native byte order, H ≥ 2, ``limit`` ≥ 1. Values
    are compared as they are (no rounding).

    For tests: ``bfs_min`` (group size above which the forest grows breadth-first), ``stages`` (bit 0: peeling,
    bit 1: the column union–find; without them the rank is all dense elimination) choose how the same rank is
    computed; ``stats`` (int64, 3 entries) counts the tie groups that opened cycles, those that needed more than
    peeling, and those that reached dense elimination.
    """
    if stats is None:
        stats = np.zeros(3, dtype=np.int64)
    return _scan(maps, int(limit), int(bfs_min), int(stages), stats)
