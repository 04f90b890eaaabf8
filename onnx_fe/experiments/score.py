"""The scoring run: model + data → birth points (HDF5) → feature entropy (HDF5 + CSV).

graph (rewrite) → data (loading) → inference → topology → entropy → storage, driven by one
:class:`~onnx_fe.config.ScoreConfig`. The work is cut into shards of consecutive images; :func:`compute_shard` is a
pure unit of work (load, infer, birth points, magnitude baselines) and the driver alone writes the results file, in
order, so that an executor can run shards anywhere without changing a number.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import ScoreConfig
from ..data import Dataset, Preprocess, check_npz_shape, open_dataset, resolve_preprocess
from ..errors import OnnxFeError
from ..execution import SerialExecutor
from ..io.results import STAT_COLUMNS, create, is_complete_match, layer_key, layer_summary, open_partial, write_csv
from ..model.graph import ConvUnit, LoadedModel, conv_weight_l1, load_model, select_units
from ..model.runner import MIN_SIDE, Runner, make_runner, probe_shapes
from ..scores.entropy import entropy_table
from ..scores.statistics import cell_statistics
from ..topology import birth_points as _birth_points


@dataclass
class ScoreResult:
    output: Path
    results_h5: Path
    scores_csv: Path
    device: str
    reused: bool
    summary: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)  # the rows of layers.csv
    layers_csv: Path | None = None
    control: ScoreResult | None = None  # the control run (``--control random-init``)

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


@dataclass
class Plan:
    """Everything a run needs, built once per process from a :class:`ScoreConfig` (see :meth:`build`)."""

    config: ScoreConfig
    model: LoadedModel
    dataset: Dataset
    preprocess: Preprocess
    preprocess_desc: dict
    runner: Runner
    units: list[ConvUnit]

    @classmethod
    def build(cls, config: ScoreConfig, log=None) -> Plan:
        lm, ds, pre, pre_desc, runner, units = _prepare(config, log or (lambda msg: None))
        return cls(config, lm, ds, pre, pre_desc, runner, units)


def _prepare(cfg: ScoreConfig, log):
    """Load and check the model, data and preprocessing; probe every conv's output shape; select the layers."""
    lm = load_model(cfg.model)
    opts, pp = cfg.images, cfg.preprocess
    ds = open_dataset(cfg.data, images_per_class=opts.images_per_class, classes=opts.classes, seed=opts.seed)
    shape = list(lm.input_shape)
    if ds.kind == "npz":
        xs = ds.sample_shape
        layout = pp.layout
        if layout == "auto":
            layout = (
                "nchw"
                if shape[1] is not None and shape[1] == xs[0]
                else ("nhwc" if shape[3] is not None and shape[3] == xs[2] else "nchw")
            )
        check_npz_shape(ds, shape, layout)
        c, h, w = xs if layout == "nchw" else (xs[2], xs[0], xs[1])
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
            shape,
            input_size=pp.input_size,
            layout=pp.layout,
            color=pp.color,
            scale=1 / 255 if pp.scale is None else pp.scale,
            mean=pp.mean,
            std=pp.std,
        )
        pre_desc = pre.as_dict()
    runner = make_runner(lm, lm.units, device=cfg.runner.device, threads=cfg.runner.threads)
    probe_shapes(runner, lm.units, ds.load(0, 1, pre, runner.input_dtype))
    if not lm.units:
        raise OnnxFeError(f"{lm.path.name} has no Conv node")
    if cfg.method.method == "clique":
        side = MIN_SIDE["clique"]
        for u in lm.units:
            if u.scorable and min(u.height, u.width) < side:
                u.reason = f"{u.height}×{u.width} map: the clique construction needs at least {side}×{side}"
    selected = select_units(lm.units, list(cfg.layers) if cfg.layers else None)
    if not cfg.layers:
        small = [f"{u.index} {u.name} ({u.height}×{u.width})" for u in lm.units if u.reason and u.height]
        if small:
            log(f"note: not scored, maps too small for a birth point: {'; '.join(small)}")
    runner.outputs = list(dict.fromkeys(u.tap for u in selected))
    runner.spec = {**runner.spec, "units": selected}
    if cfg.method.method == "clique":
        bad = [f"{u.index} {u.name} ({u.height}×{u.width})" for u in selected if u.height != u.width]
        if bad:
            raise OnnxFeError(
                "--method clique needs square maps; not square: " + "; ".join(bad) + " (leave them out with --layers)"
            )
    return lm, ds, pre, pre_desc, runner, selected


def prepare(model, data, **options):
    """Load and check everything a run needs from the same options as :func:`score`.

    Returns (loaded model, dataset, preprocess, preprocess description, runner, selected units).
    """
    plan = Plan.build(ScoreConfig.build(model, data, **options))
    return plan.model, plan.dataset, plan.preprocess, plan.preprocess_desc, plan.runner, plan.units


def inspect(model, input_size=None, layout="auto", color=None, device="cpu") -> list[ConvUnit]:
    """Every Conv layer of the model with its chain, channels, output size and whether it is scorable.

    Takes the CLI's forms too (``input_size="320x320"``).
    """
    from ..config import PreprocessOptions, RunnerOptions

    pp = PreprocessOptions.build(input_size=input_size, layout=layout, color=color)
    device = RunnerOptions.build(device).device
    lm = load_model(model)
    pre = resolve_preprocess(list(lm.input_shape), input_size=pp.input_size, layout=pp.layout, color=pp.color)
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
    model=None, data=None, output=None, *, config: ScoreConfig | None = None, progress=False, log=None, **options
):
    """Feature entropy of every selected conv unit for every class.

    Give the model, the data and options as the CLI takes them (``layers="conv1,3"``, ``input_size="224x224"``,
    ``mean="0.485,0.456,0.406"`` or parsed values; see :meth:`ScoreConfig.build`), or a ready ``config``. Writes
    ``results.h5`` and ``scores.csv`` under the output directory (default ``onnx-fe-results/<model name>``) and
    returns a :class:`ScoreResult`. Finished work is reused when called again with the same inputs and parameters;
    an interrupted run resumes from its last finished shard. Wrong input raises :class:`OnnxFeError`.
    """
    if config is None:
        config = ScoreConfig.build(model, data, output, **options)
    elif model is not None or data is not None or output is not None or options:
        raise OnnxFeError("give either a config or the model, data and options, not both")
    return run(config, progress=progress, log=log)


def run(cfg: ScoreConfig, *, progress=False, log=None, executor=None) -> ScoreResult:
    """Carry out one scoring run described by ``cfg`` (see :func:`score`), its control if asked, and layers.csv."""
    log = log or (lambda msg: None)
    res = _score_once(cfg, progress=progress, log=log, executor=executor)
    control = None
    if cfg.control == "random-init":
        from ..model.randomize import randomize

        twin_dir = res.output / "control"
        twin_dir.mkdir(exist_ok=True)
        twin = twin_dir / "model.onnx"
        randomize(cfg.model, twin, seed=cfg.control_seed)
        log(f"note: scoring the control, a random-init twin (seed {cfg.control_seed}) of the model: {twin}")
        control = _score_once(
            cfg.replace(model=str(twin), output=str(twin_dir), control=None),
            progress=progress,
            log=log,
            executor=executor,
        )
        res.control = control
    res.layers = _write_layers_csv(cfg, res, control)
    return res


def _write_layers_csv(cfg: ScoreConfig, res: ScoreResult, control: ScoreResult | None) -> list[dict]:
    """layers.csv: each layer's means over units with CIs, the noise null of its map size, and the control."""
    from ..io.results import read_layer_scores, write_table_csv
    from ..scores.layers import layer_row
    from ..scores.statistics import noise_null

    layers = read_layer_scores(res.results_h5)
    ctrl = {r["layer"]: r for r in read_layer_scores(control.results_h5)} if control is not None else None
    rows = []
    for lay in layers:
        n_maps = int(np.median(lay["n_images"][lay["n_images"] > 0])) if (lay["n_images"] > 0).any() else 1
        null = noise_null(
            lay["height"],
            lay["width"],
            method=cfg.method.method,
            params=cfg.method.kwargs,
            n_maps=n_maps,
            k=cfg.statistics.rarefy_k,
        )
        rows.append(
            layer_row(lay, cfg.statistics.ci_level, null=null, control=ctrl.get(lay["layer"]) if ctrl else None)
        )
    res.layers_csv = res.output / "layers.csv"
    write_table_csv(res.layers_csv, rows)
    return rows


def _score_once(cfg: ScoreConfig, *, progress=False, log=None, executor=None) -> ScoreResult:
    """One model's scores: results.h5 and scores.csv (reused or resumed when possible)."""
    t0 = time.perf_counter()
    plan = Plan.build(cfg, log)
    lm, ds, runner, units = plan.model, plan.dataset, plan.runner, plan.units
    workers = cfg.workers or os.cpu_count() or 1
    out = Path(cfg.output) if cfg.output is not None else Path("onnx-fe-results") / lm.path.stem
    if out.exists() and not out.is_dir():
        raise OnnxFeError(f"output {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    final, partial, csv_path = out / "results.h5", out / "results.h5.partial", out / "scores.csv"
    params = {
        "model_sha256": lm.sha256,
        "data_ids_sha256": _ids_hash(ds),
        "method": cfg.method.method,
        "method_params": cfg.method.kwargs,
        "layers": [u.index for u in units],
        "preprocess": plan.preprocess_desc,
        "images_per_class": cfg.images.images_per_class,
        "classes": list(ds.classes),
        "seed": cfg.images.seed,
        "keep_activations": cfg.keep_activations,
        "statistics": cfg.to_dict()["statistics"],
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
            "batch_size": cfg.batch_size,
            "config": cfg.to_json(),
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
            keep_activations=cfg.keep_activations,
        )
        start = 0
    try:
        _run_shards(f, plan, start, workers, progress, executor or SerialExecutor())
        _finish(f, lm, ds, units, cfg.statistics)
        # seconds of the call that completed the run (a resumed run counts its last part only), and when it ended
        f.attrs["wall_time_s"] = time.perf_counter() - t0
        f.attrs["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
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


@dataclass
class ShardResult:
    """What one shard of images [start, stop) gives for every selected layer (small arrays only)."""

    start: int
    stop: int
    birth_points: dict[int, np.ndarray] = field(default_factory=dict)  # layer index → (n, C) int32
    mean_activation: dict[int, np.ndarray] = field(default_factory=dict)  # (n, C) float32
    zero_fraction: dict[int, np.ndarray] = field(default_factory=dict)  # (n, C) float32
    activations: dict[int, np.ndarray] = field(default_factory=dict)  # (n, C, H, W) float32, if kept


def compute_shard(plan: Plan, start: int, stop: int, workers: int = 1) -> ShardResult:
    """Load images [start, stop), run the model, and compute every selected unit's birth points and baselines."""
    ds, runner, cfg = plan.dataset, plan.runner, plan.config
    x = ds.load(start, stop, plan.preprocess, runner.input_dtype)
    try:
        outs = dict(zip(runner.outputs, runner.run(x)))
    except Exception as ex:
        msg = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise OnnxFeError(f"inference failed on images {start}..{stop - 1} ({ds.ids[start]}): {msg}") from None
    res = ShardResult(start, stop)
    for u in plan.units:
        a = outs[u.tap]
        b, c, h, w = a.shape
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a.reshape(b, -1))).any(axis=1).argmax())
            raise OnnxFeError(f"layer {u.index} {u.name} gives NaN or ±inf on image {ds.ids[start + bad]}")
        bp = _birth_points(
            a.reshape(b * c, h, w),
            method=cfg.method.method,
            workers=workers,
            engine=cfg.method.engine if cfg.method.method == "cubical" else None,
            **cfg.method.kwargs,
        )
        res.birth_points[u.index] = bp.reshape(b, c)
        res.mean_activation[u.index] = a.astype(np.float64, copy=False).mean(axis=(2, 3)).astype(np.float32)
        res.zero_fraction[u.index] = (a == 0).mean(axis=(2, 3)).astype(np.float32)
        if cfg.keep_activations:
            res.activations[u.index] = a.astype(np.float32, copy=False)
    return res


def _run_shards(f, plan: Plan, start: int, workers: int, progress: bool, executor) -> None:
    """Compute the shards from ``start`` on and write each one, in order, as it arrives."""
    n = len(plan.dataset)
    step = plan.config.batch_size
    n_maps_per_image = sum(u.channels for u in plan.units)
    bounds = [(s, min(n, s + step)) for s in range(start, n, step)]
    with _progress(progress) as bar:
        if bar is not None:
            t_img = bar.add_task("images", total=n, completed=start)
            t_map = bar.add_task("maps", total=n * n_maps_per_image, completed=start * n_maps_per_image)
        layers = f["layers"]
        for r in executor.map(compute_shard, plan, bounds, workers):
            s, e = r.start, r.stop
            for u in plan.units:
                g = layers[layer_key(u.index)]
                g["birth_points"][s:e] = r.birth_points[u.index]
                g["mean_activation"][s:e] = r.mean_activation[u.index]
                g["zero_fraction"][s:e] = r.zero_fraction[u.index]
                if plan.config.keep_activations:
                    f["activations"][layer_key(u.index)][s:e] = r.activations[u.index]
            f.attrs["n_done"] = e
            f.flush()
            if bar is not None:
                bar.advance(t_map, (e - s) * n_maps_per_image)
                bar.advance(t_img, e - s)


def _finish(f, lm: LoadedModel, ds, units, so) -> None:
    labels = f["labels"][()]
    k = len(ds.classes)
    # a class's bootstrap resamples are keyed by its name, so they do not depend on which other classes were chosen
    class_ids = [int.from_bytes(hashlib.sha256(c.encode()).digest()[:7], "little") for c in ds.classes]
    for u in units:
        g = f["layers"][layer_key(u.index)]
        n_img, fe, br, ie = entropy_table(g["birth_points"][()], labels, k)
        for name, arr in (("n_images", n_img), ("feature_entropy", fe), ("birth_rate", br), ("ineffectiveness", ie)):
            if name in g:
                del g[name]
            g.create_dataset(name, data=arr)
        st = cell_statistics(
            g["birth_points"][()],
            labels,
            k,
            k=so.rarefy_k,
            level=so.ci_level,
            n_resamples=so.resamples,
            seed=so.bootstrap_seed,
            class_ids=class_ids,
        )
        for name in STAT_COLUMNS:
            if name in g:
                del g[name]
            g.create_dataset(name, data=getattr(st, name))
        l1 = conv_weight_l1(lm.model, u)
        if "weight_l1" in g:
            del g["weight_l1"]
        g.create_dataset(
            "weight_l1", data=l1 if l1 is not None and len(l1) == u.channels else np.full(u.channels, np.nan)
        )
    f.attrs["complete"] = True
    f.flush()
