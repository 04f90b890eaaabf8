"""The generalisation measures of a network, computed once: a content-addressed cache in the user's cache dir.

The measures of :mod:`onnx_fe.experiments.generalization` (the baselines of ``onnx-fe compare --summary``) depend on
the model's bytes, the preprocessed images and their labels, and the measures' constants, not on the topological
method. A second ``compare --summary`` of the same models on the same images (the other method, another output
directory) reads them back instead of repeating the sharpness search, which is most of the summary's time.

An entry is keyed by everything the numbers depend on (:func:`measures_key`: SHA-256 of the model file, of the image
array with its shape and dtype and of the labels, the fixed batch, every constant of the measures, the versions of
onnxruntime and numpy, and ``MEASURES_VERSION``, the version of the measures' definition) and kept as JSON under
``<cache>/generalization/`` (the cache root of :func:`onnx_fe.io.nullcache.cache_dir`: ``$ONNX_FE_CACHE_DIR``, else
``$XDG_CACHE_HOME/onnx-fe``). Floats are written with ``repr`` (JSON round-trips them, ±inf and NaN included), so a
read entry is the computed dict bit for bit. Writes are atomic (temporary file, rename); an entry that cannot be
read or holds another key is ignored; a cache that cannot be written is skipped silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .nullcache import cache_dir, key_digest, write_cache_file

MEASURES_VERSION = 1  # raise when a measure's definition or computation changes


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def measures_key(model, x: np.ndarray, labels: np.ndarray, fixed_batch, constants: dict) -> dict:
    """Everything the measures of ``model`` on images ``x`` with ``labels`` depend on."""
    import onnxruntime

    return {
        "what": "generalization-measures",
        "version": MEASURES_VERSION,
        "model_sha256": _sha256_file(model),
        "images_sha256": _sha256_array(x),
        "labels_sha256": _sha256_array(np.asarray(labels, dtype=np.int64)),
        "fixed_batch": fixed_batch,
        "constants": constants,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def directory() -> Path:
    return cache_dir().parent / "generalization"


def cached(key: dict, where: Path | None = None) -> dict | None:
    """The cached measures of ``key``, or None."""
    path = (where or directory()) / f"{key_digest(key)}.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("measures"), dict):
        return None
    return entry["measures"]


def store(key: dict, measures: dict, where: Path | None = None) -> Path | None:
    """Write the entry of ``key`` (atomic rename). Returns the file, or None when the cache cannot be written."""
    d = where or directory()
    path = d / f"{key_digest(key)}.json"
    clean = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in measures.items()}
    return write_cache_file(
        path, lambda fh: fh.write(json.dumps({"key": key, "measures": clean}, sort_keys=True).encode())
    )
