"""Reproduction v2, scoring stage: turn a model × image folder × method into a small committed record.

    from repro_data import score_record, load_record
    rec = score_record(model_path, folder, "cubical", pre, out_npz)   # scores (or reuses) and writes out_npz
    rec = load_record(out_npz)                                        # {labels, classes, image_ids, layers: [...]}

A record keeps what every later statistic needs and nothing else: the class of each image, its path, and for each
scored conv layer the per-image birth points (uint8, 0 = none), the per-unit mean activation over the images and the
filter L1 norms. Cubical birth points are stored *uncensored* (threshold = resolution = 100): a step above a smaller
threshold t is "no birth point" (docs/method.md), so ``censor(bp, t)`` gives the birth points at any t without
another inference. Clique birth points use the paper's construction (threshold 50, edge density 0.8).

Only this module touches models and onnxruntime; the statistics (repro_stats.py) read records only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHOD_PARAMS = {"cubical": {"resolution": 100, "threshold": 100}, "clique": {"threshold": 50, "max_edge_density": 0.8}}
FORMAT = "onnx-fe-repro/2"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def censor(bp: np.ndarray, threshold: int) -> np.ndarray:
    """Cubical birth points at ``threshold`` from uncensored ones: steps above it become 0 (no birth point)."""
    out = np.asarray(bp).copy()
    out[out > threshold] = 0
    return out


def score_record(
    model: Path,
    folder: Path,
    method: str,
    pre: dict,
    out_npz: Path,
    *,
    layers: list[int] | None = None,
    min_side: int = 8,
    images: list[str] | None = None,
    workers: int = 1,
) -> Path:
    """Score ``model`` on ``folder`` (all images of each class, or only ``images``: paths relative to the folder)
    with ``method`` and write the record of the layers whose maps are at least ``min_side`` (or ``layers``).

    Reused when ``out_npz`` exists and was made from the same model bytes, images and method.
    """
    import h5py

    import onnx_fe

    model, folder, out_npz = Path(model), Path(folder), Path(out_npz)
    key = {
        "format": FORMAT,
        "model_sha256": sha256(model),
        "folder": folder.resolve().relative_to(ROOT).as_posix(),
        "images": sorted(images) if images else None,
        "method": method,
        "params": METHOD_PARAMS[method],
        "layers": layers,
        "min_side": min_side,
    }
    if out_npz.exists():
        try:
            with np.load(out_npz, allow_pickle=False) as z:
                if json.loads(str(z["key"])) == key:
                    return out_npz
        except (OSError, ValueError, KeyError):
            pass
    tmp = Path(tempfile.mkdtemp(prefix="repro-"))
    try:
        data = folder
        if images:  # a sub-folder of links to the chosen images, same class folders and file names
            data = tmp / "data"
            for rel in images:
                dst = data / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to((folder / rel).resolve())
        r = onnx_fe.score(
            model,
            data,
            tmp / "out",
            method=method,
            scale=pre.get("scale", 1 / 255),
            mean=tuple(pre.get("mean", (0.0,))),
            std=tuple(pre.get("std", (1.0,))),
            color=pre.get("color"),
            images_per_class=100000,
            device="cpu",
            workers=workers,
            layers=None if layers is None else [str(i) for i in layers],
            resamples=1,
            **METHOD_PARAMS[method],
        )
        arrays: dict[str, np.ndarray] = {}
        with h5py.File(r.results_h5, "r") as f:
            arrays["labels"] = f["labels"][()].astype(np.int16)
            arrays["classes"] = np.array([c.decode() if isinstance(c, bytes) else str(c) for c in f["classes"][()]])
            arrays["image_ids"] = np.array([c.decode() if isinstance(c, bytes) else str(c) for c in f["image_ids"][()]])
            kept = []
            for name in sorted(f["layers"]):
                g = f["layers"][name]
                idx, h, w = int(g.attrs["index"]), int(g.attrs["height"]), int(g.attrs["width"])
                if layers is None and min(h, w) < min_side:
                    continue
                bp = g["birth_points"][()]
                if bp.max(initial=0) > 255:
                    raise ValueError(f"{model}: birth point above 255 in layer {idx}")
                arrays[f"bp_{idx:03d}"] = bp.astype(np.uint8)
                arrays[f"act_{idx:03d}"] = g["mean_activation"][()].astype(np.float64).mean(axis=0).astype(np.float32)
                arrays[f"wl1_{idx:03d}"] = g["weight_l1"][()].astype(np.float32)
                kept.append([idx, h, w, str(g.attrs["name"])])
        arrays["layers"] = np.array(json.dumps(kept))
        arrays["key"] = np.array(json.dumps(key))
        out_npz.parent.mkdir(parents=True, exist_ok=True)
        part = out_npz.with_suffix(".partial.npz")
        np.savez_compressed(part, **arrays)
        part.replace(out_npz)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_npz


def load_record(path: Path) -> dict:
    """A record as plain arrays: labels (N,), classes (K,), image_ids (N,), and layers: a list of dicts with
    index, height, width, name, bp (N, C) uint8, act (C,), wl1 (C,)."""
    with np.load(path, allow_pickle=False) as z:
        rec = {
            "labels": z["labels"].astype(np.int64),
            "classes": [str(c) for c in z["classes"]],
            "image_ids": [str(c) for c in z["image_ids"]],
            "key": json.loads(str(z["key"])),
            "layers": [],
        }
        for idx, h, w, name in json.loads(str(z["layers"])):
            rec["layers"].append(
                {
                    "index": idx,
                    "height": h,
                    "width": w,
                    "name": name,
                    "bp": z[f"bp_{idx:03d}"],
                    "act": z[f"act_{idx:03d}"],
                    "wl1": z[f"wl1_{idx:03d}"],
                }
            )
    return rec
