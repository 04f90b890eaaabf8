"""Compiled inner loops of the bootstrap of ``onnx_fe.scores.statistics`` (numba; pure math, no I/O).

They do, cell by cell and resample by resample, the additions and divisions the array code did, in the same order
(a cell's distinct values in increasing order, starting from 0.0), on the same tables of logarithms computed in
Python. Integer sums are exact in any order. So the results are the array code's bit for bit (the tests compare
them with a direct per-resample computation); what goes away is the temporaries of (values × cells × resamples)
and the passes over them. No transcendental function is evaluated here: a compiled ``log`` could differ from
NumPy's in the last bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def resampled_counts(starts, img, gcell, grank, wt, rc):
    """rc[t, j, b] = Σ wt[i, b] over the images i of group g (value t of cell j): the groups are
    img[starts[g]:starts[g + 1]], group g holding the grank[g]-th distinct value of cell gcell[g]. Entries of
    rc past a cell's values are left as they are (never read)."""
    n_res = wt.shape[1]
    for g in range(len(starts) - 1):
        t, j = grank[g], gcell[g]
        for b in range(n_res):
            rc[t, j, b] = 0
        for p in range(starts[g], starts[g + 1]):
            i = img[p]
            for b in range(n_res):
                rc[t, j, b] += wt[i, b]


@njit(nogil=True, cache=True)
def resampled_fe(rc, mc, nimg, xlx, nstar, rate, fe):
    """For every cell j and resample b: n* (births), the birth rate n*/N and the plug-in FE
    (n* ln n* − Σ_t c_t ln c_t) / n* (0 when n* = 0), Σ over the cell's mc[j] values in order."""
    n_cells, n_res = nstar.shape
    for j in range(n_cells):
        m = mc[j]
        for b in range(n_res):
            s = 0
            for t in range(m):
                s += rc[t, j, b]
            nstar[j, b] = s
            rate[j, b] = s / nimg[j]
            sx = 0.0
            for t in range(m):
                sx += xlx[rc[t, j, b]]
            fe[j, b] = (xlx[s] - sx) / s if s > 0 else 0.0


@njit(nogil=True, cache=True)
def resampled_rarefied(rc, mc, cells, nstar, table, n_lo, n_hi, k, out):
    """Rarefied FE of the resamples of the cells ``cells``: −Σ_t table[n* − n_lo, c_t] over the cell's values in
    order (table rows n = n_lo..n_hi, n_hi + 1 columns), NaN where n* < k."""
    width = n_hi + 1
    n_res = nstar.shape[1]
    for r in range(len(cells)):
        j = cells[r]
        m = mc[j]
        for b in range(n_res):
            s = nstar[j, b]
            if s < k:
                out[r, b] = np.nan
                continue
            base = (min(max(s - n_lo, 0), n_hi - n_lo)) * width
            acc = 0.0
            for t in range(m):
                acc += table[base + rc[t, j, b]]
            out[r, b] = 0.0 - acc


@njit(nogil=True, cache=True)
def rarefied_cells(flat, off, cells, nb, row_off, g, out):
    """Rarefied FE of each cell j of ``cells``: −Σ_t g_n[c_t] over its counts c_t = flat[off[j]:off[j + 1]] in
    order, g_n the hypergeometric row of its n = nb[j] births (at g[row_off[n]:]); 0.0 (not −0.0) when the sum is
    0, as ``statistics.fe_rarefied_from_counts``."""
    for r in range(len(cells)):
        j = cells[r]
        base = row_off[nb[j]]
        acc = 0.0
        for p in range(off[j], off[j + 1]):
            acc += g[base + flat[p]]
        out[j] = -acc if acc != 0 else 0.0
