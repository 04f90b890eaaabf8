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

ROOT = Path(__file__).resolve().parents[2]
METHOD_PARAMS = {"cubical": {"resolution": 100, "threshold": 100}, "clique": {"threshold": 50, "max_edge_density": 0.8}}
FORMAT = "onnx-fe-repro/2"


def sha256(path: Path) -> str:
    from onnx_fe.data.dataset import file_digest

    return file_digest(Path(path))


def _is_current(out_npz: Path, key: dict) -> bool:
    """Whether ``out_npz`` exists and was made from the inputs that ``key`` describes."""
    if not out_npz.exists():
        return False
    try:
        with np.load(out_npz, allow_pickle=False) as z:
            return json.loads(str(z["key"])) == key
    except (OSError, ValueError, KeyError):
        return False


def _save(out_npz: Path, arrays: dict) -> None:
    """Write the record whole or not at all (a .partial file renamed when complete)."""
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    part = out_npz.with_suffix(".partial.npz")
    np.savez_compressed(part, **arrays)
    part.replace(out_npz)


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
    if _is_current(out_npz, key):
        return out_npz
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
                arrays[f"apoz_{idx:03d}"] = g["zero_fraction"][()].astype(np.float64).mean(axis=0).astype(np.float32)
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
                    "apoz": z.get(f"apoz_{idx:03d}"),
                }
            )
    return rec


def rescaled_twin(src: Path, dst: Path, layer: int = 0, alpha: float = 3.0) -> Path:
    """Conv ``layer``'s weights and bias × alpha and the next conv's weights × 1/alpha (an ONNX edit).

    With only ReLU / MaxPool (positively homogeneous) between the two convs the network computes the same function.
    """
    import onnx
    from onnx import numpy_helper

    from onnx_fe.model.graph import find_units

    m = onnx.load(src)
    units = find_units(m)
    inits = {t.name: t for t in m.graph.initializer}
    conv = {n.name or n.output[0]: n for n in m.graph.node if n.op_type == "Conv"}

    def scale(name, s):
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t).astype(np.float64) * s).astype(np.float32), name))

    a, b = units[layer], units[layer + 1]
    if any(op not in ("Conv", "Relu", "MaxPool") for op in a.chain):
        raise ValueError(f"layer {layer} chain {a.chain} is not positively homogeneous")
    scale(conv[a.name].input[1], alpha)
    if len(conv[a.name].input) > 2:
        scale(conv[a.name].input[2], alpha)
    scale(conv[b.name].input[1], 1 / alpha)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, dst)
    return dst


def load_folder(folder: Path, color: str, ids: list[str]) -> np.ndarray:
    """The images ``ids`` (paths relative to ``folder``) as float32 NCHW scaled by 1/255, in that order."""
    from PIL import Image

    xs = []
    for rel in ids:
        a = np.asarray(Image.open(folder / rel).convert("L" if color == "gray" else "RGB"), dtype=np.float32) / 255.0
        xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(xs)


def ablation_record(
    model: Path,
    folder: Path,
    color: str,
    ids: list[str],
    labels: np.ndarray,
    orders: dict[str, dict[int, np.ndarray]],
    out_npz: Path,
    steps: int = 16,
) -> Path:
    """Cumulative ablation, one layer at a time: for each ranking (name → {layer index: unit order, most important
    first}) and both directions, zero the first r units (r at ``steps`` + 1 evenly spaced counts from 0 to C) and
    record which images the network still classifies correctly. Stored per layer as bits, shape
    (rankings, 2 directions, counts, images); direction 0 removes the most important first.

    Reused when ``out_npz`` exists and was made from the same model, images and orders.
    """
    import onnx
    import onnxruntime as ort

    from onnx_fe.experiments.ablate import removal_counts
    from onnx_fe.model.graph import find_units
    from onnx_fe.model.masks import add_unit_masks, split_at

    model, out_npz = Path(model), Path(out_npz)
    names = sorted(orders)
    key = {
        "format": FORMAT + "-ablation",
        "model_sha256": sha256(model),
        "folder": Path(folder).resolve().relative_to(ROOT).as_posix(),
        "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "orders": {n: {str(i): [int(u) for u in o] for i, o in sorted(orders[n].items())} for n in names},
        "steps": steps,
    }
    if _is_current(out_npz, key):
        return out_npz
    m = onnx.load(model)
    units = {u.index: u for u in find_units(m)}
    x = load_folder(Path(folder), color, ids)
    y = np.asarray(labels)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1

    def session(proto):
        return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])

    inp, out = m.graph.input[0].name, m.graph.output[0].name
    arrays: dict[str, np.ndarray] = {}
    layers = sorted({i for n in names for i in orders[n]})
    for li in layers:
        u = units[li]
        channels = len(orders[names[0]][li])
        if any(sorted(map(int, orders[n][li])) != list(range(channels)) for n in names):
            raise ValueError(f"layer {li}: every order must be a permutation of the same units")
        masked, info = add_unit_masks(m, [u.tap])
        mask = info[u.tap][0]
        prefix, pre_out, suffix, ext = split_at(masked, u.tap, out, {inp, mask})
        feeds = {}
        if prefix is not None:
            feeds = dict(zip(pre_out, session(prefix).run(pre_out, {inp: x})))
        if inp in ext:
            feeds[inp] = x
        suf = session(suffix)
        counts = removal_counts(channels, steps)
        hits = np.zeros((len(names), 2, len(counts), len(y)), dtype=bool)
        for a, n in enumerate(names):
            order = np.asarray(orders[n][li])
            for d, seq in enumerate((order, order[::-1])):
                for b, r in enumerate(counts):
                    mvec = np.ones((1, channels, 1, 1), dtype=np.float32)
                    mvec[0, seq[:r], 0, 0] = 0.0
                    feeds[mask] = mvec
                    logits = suf.run([out], feeds)[0]
                    hits[a, d, b] = logits.argmax(axis=1) == y
        arrays[f"hits_{li:03d}"] = np.packbits(hits, axis=-1)
        arrays[f"counts_{li:03d}"] = np.asarray(counts, dtype=np.int16)
        arrays[f"channels_{li:03d}"] = np.asarray(channels)
    arrays["names"] = np.array(names)
    arrays["layers"] = np.asarray(layers, dtype=np.int16)
    arrays["n_images"] = np.asarray(len(y))
    arrays["key"] = np.array(json.dumps(key))
    _save(out_npz, arrays)
    return out_npz


def load_ablation(path: Path) -> dict:
    """{names, layers: {index: {"counts", "channels", "hits" (rankings, 2, counts, images) bool}}}."""
    with np.load(path, allow_pickle=False) as z:
        n = int(z["n_images"])
        out = {"names": [str(s) for s in z["names"]], "layers": {}}
        for li in z["layers"]:
            li = int(li)
            out["layers"][li] = {
                "counts": z[f"counts_{li:03d}"].astype(np.int64),
                "channels": int(z[f"channels_{li:03d}"]),
                "hits": np.unpackbits(z[f"hits_{li:03d}"], axis=-1, count=n).astype(bool),
            }
    return out
