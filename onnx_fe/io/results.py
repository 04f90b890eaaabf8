"""Stage 6 — storage: the HDF5 results file and the tidy CSV.

Layout of ``results.h5`` (see docs/outputs.md):

/                      attrs: format, complete, n_done, params (JSON), model_sha256,
                              model_path, device, providers, versions (JSON)
/classes (K,)          class names (UTF-8 strings)
/labels (N,)           class index of each image
/image_ids (N,)        image path relative to the data root, or "index:i" for .npz
/layers/LLL/           one group per scored Conv layer, LLL = layer index (3 digits);
                       attrs: index, name, tap, chain, channels, height, width
    birth_points (N, C)     int32, 0 = no birth point
    mean_activation (N, C)  float32, spatial mean of the unit's map per image
    zero_fraction (N, C)    float32, fraction of exact zeros per image (APoZ's summand)
    weight_l1 (C,)          float64, L1 norm of each conv filter (NaN if not constant)
    n_images (K,)           images per class
    feature_entropy, birth_rate, ineffectiveness (K, C) float64
/activations/LLL (N, C, H, W)  float32, only with --keep-activations (chunked, gzip)

While a run is in progress the file is ``results.h5.partial``; it is renamed to
``results.h5`` only when complete, and ``scores.csv`` is written after that.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np

FORMAT = "onnx-fe/1"
STR = h5py.string_dtype("utf-8")


def layer_key(index: int) -> str:
    return f"{index:03d}"


def create(path: Path, *, params: dict, meta: dict, classes, labels, ids, units, n_channels_hw, keep_activations):
    f = h5py.File(path, "w")
    f.attrs["format"] = FORMAT
    f.attrs["complete"] = False
    f.attrs["n_done"] = 0
    f.attrs["params"] = json.dumps(params, sort_keys=True)
    for k, v in meta.items():
        f.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)
    n = len(ids)
    f.create_dataset("classes", data=np.asarray(classes, dtype=object), dtype=STR)
    f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
    f.create_dataset("image_ids", data=np.asarray(ids, dtype=object), dtype=STR)
    g = f.create_group("layers")
    for u in units:
        c, h, w = n_channels_hw[u.index]
        lg = g.create_group(layer_key(u.index))
        for k, v in (
            ("index", u.index),
            ("name", u.name),
            ("tap", u.tap),
            ("chain", u.chain_str),
            ("tap_op", u.tap_op),
            ("activated", bool(u.activated)),
            ("file_order", -1 if u.file_order is None else int(u.file_order)),
            ("channels", c),
            ("height", h),
            ("width", w),
        ):
            lg.attrs[k] = v
        lg.create_dataset("birth_points", shape=(n, c), dtype=np.int32, chunks=(min(n, 256), c))
        lg.create_dataset("mean_activation", shape=(n, c), dtype=np.float32, chunks=(min(n, 256), c))
        lg.create_dataset("zero_fraction", shape=(n, c), dtype=np.float32, chunks=(min(n, 256), c))
        if keep_activations:
            f.require_group("activations").create_dataset(
                layer_key(u.index),
                shape=(n, c, h, w),
                dtype=np.float32,
                chunks=(1, min(c, max(1, (1 << 18) // (h * w * 4))), h, w),
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
    f.flush()
    return f


def open_partial(path: Path, params: dict):
    """Reopen an interrupted run's file if it was made with the same parameters."""
    try:
        f = h5py.File(path, "r+")
    except Exception:
        return None
    try:
        if f.attrs.get("format") == FORMAT and json.loads(f.attrs["params"]) == json.loads(
            json.dumps(params, sort_keys=True)
        ):
            return f
    except Exception:
        pass
    f.close()
    return None


def is_complete_match(path: Path, params: dict) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return (
                bool(f.attrs.get("complete"))
                and f.attrs.get("format") == FORMAT
                and json.loads(f.attrs["params"]) == json.loads(json.dumps(params, sort_keys=True))
            )
    except Exception:
        return False


def write_csv(h5_path: Path, csv_path: Path) -> None:
    """Write the tidy per layer × unit × class table atomically from a complete results file."""
    tmp = csv_path.with_name(csv_path.name + ".partial")
    with h5py.File(h5_path, "r") as f, open(tmp, "w", newline="") as out:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in f["classes"][()]]
        labels = f["labels"][()]
        w = csv.writer(out)
        w.writerow(
            [
                "layer",
                "layer_index",
                "unit",
                "class",
                "n_images",
                "feature_entropy",
                "birth_rate",
                "ineffectiveness",
                "mean_activation",
                "apoz",
                "weight_l1",
                *STAT_COLUMNS,
            ]
        )
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            name, idx = g.attrs["name"], int(g.attrs["index"])
            fe, br, ie = g["feature_entropy"][()], g["birth_rate"][()], g["ineffectiveness"][()]
            n_img = g["n_images"][()]
            ma, zf = g["mean_activation"][()], g["zero_fraction"][()]
            l1 = g["weight_l1"][()]
            extra = [g[c][()] if c in g else None for c in STAT_COLUMNS]
            for k, cname in enumerate(classes):
                rows = labels == k
                ma_k = ma[rows].astype(np.float64).mean(axis=0) if rows.any() else np.full(ma.shape[1], np.nan)
                zf_k = zf[rows].astype(np.float64).mean(axis=0) if rows.any() else np.full(ma.shape[1], np.nan)
                for j in range(fe.shape[1]):
                    w.writerow(
                        [
                            name,
                            idx,
                            j,
                            cname,
                            int(n_img[k]),
                            repr(float(fe[k, j])),
                            repr(float(br[k, j])),
                            repr(float(ie[k, j])),
                            repr(float(ma_k[j])),
                            repr(float(zf_k[j])),
                            repr(float(l1[j])),
                            *("" if a is None else _cell(a[k, j]) for a in extra),
                        ]
                    )
    os.replace(tmp, csv_path)


# per unit × class statistics (onnx_fe.scores.statistics), stored per layer as (K, C) datasets
STAT_COLUMNS = (
    "n_births",
    "fe_ci_low",
    "fe_ci_high",
    "fe_rarefied",
    "fe_rarefied_ci_low",
    "fe_rarefied_ci_high",
    "birth_rate_ci_low",
    "birth_rate_ci_high",
)


def _cell(v) -> str:
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return repr(float(v) + 0.0)  # + 0.0 turns -0.0 into 0.0


def read_layer_scores(h5_path: Path) -> list[dict]:
    """Each layer's attributes and (K, C) statistics from a complete results file."""
    out = []
    with h5py.File(h5_path, "r") as f:
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            out.append(
                {
                    "layer": str(g.attrs["name"]),
                    "layer_index": int(g.attrs["index"]),
                    "height": int(g.attrs["height"]),
                    "width": int(g.attrs["width"]),
                    "tap": _tap_kind(g.attrs),
                    "activated": bool(g.attrs.get("activated", False)),
                    "n_units": int(g.attrs["channels"]),
                    "n_images": g["n_images"][()],
                    **{s: g[s][()] for s in ("feature_entropy", "birth_rate", "fe_rarefied", "n_births") if s in g},
                }
            )
    return out


def write_table_csv(path: Path, rows: list[dict]) -> None:
    """Dict rows (same keys) as a CSV, atomically; floats as repr, -0.0 as 0.0."""
    from .tables import write_rows_csv

    cols = list(dict.fromkeys(k for r in rows for k in r))
    write_rows_csv(path, cols, [{k: (v + 0.0 if isinstance(v, float) else v) for k, v in r.items()} for r in rows])


def layer_summary(h5_path: Path) -> list[dict]:
    """Per-layer means over units and classes (the paper's Fig. 5A as a table)."""
    rows = []
    with h5py.File(h5_path, "r") as f:
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            fe, br = g["feature_entropy"][()], g["birth_rate"][()]
            rows.append(
                {
                    "layer_index": int(g.attrs["index"]),
                    "layer": str(g.attrs["name"]),
                    "chain": str(g.attrs["chain"]),
                    "tap": _tap_kind(g.attrs),
                    "units": int(g.attrs["channels"]),
                    "size": f"{int(g.attrs['height'])}×{int(g.attrs['width'])}",
                    "feature_entropy": float(np.nanmean(fe)),
                    "birth_rate": float(np.nanmean(br)),
                }
            )
    return rows


def _tap_kind(attrs) -> str:
    """Where a stored layer's map was taken (files written before the tap was stored say "?")."""
    if "tap_op" not in attrs:
        return "?"
    return f"{'post' if bool(attrs['activated']) else 'pre'}-activation ({attrs['tap_op']})"
