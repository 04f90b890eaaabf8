"""The whole job: model + data → birth points (HDF5) → feature entropy (HDF5 + CSV).

graph (rewrite) → data (loading) → inference → topology → entropy → storage.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..data import Preprocess, check_npz_shape, open_dataset, resolve_preprocess
from ..errors import OnnxFeError
from ..io.results import create, is_complete_match, layer_key, layer_summary, open_partial, write_csv
from ..model.graph import ConvUnit, LoadedModel, conv_weight_l1, load_model, select_units
from ..model.runner import make_runner, probe_shapes
from ..scores.entropy import entropy_table
from ..topology import birth_points as _birth_points
from ..topology import method_params


@dataclass
class ScoreResult:
    output: Path
    results_h5: Path
    scores_csv: Path
    device: str
    reused: bool
    summary: list[dict] = field(default_factory=list)

    def scores(self):
        """The scores table as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.read_csv(self.scores_csv)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"onnx-fe": __version__}
    for name in ("onnx", "onnxruntime-gpu", "onnxruntime", "numpy", "cripser", "ripser", "h5py"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def prepare(
    model,
    data=None,
    *,
    layers=None,
    input_size=None,
    layout="auto",
    color=None,
    scale=1 / 255,
    mean=None,
    std=None,
    images_per_class=100,
    classes=None,
    seed=0,
    device="auto",
    threads=None,
):
    """Load and check everything a run needs; returns (loaded model, dataset, preprocess, runner, selected units)."""
    lm = load_model(model)
    ds = open_dataset(data, images_per_class=images_per_class, classes=classes, seed=seed) if data is not None else None
    shape = list(lm.input_shape)
    if ds is not None and ds.kind == "npz":
        if layout == "auto":
            layout = (
                "nchw"
                if shape[1] is not None and shape[1] == ds._x.shape[1]
                else ("nhwc" if shape[3] is not None and shape[3] == ds._x.shape[3] else "nchw")
            )
        check_npz_shape(ds, shape, layout)
        h, w = (ds._x.shape[2], ds._x.shape[3]) if layout == "nchw" else (ds._x.shape[1], ds._x.shape[2])
        c = ds._x.shape[1] if layout == "nchw" else ds._x.shape[3]
        pre = Preprocess(
            height=int(h),
            width=int(w),
            layout=layout,
            color="gray" if c == 1 else "rgb",
            scale=1.0,
            mean=(0.0,),
            std=(1.0,),
        )
        pre_desc = {"npz": "fed as-is", "layout": layout}
    else:
        pre = resolve_preprocess(
            shape, input_size=input_size, layout=layout, color=color, scale=scale, mean=mean, std=std
        )
        pre_desc = pre.as_dict()
    runner = make_runner(lm, lm.units, device=device, threads=threads)
    if ds is not None:
        sample = ds.load(0, 1, pre, runner.input_dtype)
    else:
        c = pre.channels
        sample = np.zeros(
            (1, c, pre.height, pre.width) if pre.layout == "nchw" else (1, pre.height, pre.width, c),
            dtype=runner.input_dtype,
        )
    probe_shapes(runner, lm.units, sample)
    if not lm.units:
        raise OnnxFeError(f"{lm.path.name} has no Conv node")
    selected = select_units(lm.units, layers)
    runner.outputs = list(dict.fromkeys(u.tap for u in selected))
    return lm, ds, pre, pre_desc, runner, selected


def inspect(model, input_size=None, layout="auto", color=None, device="cpu") -> list[ConvUnit]:
    """Every Conv layer of the model with its chain, channels, output size and whether it is scorable."""
    lm = load_model(model)
    pre = resolve_preprocess(list(lm.input_shape), input_size=input_size, layout=layout, color=color)
    runner = make_runner(lm, lm.units, device=device)
    sample = np.zeros(
        (1, pre.channels, pre.height, pre.width) if pre.layout == "nchw" else (1, pre.height, pre.width, pre.channels),
        dtype=runner.input_dtype,
    )
    if lm.units:
        probe_shapes(runner, lm.units, sample)
    return lm.units


def _ids_hash(ds) -> str:
    h = hashlib.sha256()
    h.update(str(ds.source.resolve()).encode())
    for i, lab in zip(ds.ids, ds.labels):
        h.update(f"{i}\t{int(lab)}\n".encode())
    return h.hexdigest()


def score(
    model,
    data,
    output=None,
    *,
    layers=None,
    method="cubical",
    resolution=None,
    threshold=None,
    max_edge_density=None,
    images_per_class=100,
    classes=None,
    seed=0,
    input_size=None,
    layout="auto",
    color=None,
    scale=1 / 255,
    mean=None,
    std=None,
    batch_size=32,
    device="auto",
    workers=None,
    keep_activations=False,
    progress=False,
    log=None,
) -> ScoreResult:
    """Feature entropy of every selected conv unit for every class.

    Writes ``results.h5`` and ``scores.csv`` under ``output`` (default
    ``onnx-fe-results/<model name>``) and returns a :class:`ScoreResult`.
    Finished work is reused when called again with the same inputs and
    parameters; an interrupted run resumes from its last finished batch.
    """
    log = log or (lambda msg: None)
    if batch_size < 1:
        raise OnnxFeError("--batch-size must be at least 1")
    if workers is not None and workers < 1:
        raise OnnxFeError("--workers must be at least 1")
    workers = workers or os.cpu_count() or 1
    if method == "cubical" and max_edge_density is not None:
        raise OnnxFeError("--max-edge-density applies to --method clique only")
    if method == "clique" and resolution is not None:
        raise OnnxFeError("--resolution applies to --method cubical only")
    given = (
        {"resolution": resolution, "threshold": threshold}
        if method == "cubical"
        else {"threshold": threshold, "max_edge_density": max_edge_density}
    )
    mparams = method_params(method, **given)
    lm, ds, pre, pre_desc, runner, units = prepare(
        model,
        data,
        layers=layers,
        input_size=input_size,
        layout=layout,
        color=color,
        scale=scale,
        mean=mean,
        std=std,
        images_per_class=images_per_class,
        classes=classes,
        seed=seed,
        device=device,
    )
    if method == "clique":
        bad = [f"{u.index} {u.name} ({u.height}×{u.width})" for u in units if u.height != u.width]
        if bad:
            raise OnnxFeError(
                "--method clique needs square maps; not square: " + "; ".join(bad) + " (leave them out with --layers)"
            )
    out = Path(output) if output is not None else Path("onnx-fe-results") / lm.path.stem
    if out.exists() and not out.is_dir():
        raise OnnxFeError(f"output {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    final, partial, csv_path = out / "results.h5", out / "results.h5.partial", out / "scores.csv"
    params = {
        "model_sha256": lm.sha256,
        "data_ids_sha256": _ids_hash(ds),
        "method": method,
        "method_params": mparams,
        "layers": [u.index for u in units],
        "preprocess": pre_desc,
        "images_per_class": images_per_class,
        "classes": list(ds.classes),
        "seed": seed,
        "keep_activations": bool(keep_activations),
        "format_version": 1,
    }
    device_used = runner.device
    if is_complete_match(final, params):
        log(f"reusing finished results in {final}")
        if not csv_path.exists():
            write_csv(final, csv_path)
        return ScoreResult(out, final, csv_path, _stored_device(final), True, layer_summary(final))
    for stale in (final, csv_path):  # results of other inputs must not pass for this run's
        if stale.exists():
            log(f"replacing {stale} (made with other inputs or parameters)")
            stale.unlink()
    f = open_partial(partial, params) if partial.exists() else None
    if f is not None:
        start = int(f.attrs["n_done"])
        log(f"resuming an interrupted run at image {start} of {len(ds)}")
    else:
        meta = {
            "model_path": str(lm.path),
            "model_sha256": lm.sha256,
            "device": device_used,
            "providers": runner.providers,
            "versions": _versions(),
            "data_source": str(ds.source),
            "workers": workers,
            "batch_size": batch_size,
        }
        f = create(
            partial,
            params=params,
            meta=meta,
            classes=ds.classes,
            labels=ds.labels,
            ids=ds.ids,
            units=units,
            n_channels_hw={u.index: (u.channels, u.height, u.width) for u in units},
            keep_activations=keep_activations,
        )
        start = 0
    try:
        _run_batches(f, ds, pre, runner, units, start, batch_size, method, mparams, workers, keep_activations, progress)
        _finish(f, lm, ds, units)
    except BaseException:
        f.close()
        raise
    f.close()
    os.replace(partial, final)
    write_csv(final, csv_path)
    return ScoreResult(out, final, csv_path, device_used, False, layer_summary(final))


def _stored_device(path: Path) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        return str(f.attrs.get("device", "?"))


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _run_batches(f, ds, pre, runner, units, start, batch_size, method, mparams, workers, keep_activations, progress):
    n = len(ds)
    n_maps_per_image = sum(u.channels for u in units)
    with _progress(progress) as bar:
        if bar is not None:
            t_img = bar.add_task("images", total=n, completed=start)
            t_map = bar.add_task("maps", total=n * n_maps_per_image, completed=start * n_maps_per_image)
        layers = f["layers"]
        for s in range(start, n, batch_size):
            e = min(n, s + batch_size)
            x = ds.load(s, e, pre, runner.input_dtype)
            try:
                outs = dict(zip(runner.outputs, runner.run(x)))
            except Exception as ex:
                msg = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
                raise OnnxFeError(f"inference failed on images {s}..{e - 1} ({ds.ids[s]}): {msg}") from None
            for u in units:
                a = outs[u.tap]
                b, c, h, w = a.shape
                if not np.isfinite(a).all():
                    bad = int((~np.isfinite(a.reshape(b, -1))).any(axis=1).argmax())
                    raise OnnxFeError(f"layer {u.index} {u.name} gives NaN or ±inf on image {ds.ids[s + bad]}")
                bp = _birth_points(a.reshape(b * c, h, w), method=method, workers=workers, **mparams).reshape(b, c)
                g = layers[layer_key(u.index)]
                g["birth_points"][s:e] = bp
                a64 = a.astype(np.float64, copy=False)
                g["mean_activation"][s:e] = a64.mean(axis=(2, 3)).astype(np.float32)
                g["zero_fraction"][s:e] = (a == 0).mean(axis=(2, 3)).astype(np.float32)
                if keep_activations:
                    f["activations"][layer_key(u.index)][s:e] = a.astype(np.float32, copy=False)
                if bar is not None:
                    bar.advance(t_map, b * c)
            f.attrs["n_done"] = e
            f.flush()
            if bar is not None:
                bar.advance(t_img, e - s)


def _finish(f, lm: LoadedModel, ds, units) -> None:
    labels = f["labels"][()]
    k = len(ds.classes)
    for u in units:
        g = f["layers"][layer_key(u.index)]
        n_img, fe, br, ie = entropy_table(g["birth_points"][()], labels, k)
        for name, arr in (("n_images", n_img), ("feature_entropy", fe), ("birth_rate", br), ("ineffectiveness", ie)):
            if name in g:
                del g[name]
            g.create_dataset(name, data=arr)
        l1 = conv_weight_l1(lm.model, u)
        if "weight_l1" in g:
            del g["weight_l1"]
        g.create_dataset(
            "weight_l1", data=l1 if l1 is not None and len(l1) == u.channels else np.full(u.channels, np.nan)
        )
    f.attrs["complete"] = True
    f.flush()
