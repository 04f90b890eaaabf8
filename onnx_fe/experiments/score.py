"""The scoring run: model + data → birth points (HDF5) → feature entropy (HDF5 + CSV).

graph (rewrite) → data (loading) → inference → topology → entropy → storage, driven by one
:class:`~onnx_fe.config.ScoreConfig`. The work is cut into shards of consecutive images; :func:`compute_shard` is a
pure unit of work (load, infer, birth points, magnitude baselines) and the driver alone writes the results file, in
order, so that an executor can run shards anywhere without changing a number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import ScoreConfig
from ..data import Dataset, Preprocess, npz_preprocess, open_dataset, resolve_preprocess
from ..errors import DataError, ModelError, OnnxFeError
from ..execution import make_executor, prestart, prestart_for, will_use_processes
from ..execution.cpus import usable_cpus
from ..execution.local import worth_a_pool
from ..io.lock import default_output, output_lock
from ..io.results import (
    PER_IMAGE,
    STAT_COLUMNS,
    PartialWriter,
    create,
    describe_change,
    encode_chunks,
    ensure_csv,
    is_complete_match,
    layer_summary,
    resume_partial,
    stored_params,
)
from ..model.graph import ConvUnit, LoadedModel, conv_weight_l1, load_model, require_units, select_units
from ..model.runner import MIN_SIDE, Runner, load_prepared, make_runner, ort_message, probe_shapes, weights_dir
from ..scores.baselines import map_ranks, map_std
from ..scores.statistics import cell_statistics, merge_class_statistics
from ..topology import birth_points as _birth_points


@dataclass
class ScoreResult:
    output: Path
    results_h5: Path
    scores_csv: Path
    device: str
    reused: bool
    summary: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each: defaults chosen for the user, short classes, …
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
    notes: list[str] = field(default_factory=list)  # what the user should be told about the run (one line each)

    @classmethod
    def build(
        cls,
        config: ScoreConfig,
        log=None,
        lean: bool = True,
        model: LoadedModel | None = None,
        dataset: Dataset | None = None,
    ) -> Plan:
        """Load and check everything. ``lean`` (the default) keeps the weights in memory once: the model object keeps
        only its graph afterwards (see :func:`~onnx_fe.model.runner.make_runner`). ``model``, ``dataset``: the
        config's model and images, already loaded (a worker gets them from the driver)."""
        notes: list[str] = []
        lm, ds, pre, pre_desc, runner, units = _prepare(
            config, log or (lambda msg: None), notes, lean=lean, lm=model, ds=dataset
        )
        return cls(config, lm, ds, pre, pre_desc, runner, units, notes)

    def key(self) -> PlanKey:
        """What another process needs to rebuild this plan (:meth:`PlanKey.plan`) and check that it is the same."""
        cfg = self.config.replace(
            model=str(Path(self.config.model).resolve()), data=str(Path(self.config.data).resolve())
        )
        ds = self.dataset
        listing = dataclasses.replace(ds, notes=[]) if ds.kind == "folder" else None
        return PlanKey(cfg, self.model.sha256, ds.fingerprint(), weights_dir(self.model), listing)

    def release_session(self) -> None:
        """Free the onnxruntime session (it is rebuilt if this plan runs a shard again)."""
        self.runner.session = None


@dataclass(frozen=True)
class PlanKey:
    """A plan as it travels to a worker: its config and the digests the worker's rebuilt plan must have.

    :meth:`plan` builds the plan once per process (the last one is cached) and refuses a worker that sees another
    model file or other images under the same paths. The driver's image listing (``dataset``: names, labels and the
    sha256 of every file, for image folders) travels with the key, so a worker neither lists nor reads all the
    images again; every image it reads is checked against its digest. A worker on the driver's machine (a local
    pool) takes the model's graph and weights from the driver's ``prepared`` directory: it neither reads the model
    file again nor holds another copy of the weights (they are one file, mapped by every process). Executors send a
    key once per worker process, not once per shard.
    """

    config: ScoreConfig
    model_sha256: str
    data_sha256: str
    prepared: str | None = None  # the driver's directory of the model's weights: used where it is visible
    dataset: Dataset | None = field(default=None, compare=False, repr=False)

    def with_threads(self, threads: int) -> PlanKey:
        """This key with ``threads`` onnxruntime threads, unless the config sets them (``--threads``)."""
        r = self.config.runner
        if r.threads is not None:
            return self
        return dataclasses.replace(self, config=self.config.replace(runner=dataclasses.replace(r, threads=threads)))

    def plan(self) -> Plan:
        with _PLANS_LOCK:
            plan = _PLANS.get(self)
            if plan is None:
                _PLANS.clear()  # one plan per process: a long-lived (Dask) worker frees the previous run's model
                lm = None
                if self.prepared is not None and os.path.isdir(self.prepared):  # same machine: share the weights
                    lm = load_prepared(self.prepared, self.model_sha256, self.config.model)
                ds = self.dataset
                if ds is not None:
                    ds = dataclasses.replace(ds, source=Path(self.config.data))
                plan = Plan.build(self.config, model=lm, dataset=ds)
                if plan.model.sha256 != self.model_sha256:
                    raise ModelError(
                        f"the model at {self.config.model} on this worker ({_host()}) is not the driver's "
                        "(its sha256 differs)"
                    )
                if plan.dataset.fingerprint() != self.data_sha256:
                    raise DataError(f"the images at {self.config.data} on this worker ({_host()}) are not the driver's")
                _PLANS[self] = plan
            return plan


_PLANS: dict[PlanKey, Plan] = {}
_PLANS_LOCK = threading.Lock()


def _host() -> str:
    import socket

    return f"{socket.gethostname()}, pid {os.getpid()}"


def _prepare(
    cfg: ScoreConfig,
    log,
    notes: list | None = None,
    lean: bool = False,
    lm: LoadedModel | None = None,
    ds: Dataset | None = None,
):
    """Load and check the model, data and preprocessing; probe every conv's output shape; select the layers."""
    notes = [] if notes is None else notes
    lm = lm or load_model(cfg.model)
    opts, pp = cfg.images, cfg.preprocess
    if ds is None:
        ds = open_dataset(cfg.data, images_per_class=opts.images_per_class, classes=opts.classes, seed=opts.seed)
    notes.extend(ds.notes)
    shape = list(lm.input_shape)
    if ds.kind == "npz":
        pre = npz_preprocess(ds, shape, pp.layout)
        pre_desc = {"npz": "fed as-is", "layout": pre.layout}
    else:
        pre = resolve_preprocess(
            shape,
            input_size=pp.input_size,
            layout=pp.layout,
            color=pp.color,
            scale=pp.scale,
            mean=pp.mean,
            std=pp.std,
            input_elem_type=lm.input_elem_type,
        )
        pre_desc = pre.as_dict()
        if pre.note:
            notes.append(pre.note)
    # -j is the number of cores: one process with -j 1 also runs onnxruntime on one thread (unless --threads)
    threads = cfg.runner.threads if cfg.runner.threads is not None else cfg.workers
    runner = make_runner(lm, lm.units, device=cfg.runner.device, threads=threads, lean=lean)
    require_units(lm)
    probe_shapes(runner, lm.units, ds.load(0, 1, pre, runner.input_dtype))
    if runner.fixed_batch and runner.fixed_batch != cfg.batch_size:
        notes.append(
            f"note: the model takes a fixed batch of {runner.fixed_batch}; images are run {runner.fixed_batch} at a "
            "time (the results do not depend on it)"
        )
    for line in lm.skipped:
        notes.append(f"note: {line}")
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
    plan = Plan.build(ScoreConfig.build(model, data, **options), lean=False)  # callers rewrite the model's graph
    return plan.model, plan.dataset, plan.preprocess, plan.preprocess_desc, plan.runner, plan.units


def inspect(model, input_size=None, layout="auto", color=None, device="cpu") -> list[ConvUnit]:
    """Every Conv layer of the model with its chain, channels, output size and whether it is scorable.

    Takes the CLI's forms too (``input_size="320x320"``).
    """
    return inspect_model(model, input_size=input_size, layout=layout, color=color, device=device).units


def inspect_model(model, input_size=None, layout="auto", color=None, device="cpu") -> LoadedModel:
    """As :func:`inspect`, returning the loaded model: its ``units`` probed, and ``skipped`` (convs that are not
    layers, and why)."""
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
    return lm


def score(
    model=None,
    data=None,
    output=None,
    *,
    config: ScoreConfig | None = None,
    progress=False,
    log=None,
    wait=False,
    client=None,
    **options,
):
    """Feature entropy of every selected conv unit for every class.

    Give the model, the data and options as the CLI takes them (``layers="conv1,3"``, ``input_size="224x224"``,
    ``mean="0.485,0.456,0.406"`` or parsed values; see :meth:`ScoreConfig.build`), or a ready ``config``. Writes
    ``results.h5`` and ``scores.csv`` under the output directory (default ``onnx-fe-results/<model name>-<hash>``) and
    returns a :class:`ScoreResult`. Finished work is reused when called again with the same inputs and parameters;
    an interrupted run resumes from its last finished shard. Another run writing into the same output directory
    makes this one fail at once, or with ``wait=True`` wait for it. Wrong input raises :class:`OnnxFeError`.

    Where the work runs: ``workers`` > 1 (default: all cores) runs shards of images in that many local processes;
    ``client`` (a ``dask.distributed.Client``) or ``scheduler="tcp://HOST:PORT"`` runs them on a Dask cluster, and
    ``cluster="slurm", cluster_options={"jobs": 2, "queue": "cpu", ...}`` on Dask workers started as SLURM jobs. The
    results are the same bit for bit (docs/scaling.md).
    """
    if config is None:
        config = ScoreConfig.build(model, data, output, **options)
    elif model is not None or data is not None or output is not None or options:
        raise OnnxFeError("give either a config or the model, data and options, not both")
    return run(config, progress=progress, log=log, wait=wait, client=client)


def run(cfg: ScoreConfig, *, progress=False, log=None, executor=None, wait=False, client=None) -> ScoreResult:
    """Carry out one scoring run described by ``cfg`` (see :func:`score`), its control if asked, and layers.csv.
    ``executor``, or a Dask ``client``, says where the shards run (default: :func:`onnx_fe.execution.make_executor`).

    The output directory is locked for the whole run (another run into it is refused, or with ``wait`` waited
    for) before anything is written there. A previous result in it is replaced only when the new one is
    complete."""
    log = log or (lambda msg: None)
    out = Path(cfg.output) if cfg.output is not None else default_output(cfg.model)
    t0 = time.perf_counter()
    if executor is None:  # -j N: a pool for sure; its fork server loads onnx-fe and the engines while the plan is built
        prestart_for(cfg.workers, client, cfg.scheduler, cfg.cluster)
    plan = Plan.build(cfg, log)  # every input is checked before anything is created or locked
    default_pool = cfg.workers is None and will_use_processes(None, client, cfg.scheduler, cfg.cluster)
    if executor is None and default_pool and _pool(plan):  # the default -j, and a run worth a pool: the server
        prestart()  # loads while the results file is opened
    with output_lock(out, wait=wait, log=log):
        res = _score_once(cfg, out, plan=plan, progress=progress, log=log, executor=executor, client=client, t0=t0)
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
                twin_dir,
                progress=progress,
                log=log,
                executor=executor,
                client=client,
            )
            res.control = control
        res.layers = _write_layers_csv(cfg, res, control)
    return res


def _write_layers_csv(cfg: ScoreConfig, res: ScoreResult, control: ScoreResult | None) -> list[dict]:
    """layers.csv: each layer's means over units with CIs, the noise null of its map size, and the control."""
    from ..io.nullcache import noise_null  # looked up (shipped table, user cache), computed once
    from ..io.results import read_layer_scores, write_table_csv
    from ..scores.layers import layer_row

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
            # a pre-activation tap is signed: its null is signed noise, a post-activation tap's ReLU'd noise
            relu=lay["activated"],
        )
        rows.append(
            layer_row(
                lay,
                cfg.statistics.ci_level,
                null=null,
                control=ctrl.get(lay["layer"]) if ctrl else None,
                n_resamples=cfg.statistics.resamples,
                seed=cfg.statistics.bootstrap_seed,
            )
        )
    res.layers_csv = res.output / "layers.csv"
    write_table_csv(res.layers_csv, rows)
    return rows


def _score_once(
    cfg: ScoreConfig, out: Path, *, plan=None, progress=False, log=None, executor=None, client=None, t0=None
) -> ScoreResult:
    """One model's scores into ``out`` (locked by the caller): results.h5 and scores.csv, reused or resumed
    when possible."""
    t0 = time.perf_counter() if t0 is None else t0
    log = log or (lambda msg: None)
    plan = plan or Plan.build(cfg, log)
    lm, ds, runner, units = plan.model, plan.dataset, plan.runner, plan.units
    workers = cfg.workers or usable_cpus()
    params = {
        "model_sha256": lm.sha256,
        "data_sha256": ds.fingerprint(),
        "method": cfg.method.method,
        "method_params": cfg.method.kwargs,
        "layers": [u.index for u in units],
        "preprocess": plan.preprocess_desc,
        "images_per_class": cfg.images.images_per_class,
        "classes": list(ds.classes),
        "seed": cfg.images.seed,
        "keep_activations": cfg.keep_activations,
        "statistics": cfg.to_dict()["statistics"],
        "format_version": 2,  # 2: hrank and activation_std per image
        **({} if cfg.hrank else {"hrank": False}),  # --no-hrank: no hrank dataset (a default run's keys as before)
    }
    final, partial, csv_path = out / "results.h5", out / "results.h5.partial", out / "scores.csv"
    if is_complete_match(final, params, log):
        log(f"reusing finished results in {final}")
        ensure_csv(final, csv_path)
        return ScoreResult(out, final, csv_path, _stored_device(final), True, layer_summary(final), list(plan.notes))
    change = describe_change(stored_params(final), params)
    if change:
        log(
            f"note: the results in {out} were made with other {change}; scoring afresh (they stay until the "
            "new results are complete)"
        )
    f = resume_partial(partial, params, log)
    if f is not None:
        start = int(f.attrs["n_done"])
        log(f"resuming an interrupted run at image {start} of {len(ds)}")
    else:
        meta = {
            "model_path": str(lm.path),
            "model_sha256": lm.sha256,
            "device": runner.device,
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
    w = PartialWriter(f, partial)
    stats = ClassStatistics(w, units, ds.classes, cfg.statistics)
    try:
        _run_shards(w, plan, start, workers, progress, executor, client, log, stats=stats)
        _finish(w, lm, units, stats.collect(workers))
        # seconds of the call that completed the run (a resumed run counts its last part only), and when it ended
        w.set_attrs(
            wall_time_s=time.perf_counter() - t0,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    except BaseException:
        stats.close()
        if f.id.valid:  # an interruption or another error: keep the .partial for a resume
            w.close()
        raise
    w.commit(final, csv_path)
    return ScoreResult(out, final, csv_path, runner.device, False, layer_summary(final), list(plan.notes))


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
    hrank: dict[int, np.ndarray] = field(default_factory=dict)  # (n, C) int32, matrix rank of each map
    activation_std: dict[int, np.ndarray] = field(default_factory=dict)  # (n, C) float32
    activations: dict[int, list] = field(default_factory=dict)  # compressed HDF5 chunks, if kept (encode_chunks)
    device: str = "cpu"  # where this shard's inference ran
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage: load, inference, birth_points, ...


CHUNK_PIXELS = 1 << 22  # maps are filtered in chunks of about this many pixels: memory is set by the chunk


def compute_shard(plan: Plan, start: int, stop: int, workers: int = 1) -> ShardResult:
    """Load images [start, stop), run the model in batches of ``batch_size``, and compute every selected unit's
    birth points and baselines (``workers`` threads for the birth points). Writes nothing."""
    cfg = plan.config
    parts: dict[int, tuple[list, ...]] = {u.index: tuple([] for _ in PER_IMAGE) for u in plan.units}
    res = ShardResult(start, stop, device=plan.runner.device)
    sec = res.seconds = dict.fromkeys(("load", "inference", "birth_points", "baselines", "encode"), 0.0)
    for b0 in range(start, stop, cfg.batch_size):
        b1 = min(stop, b0 + cfg.batch_size)
        outs = dict(zip(plan.runner.outputs, _infer(plan, b0, b1, sec)))
        for u in plan.units:
            a = outs[u.tap]
            for part, arr in zip(parts[u.index], _layer(plan, u, a, b0, workers, sec)):
                part.append(arr)
            if cfg.keep_activations:
                t = time.perf_counter()
                res.activations.setdefault(u.index, []).extend(_encode(a, b0, workers))
                sec["encode"] += time.perf_counter() - t
        del outs, a
    for u in plan.units:
        for name, p in zip(PER_IMAGE, parts[u.index]):
            getattr(res, name)[u.index] = np.concatenate(p)
    return res


def _infer(plan: Plan, start: int, stop: int, sec: dict) -> list[np.ndarray]:
    ds, runner = plan.dataset, plan.runner
    t0 = time.perf_counter()
    x = ds.load(start, stop, plan.preprocess, runner.input_dtype)
    t1 = time.perf_counter()
    sec["load"] += t1 - t0
    try:
        return runner.run(x)
    except OnnxFeError:
        raise
    except Exception as ex:
        raise OnnxFeError(
            f"inference failed on images {start}..{stop - 1} ({ds.ids[start]}): {ort_message(ex)}"
        ) from None
    finally:
        sec["inference"] += time.perf_counter() - t1


def _layer(plan: Plan, u: ConvUnit, a: np.ndarray, first: int, workers: int, sec: dict):
    """Birth points, mean activation, zero fraction, matrix rank and standard deviation (each (b, C), in the order
    of ``PER_IMAGE``) of one layer's maps for images first.., a chunk of maps at a time. The mean is a float64 sum of
    the float32 values, which is finite exactly when every value is (it cannot overflow), so it is also the check
    for NaN and ±inf. Every value of a map depends on that map alone (never on the chunk: batch and shard sizes
    change nothing)."""
    b, c, h, w = a.shape
    maps = a.reshape(b * c, h, w)
    n = len(maps)
    bp = np.empty(n, dtype=np.int32)
    ma = np.empty(n, dtype=np.float32)
    zf = np.empty(n, dtype=np.float32)
    hr = np.empty(n, dtype=np.int32)
    sd = np.empty(n, dtype=np.float32)
    step = max(1, CHUNK_PIXELS // (h * w))
    method = plan.config.method
    for i in range(0, n, step):
        t0 = time.perf_counter()
        m = maps[i : i + step]
        with np.errstate(invalid="ignore"):  # inf − inf: reported below as a NaN/±inf map
            mean = m.mean(axis=(1, 2), dtype=np.float64)
        finite = np.isfinite(mean)
        if not finite.all():
            bad = i + int(np.argmin(finite))
            raise OnnxFeError(
                f"layer {u.index} {u.name} gives NaN or ±inf on image {plan.dataset.ids[first + bad // c]}"
            )
        ma[i : i + step] = mean
        zf[i : i + step] = np.count_nonzero(m == 0, axis=(1, 2)) / (h * w)
        sd[i : i + step] = map_std(m, mean)  # the float64 means above: NumPy skips that pass (same numbers)
        hr[i : i + step] = map_ranks(m, workers) if plan.config.hrank else -1  # --no-hrank: not computed
        t1 = time.perf_counter()
        bp[i : i + step] = _birth_points(
            m,
            method=method.method,
            workers=workers,
            engine=method.engine if method.method == "cubical" else None,
            **method.kwargs,
        )
        sec["baselines"] += t1 - t0
        sec["birth_points"] += time.perf_counter() - t1
    return bp.reshape(b, c), ma.reshape(b, c), zf.reshape(b, c), hr.reshape(b, c), sd.reshape(b, c)


def _encode(a: np.ndarray, first: int, workers: int) -> list:
    """Compressed HDF5 chunks of the activations of images first.. (in ``workers`` threads: zlib frees the GIL)."""
    a = a.astype(np.float32, copy=False)
    if workers <= 1 or len(a) < 2:
        return encode_chunks(a, first)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(a))) as ex:
        parts = ex.map(lambda i: encode_chunks(a[i : i + 1], first + i), range(len(a)))
        return [c for p in parts for c in p]


def default_shard_size(n_images: int, batch_size: int, slots: int) -> int:
    """Images per shard when the config does not say: one inference batch; with several ``slots`` (workers), less
    when needed so that every one gets about four shards (load balance). Results never depend on it."""
    if slots <= 1:
        return batch_size
    return max(1, min(batch_size, -(-n_images // (4 * slots))))


def _pool(plan: Plan, start: int = 0) -> bool:
    """False when the default -j would start a pool of processes for a run too small to pay for it (then this
    process computes it, with threads); True otherwise, and whenever -j was given."""
    if plan.config.workers is not None:
        return True
    return worth_a_pool(len(plan.dataset) - start, [(u.channels, u.height, u.width) for u in plan.units])


def _run_shards(
    w: PartialWriter,
    plan: Plan,
    start: int,
    workers: int,
    progress: bool,
    executor=None,
    client=None,
    log=None,
    stats: ClassStatistics | None = None,
) -> None:
    """Compute the shards from ``start`` on (``executor``, or the one the config and ``client`` call for) and write
    each one, in order, as soon as it and all before it are done; ``n_done`` records how far the file is written.
    ``stats`` is told how far the file is written, so that it computes a class's statistics as soon as all the
    class's images are in (in the background while the shards run in other processes)."""
    n = len(plan.dataset)
    cfg = plan.config
    n_maps_per_image = sum(u.channels for u in plan.units)
    own = executor is None
    ex = (
        make_executor(
            workers if _pool(plan, start) else 1,
            client=client,
            scheduler=cfg.scheduler,
            cluster=cfg.cluster,
            cluster_options=cfg.cluster_options,
            log=log,
        )
        if own
        else executor
    )
    try:
        step = cfg.shard_size or default_shard_size(n - start, cfg.batch_size, getattr(ex, "slots", 1))
        bounds = [(s, min(n, s + step)) for s in range(start, n, step)]
        if getattr(ex, "remote", False):
            plan.release_session()  # the workers run the model; the driver only writes
            if stats is not None:
                stats.background()  # this process is free while the shards run: statistics as classes complete
        if stats is not None:
            stats.advance(start)  # a resumed run: the classes already complete
        devices = set()
        with _progress(progress) as bar:
            on_done = None
            if bar is not None:
                t_img = bar.add_task("images", total=n, completed=start)
                t_map = bar.add_task("maps", total=n * n_maps_per_image, completed=start * n_maps_per_image)

                def on_done(s, e):  # as shards finish, in any order
                    bar.advance(t_map, (e - s) * n_maps_per_image)
                    bar.advance(t_img, e - s)

            names = [name for name in PER_IMAGE if cfg.hrank or name != "hrank"]
            for r in ex.map(compute_shard, plan, bounds, workers, on_done=on_done):
                s, e = r.start, r.stop
                for u in plan.units:
                    w.write(u.index, s, e, **{name: getattr(r, name)[u.index] for name in names})
                    if cfg.keep_activations:
                        w.write_chunks(u.index, r.activations[u.index])
                devices.add(r.device)
                w.done(e)
                if stats is not None:
                    stats.advance(e)
        if devices:
            w.set_attrs(shard_devices=",".join(sorted(devices)))
    finally:
        if own:
            ex.close()


class ClassStatistics:
    """Every layer's per-class statistics (:func:`~onnx_fe.scores.statistics.cell_statistics`), computed a group of
    classes at a time as soon as all of their images are written.

    A cell's statistics depend on its own class's images and keys only, so computing them for groups of classes and
    merging them (:func:`~onnx_fe.scores.statistics.merge_class_statistics`) gives the numbers of one call on all
    the images, bit for bit. The images of a folder come class after class, so with the shards in other processes
    (:meth:`background`) this process computes the first classes' statistics in one thread while the later shards
    run, and only the classes completed by the last shards are left for the end (:meth:`collect`, in threads). A
    run in this process computes them all at the end, as one group. In the background, a task is at most
    ``CLASSES_PER_TASK`` classes, and reads its birth points only when it starts: memory stays bounded if the
    statistics fall behind the shards, and a stopped run waits for one small task at most.
    """

    CLASSES_PER_TASK = 8

    def __init__(self, w: PartialWriter, units, classes, so):
        self.w, self.units, self.so = w, list(units), so
        self.labels = w.f["labels"][()]
        self.n_classes = len(classes)
        # a class's bootstrap resamples are keyed by its name, so they do not depend on which other classes were chosen
        self.class_ids = np.array(
            [int.from_bytes(hashlib.sha256(c.encode()).digest()[:7], "little") for c in classes], dtype=np.int64
        )
        # the classes in the order they complete: a class is complete once the rows up to its last image are written
        present = np.unique(self.labels)
        last = np.array([int(np.flatnonzero(self.labels == c)[-1]) + 1 for c in present], dtype=np.int64)
        order = np.argsort(last, kind="stable")
        self._todo = list(zip(last[order].tolist(), present[order].tolist()))
        self._deferred: list[int] = []  # complete classes not yet computed (no background thread)
        self._parts: list = []  # (classes, [CellStatistics per layer]) or (classes, Future)
        self._pool = None
        self._stop = threading.Event()

    def background(self) -> None:
        """From now on compute each newly complete group of classes in a background thread."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="onnx-fe-statistics")

    def advance(self, n_done: int) -> None:
        """Rows [0, n_done) are written: the classes whose images all lie there are complete."""
        group = []
        while self._todo and self._todo[0][0] <= n_done:
            group.append(self._todo.pop(0)[1])
        if not group:
            return
        if self._pool is None:
            self._deferred.extend(group)
            return
        for i in range(0, len(group), self.CLASSES_PER_TASK):
            chunk = group[i : i + self.CLASSES_PER_TASK]
            self._parts.append((chunk, self._pool.submit(self._task, chunk)))

    def _task(self, group):
        """In the background thread: every layer's statistics of the classes ``group`` (None once stopped)."""
        out = []
        for bp in self._rows(group):
            if self._stop.is_set():
                return None
            out.append(self._stats(group, bp))
        return out

    def _rows(self, group):
        """Every layer's birth points of the images of the classes ``group``, read from the file layer by layer."""
        sel = np.flatnonzero(np.isin(self.labels, group))
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        return (self.w.read(u.index, "birth_points", lo, hi)[sel - lo] for u in self.units)

    def _stats(self, group, bp):
        so = self.so
        at = np.full(self.n_classes, -1, dtype=np.int64)
        at[group] = np.arange(len(group))  # the group's classes renumbered 0.. in the order of ``group``
        return cell_statistics(
            bp,
            at[self.labels[np.isin(self.labels, group)]],
            len(group),
            k=so.rarefy_k,
            level=so.ci_level,
            n_resamples=so.resamples,
            seed=so.bootstrap_seed,
            class_ids=self.class_ids[group],
        )

    def collect(self, workers: int = 1) -> list:
        """Every layer's statistics (a list in the order of the units' layers), once all rows are written. The
        classes left are computed here, layers in ``workers`` threads (the bootstrap's compiled loops and NumPy's
        sorts release the GIL; the shards' processes are gone by now)."""
        if self._todo:
            raise RuntimeError("not every image is written yet")
        group = self._deferred
        if group:
            rows = list(self._rows(group))
            threads = max(1, min(int(workers or 1), len(rows)))
            if threads > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as ex:
                    per_layer = list(ex.map(lambda bp: self._stats(group, bp), rows))
            else:
                per_layer = [self._stats(group, bp) for bp in rows]
            del rows
            self._parts.append((group, per_layer))
            self._deferred = []
        parts = [(g, p.result() if hasattr(p, "result") else p) for g, p in self._parts]
        self.close()
        c = [u.channels for u in self.units]
        return [
            merge_class_statistics([(g, p[i]) for g, p in parts], self.n_classes, c[i]) for i in range(len(self.units))
        ]

    def close(self) -> None:
        """Stop the background thread (a task being computed stops after its current layer; those not started are
        dropped)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _finish(w: PartialWriter, lm: LoadedModel, units, all_st) -> None:
    """Every layer's per-class scores and statistics (``all_st``: :meth:`ClassStatistics.collect`) into the results
    file, in order."""
    for u, st in zip(units, all_st):
        # FE and birth rate are the statistics' own (the same numbers as scores.entropy.entropy_table gives, bit
        # for bit: the same counts, the same functions); ineffectiveness is FE / birth rate, FE where no births
        fe, br = st.feature_entropy, st.birth_rate
        with np.errstate(divide="ignore", invalid="ignore"):
            ie = np.where(br > 0, fe / br, fe)
        l1 = conv_weight_l1(lm.model, u)
        w.put_tables(
            u.index,
            {
                "n_images": st.n_images,
                "feature_entropy": fe,
                "birth_rate": br,
                "ineffectiveness": ie,
                **{name: getattr(st, name) for name in STAT_COLUMNS},
                "weight_l1": l1 if l1 is not None and len(l1) == u.channels else np.full(u.channels, np.nan),
            },
        )
    w.complete()
