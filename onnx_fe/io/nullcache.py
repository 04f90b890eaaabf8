"""The noise null, computed once: a table shipped with onnx-fe and a content-addressed cache in the user's cache dir.

A noise null (``onnx_fe.scores.statistics.noise_null``: what structureless smoothed noise maps of a layer's size
get) is a function of the birth points of its noise maps, and map i of a noise unit depends on (seed, height,
width, unit, i) alone. So what is stored is the birth points of maps 0..N−1 of every noise unit, keyed by
everything else they depend on (:func:`null_key`: map size, tap kind (ReLU'd or signed noise), method and its
parameters, noise units, seed, smoothing and ``NULL_VERSION``, the version of the null's definition). One entry
serves every run with up to N maps per unit (images per class), whatever its rarefaction k; a run with more maps
computes only the missing ones and stores the longer entry.

Where birth points are looked up, in order: the table shipped in the package (``onnx_fe/scores/_null_table.npz``,
written by ``benchmarks/make_null_table.py`` for the common map sizes with the default parameters, 256 maps a
unit: a default run never computes a null), then the user's cache (``$XDG_CACHE_HOME/onnx-fe/noise-null/``, or
``~/.cache/...``; ``ONNX_FE_CACHE_DIR`` replaces ``$XDG_CACHE_HOME/onnx-fe``), then they are computed. A cache file
is written under a temporary name and renamed into place (atomic: concurrent runs never read a half-written one; when
two write the same key, both files are right and the longer is kept); a file that cannot be read or holds another
key is ignored and rewritten. A cache that cannot be written is skipped silently: the null is then recomputed.
The numbers are those of computing the null afresh, bit for bit (tests/io/test_nullcache.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..scores.statistics import (
    DEFAULT_K,
    DEFAULT_SEED,
    NULL_VERSION,
    NoiseNull,
    noise_birth_points,
    null_of_birth_points,
)

SHIPPED = Path(__file__).resolve().parent.parent / "scores" / "_null_table.npz"
_LOCK = threading.Lock()


def null_key(
    height: int,
    width: int,
    *,
    method: str = "cubical",
    params: dict | None = None,
    relu: bool = True,
    n_units: int = 16,
    seed: int = DEFAULT_SEED,
    sigma: float = 1.0,
) -> dict:
    """Everything a noise null's birth points depend on but the number of maps (parameters with defaults filled)."""
    from ..topology.birth import method_params

    return {
        "version": NULL_VERSION,
        "height": int(height),
        "width": int(width),
        "relu": bool(relu),
        "method": method,
        "params": method_params(method, **(params or {})),
        "n_units": int(n_units),
        "seed": int(seed),
        "sigma": float(sigma),
    }


def key_digest(key: dict) -> str:
    """The content address of a key: SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_dir() -> Path:
    """Where computed nulls are kept: ``$ONNX_FE_CACHE_DIR/noise-null``, else ``$XDG_CACHE_HOME/onnx-fe/noise-null``
    (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("ONNX_FE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "onnx-fe")
    return Path(base) / "noise-null"


@lru_cache(maxsize=1)
def _shipped(path: str) -> dict[str, np.ndarray]:
    """The shipped table: key digest → birth points (N, n_units), each checked against its stored key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = json.loads(str(z["keys"]))
            return {d: z[f"bp_{d}"] for d, k in keys.items() if key_digest(k) == d}
    except (OSError, ValueError, KeyError):
        return {}


def shipped(key: dict) -> np.ndarray | None:
    """The shipped table's birth points for ``key``, or None."""
    return _shipped(str(SHIPPED)).get(key_digest(key))


def _valid(bp, key: dict) -> bool:
    return (
        isinstance(bp, np.ndarray)
        and bp.ndim == 2
        and bp.shape[1] == key["n_units"]
        and np.issubdtype(bp.dtype, np.integer)
    )


def cached(key: dict, directory: Path | None = None) -> np.ndarray | None:
    """The user cache's birth points for ``key`` (None when absent, unreadable or not this key's)."""
    path = (directory or cache_dir()) / f"{key_digest(key)}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            bp = z["bp"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return bp if _valid(bp, key) else None


def store(key: dict, bp: np.ndarray, directory: Path | None = None) -> Path | None:
    """Write ``bp`` as the cache entry of ``key`` (atomic rename), unless a longer one is there already. Returns the
    file, or None when the cache cannot be written."""
    d = directory or cache_dir()
    path = d / f"{key_digest(key)}.npz"
    old = cached(key, d)
    if old is not None and len(old) >= len(bp):
        return path
    bp = np.asarray(bp)
    small = bp.astype(np.min_scalar_type(int(bp.max())) if bp.size and bp.min() >= 0 else np.int64)
    return write_cache_file(path, lambda fh: np.savez(fh, key=np.array(json.dumps(key, sort_keys=True)), bp=small))


def write_cache_file(path: Path, write) -> Path | None:
    """Write a cache entry atomically and safely beside concurrent writers of the same entry: ``write(fh)`` fills a
    unique temporary file in ``path``'s folder (binary), which is synced and renamed over ``path``. Returns ``path``,
    or None when the cache cannot be written (or ``write`` raises TypeError / ValueError): a cache is optional."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        return path
    except (OSError, TypeError, ValueError):
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def noise_null_birth_points(
    height: int,
    width: int,
    n_maps: int,
    *,
    method: str = "cubical",
    params: dict | None = None,
    relu: bool = True,
    n_units: int = 16,
    seed: int = DEFAULT_SEED,
    sigma: float = 1.0,
) -> np.ndarray:
    """Birth points (n_maps, n_units) int64 of the noise null's maps: from the shipped table or the user's cache
    where they hold enough maps, else the missing maps computed (and the cache entry extended)."""
    key = null_key(height, width, method=method, params=params, relu=relu, n_units=n_units, seed=seed, sigma=sigma)
    n_maps = int(n_maps)
    have = shipped(key)
    if have is None or len(have) < n_maps:
        c = cached(key)
        if c is not None and (have is None or len(c) > len(have)):
            have = c
    if have is not None and len(have) >= n_maps:
        return have[:n_maps].astype(np.int64)
    done = 0 if have is None else len(have)
    more = noise_birth_points(
        height,
        width,
        n_maps - done,
        method=method,
        params=key["params"],
        n_units=n_units,
        seed=seed,
        sigma=sigma,
        relu=relu,
        first=done,
    )
    bp = more if have is None else np.concatenate([have.astype(np.int64), more])
    with _LOCK:
        store(key, bp)
    return bp


def noise_null(
    height: int,
    width: int,
    *,
    method: str = "cubical",
    params: dict | None = None,
    n_maps: int = 50,
    n_units: int = 16,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
    sigma: float = 1.0,
    relu: bool = True,
) -> NoiseNull:
    """``onnx_fe.scores.statistics.noise_null`` (the default birth points), its maps' birth points looked up or
    stored (see the module's docstring): the same numbers, bit for bit."""
    bp = noise_null_birth_points(
        height, width, n_maps, method=method, params=params, relu=relu, n_units=n_units, seed=seed, sigma=sigma
    )
    return null_of_birth_points(height, width, bp, k)
