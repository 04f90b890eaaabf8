"""The early-stop cubical engine (default): cubical birth points without a persistence diagram.

It gives the birth points of the cripser path (:func:`onnx_fe.topology.cubical.cubical_batch`: dense rank,
``computePH(top_dim=True)``, earliest birth of an H1 class of positive persistence) bit for bit, by growing the
superlevel set one tie group at a time and stopping at the first hole:

- **Order.** Pixels are put in order from the largest value down by a stable LSD radix sort (11-bit digits) on
  integer keys that order like the values: the IEEE bits of float32 maps (3 passes), of float64 maps (64-bit keys,
  6 passes, so distinct float64 values that round to one float32 never merge), or of integer maps. +0 and −0 get
  one key. Equal values have equal keys, so a tie group is a run of equal keys.
- **Holes.** The growing set, as cripser's ``top_dim=True`` filtration treats it, is the 4-connected cubical
  complex: pixels are vertices, 4-adjacent present pairs are edges, fully present 2×2 blocks are squares. It is
  planar, so β1 = β0 − χ with χ = V − E + F. A pixel entering with k present neighbours, merging u distinct
  components (union–find) and completing f blocks changes β1 by k − u − f.
- **Stop.** After a tie group, β1 > 0 exactly when some class born at or before it is still alive, so the first
  such group is the earliest birth of a class of positive persistence; a class born and filled within one group
  leaves β1 unchanged. The scan stops there, or before a group whose pixels would take the step above
  ``threshold`` (then there is no birth point).

Pure: no I/O; the compiled kernel runs without the GIL, so threads over chunks of maps scale.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["early_birth_points"]

_DIGIT = 11  # radix bits per pass: 2048 buckets
_NB = 1 << _DIGIT
_SMALL_DIGIT, _SMALL = 8, 1024  # maps of at most _SMALL pixels: 8-bit digits (see early_birth_points)
_IEEE, _SIGNED, _UNSIGNED = 0, 1, 2  # how the raw bits of a value are read


@njit(nogil=True, cache=True)
def _descending_keys(bits, mode, top, keys):
    """Write keys whose ascending order is the values' descending order (equal values, equal keys).

    ``bits``: one map's raw bits (uint32 or uint64); ``top``: the sign bit in that width. Arithmetic may widen to
    64 bits in numba; only the low bits are stored, which is all that counts.
    """
    allones = ~(top ^ top)
    for j in range(bits.shape[0]):
        b = bits[j]
        if mode == _IEEE:
            if (b & ~top) == 0:  # +0 and −0 are one value
                k = top
            elif b & top:  # negative: larger magnitude, smaller value
                k = ~b
            else:
                k = b | top
        elif mode == _SIGNED:
            k = b ^ top
        else:
            k = b
        keys[j] = allones ^ k  # ascending keys of descending values


@njit(nogil=True, cache=True)
def _radix_sort(keys, tmpk, idx, tmpi, count, shifts, mask):
    """Stable LSD radix sort of ``keys``, carrying pixel indices; the result is left in (keys, idx).

    ``shifts``/``mask`` are in the keys' dtype (numba turns uint64 mixed with int64 into float64). A pass whose
    digit is the same for every key is skipped.
    """
    n = keys.shape[0]
    npass = shifts.shape[0]
    nb = count.shape[1]
    count[:, :] = 0
    for j in range(n):
        k = keys[j]
        for p in range(npass):
            count[p, (k >> shifts[p]) & mask] += 1
        idx[j] = j
    src_k, src_i, dst_k, dst_i = keys, idx, tmpk, tmpi
    in_tmp = False
    for p in range(npass):
        c = count[p]
        trivial = False
        for d in range(nb):
            if c[d] != 0:
                trivial = c[d] == n
                break
        if trivial:
            continue
        s = 0
        for d in range(nb):
            t = c[d]
            c[d] = s
            s += t
        shift = shifts[p]
        for j in range(n):
            k = src_k[j]
            d = (k >> shift) & mask
            o = c[d]
            c[d] = o + 1
            dst_k[o] = k
            dst_i[o] = src_i[j]
        src_k, src_i, dst_k, dst_i = dst_k, dst_i, src_k, src_i
        in_tmp = not in_tmp
    if in_tmp:
        keys[:] = tmpk
        idx[:] = tmpi


@njit(nogil=True, cache=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@njit(nogil=True, cache=True)
def _entered_at_first_hole(keys, idx, w, limit, parent):
    """Pixels present after the first tie group that leaves β1 > 0; 0 if there is none within ``limit`` pixels.

    ``keys``/``idx``: pixels in entering order (flat index into the h×w map); ``parent``: union–find over the map
    padded by one absent pixel on every side ((h+2)·(w+2), −1 = absent), all −1 on entry and again on return.
    """
    n = keys.shape[0]
    w2 = w + 2
    b1 = 0
    i = 0
    entered = 0
    while i < n:
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        if j > limit:  # this group takes the step past the threshold
            break
        for t in range(i, j):
            q = idx[t]
            p = (q // w + 1) * w2 + (q % w + 1)
            parent[p] = p
            k = 0
            u = 0
            root = p
            for nb in (p - 1, p + 1, p - w2, p + w2):
                if parent[nb] >= 0:
                    k += 1
                    r = _find(parent, nb)
                    if r != root:
                        parent[root] = r
                        root = r
                        u += 1
            up = parent[p - w2] >= 0
            down = parent[p + w2] >= 0
            left = parent[p - 1] >= 0
            right = parent[p + 1] >= 0
            f = 0
            if up and left and parent[p - w2 - 1] >= 0:
                f += 1
            if up and right and parent[p - w2 + 1] >= 0:
                f += 1
            if down and left and parent[p + w2 - 1] >= 0:
                f += 1
            if down and right and parent[p + w2 + 1] >= 0:
                f += 1
            b1 += k - u - f
        i = j
        if b1 > 0:
            entered = j
            break
    for t in range(i):
        q = idx[t]
        parent[(q // w + 1) * w2 + (q % w + 1)] = -1
    return entered


@njit(nogil=True, cache=True)
def _batch(bits, mode, h, w, resolution, threshold, shifts, consts, out):
    npix = h * w
    limit = (threshold * npix) // resolution  # ceil(resolution·e / npix) <= threshold  ⇔  e <= limit
    keys = np.empty(npix, dtype=bits.dtype)
    tmpk = np.empty(npix, dtype=bits.dtype)
    idx = np.empty(npix, dtype=np.int32)
    tmpi = np.empty(npix, dtype=np.int32)
    count = np.empty((shifts.shape[0], np.int64(consts[1]) + 1), dtype=np.int64)  # buckets: the digit mask + 1
    parent = np.full((h + 2) * (w + 2), -1, dtype=np.int32)
    for m in range(bits.shape[0]):
        _descending_keys(bits[m], mode, consts[0], keys)
        _radix_sort(keys, tmpk, idx, tmpi, count, shifts, consts[1])
        e = _entered_at_first_hole(keys, idx, w, limit, parent)
        out[m] = 0 if e == 0 else (resolution * e + npix - 1) // npix


def early_birth_points(maps, resolution: int = 100, threshold: int = 75) -> np.ndarray:
    """Cubical birth points of maps (N, H, W) (or one (H, W) map) → int32 (N,), equal to the cripser path's.

    Values must be finite (not checked here; :func:`onnx_fe.topology.birth_points` checks). float32, float64 and
    integer maps are ordered exactly in their own type; float16 is widened to float32. Maps smaller than 2×2 have no
    birth point.
    """
    a = np.asarray(maps)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {a.shape}")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"maps must be real numbers, got dtype {a.dtype}")
    n, h, w = a.shape
    out = np.zeros(n, dtype=np.int32)
    if n == 0 or h < 2 or w < 2:
        return out
    if a.dtype.itemsize < 4:  # float16 → float32; bool and small integers → int32: all exact
        a = a.astype(np.float32 if a.dtype.kind == "f" else np.int32)
    if a.dtype.itemsize not in (4, 8):
        raise TypeError(f"unsupported dtype {a.dtype}")
    mode = {"f": _IEEE, "i": _SIGNED, "u": _UNSIGNED}[a.dtype.kind]
    a = np.ascontiguousarray(a).reshape(n, h * w)
    bits = a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)
    nbits = 8 * a.dtype.itemsize
    # small maps: 8-bit digits (one more pass, but 256 buckets a pass to clear and scan instead of 2048, the fixed
    # cost that dominates a map of a few hundred pixels); any digit width gives the same order
    digit = _SMALL_DIGIT if h * w <= _SMALL else _DIGIT
    shifts = np.arange(0, nbits, digit).astype(bits.dtype)
    consts = np.array([1 << (nbits - 1), (1 << digit) - 1], dtype=bits.dtype)
    _batch(bits, mode, h, w, int(resolution), int(threshold), shifts, consts, out)
    return out
