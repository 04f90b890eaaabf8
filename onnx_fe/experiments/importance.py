"""``onnx-fe importance``: the ground-truth importance of every unit, measured by zeroing it alone.

For each selected layer the graph is rewritten as ``ablate`` does (``add_unit_masks``: ``masked = Mul(tap, mask)``
after the unit's tap) and split at the tap (``split_at``): the prefix runs once per batch of images, the suffix once
per group of units. Where the graph allows it (every tensor the prefix hands over has the batch as its first axis
and the model's batch is not fixed), one suffix run serves K units: its inputs are the prefix outputs stacked K times
along the batch axis, and the mask has shape (K·N, C, 1, 1) with one unit zeroed per block of N images. K is chosen
from a byte budget (``STACK_BYTES``) so memory stays bounded; on the CPU, where stacking measured slower, the budget
is 0 (one unit per run) unless ``STACK_BYTES_CPU`` is raised. The unmasked reference of each layer is its own suffix
run with a mask of ones, so a unit that cannot reach the output changes nothing, bit for bit.

Every image's value depends on that image alone: the work is cut into shards of consecutive images and run by the
executors of ``score`` (``-j``, ``--scheduler``); the results are the same bit for bit whatever the number of
workers, the batch size or the shard size. The driver writes each shard into ``importance.h5.partial`` in order
(resume), then the table (``scores.importance``) and the side file (``io.importance``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from ..config import ScoreConfig, _int
from ..errors import DataError, ModelError, OnnxFeError
from ..execution import make_executor, prestart, will_use_processes
from ..execution.cpus import usable_cpus
from ..io import importance as store
from ..io.lock import default_output, output_lock
from ..model.graph import ConvUnit
from ..model.masks import add_unit_masks, split_at
from ..model.runner import ORT_TO_NUMPY, Runner, make_runner, ort_message
from ..scores.importance import as_logits, cross_entropy, importance_rows, looks_like_probabilities, output_change
from .score import Plan, PlanKey, _host, _progress, _versions, default_shard_size

# Bytes of stacked suffix inputs per run (K units at once) on CUDA, and on the CPU. Never changes a result. On the CPU
# stacking measured slower than one unit per run (docs/performance.md: 0.83× on ResNet-18, 0.65× on the demo), so
# it is off there by default; on a GPU a larger batch per launch is what keeps it busy.
STACK_BYTES = 64 << 20
STACK_BYTES_CPU = 0
SESSION_BYTES = 256 << 20  # model bytes of the per-layer sessions a process keeps between shards
FORMAT_VERSION = 1

# the options of ScoreConfig.build that importance takes (the rest are about feature entropy)
OPTIONS = (
    "layers",
    "images_per_class",
    "classes",
    "seed",
    "input_size",
    "layout",
    "color",
    "scale",
    "mean",
    "std",
    "batch_size",
    "device",
    "threads",
    "workers",
    "ci_level",
    "resamples",
    "bootstrap_seed",
    "shard_size",
    "scheduler",
)


@dataclass(frozen=True)
class ImportanceConfig:
    """One ``onnx-fe importance`` run: the shared settings (a :class:`ScoreConfig`, whose method and feature
    entropy options are unused) and the importance options."""

    score: ScoreConfig
    units_per_layer: int | None = None

    @classmethod
    def build(cls, model, data, output=None, *, units_per_layer=None, **options) -> ImportanceConfig:
        """Check and normalise options given as the CLI gives them (text) or as Python values."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"importance() got unexpected keyword argument(s): {', '.join(unknown)}")
        sc = ScoreConfig.build(model, data, output, **options)
        return cls.create(sc, units_per_layer)

    @classmethod
    def create(cls, score: ScoreConfig, units_per_layer=None) -> ImportanceConfig:
        k = None if units_per_layer is None else _int(units_per_layer, "--units-per-layer", 1)
        return cls(score, k)

    @property
    def model(self) -> str:
        return self.score.model

    @property
    def output(self) -> str | None:
        return self.score.output

    def to_dict(self) -> dict:
        d = self.score.to_dict()
        for k in ("method", "keep_activations", "control", "control_seed"):
            d.pop(k, None)
        d["statistics"] = {k: v for k, v in d["statistics"].items() if k != "rarefy_k"}
        d["units_per_layer"] = self.units_per_layer
        return d

    def fingerprint(self) -> dict:
        """The settings that decide the per-image values (the model's and data's digests are added by the run)."""
        d = self.to_dict()
        return {
            "images": d["images"],
            "preprocess": d["preprocess"],
            "layers": d["layers"],
            "units_per_layer": d["units_per_layer"],
        }

    def statistics(self) -> dict:
        return self.to_dict()["statistics"]


@dataclass(frozen=True)
class Spec:
    """What the driver decided once for every worker: how the output is read and which units are measured."""

    output_kind: str  # "classifier" (delta_loss, delta_top1, delta_output) or "output" (delta_output only)
    probabilities: bool
    units: tuple[tuple[int, tuple[int, ...]], ...]  # (layer index, measured units)


def sample_units(channels: int, k: int | None, seed: int, layer_index: int) -> tuple[int, ...]:
    """All units, or ``k`` of them drawn with ``default_rng([seed, layer_index])``, sorted."""
    if k is None or k >= channels:
        return tuple(range(channels))
    chosen = np.random.default_rng([int(seed), int(layer_index)]).choice(channels, size=k, replace=False)
    return tuple(sorted(int(c) for c in chosen))


@dataclass(frozen=True)
class ImportanceKey(PlanKey):
    """A plan as it travels to a worker (see :class:`~onnx_fe.experiments.score.PlanKey`), with the driver's
    :class:`Spec`. The worker reads the model file itself (the masked graphs need its weights)."""

    spec: Spec | None = None

    def plan(self) -> ImportancePlan:
        with _LOCK:
            plan = _PLANS.get(self)
            if plan is None:
                _PLANS.clear()
                ds = self.dataset
                if ds is not None:
                    ds = dataclasses.replace(ds, source=Path(self.config.data))
                base = Plan.build(self.config, lean=False, dataset=ds)
                if base.model.sha256 != self.model_sha256:
                    raise ModelError(
                        f"the model at {self.config.model} on this worker ({_host()}) is not the driver's "
                        "(its sha256 differs)"
                    )
                if base.dataset.fingerprint() != self.data_sha256:
                    raise DataError(f"the images at {self.config.data} on this worker ({_host()}) are not the driver's")
                plan = ImportancePlan(base, self.spec)
                _PLANS[self] = plan
            return plan


_PLANS: dict = {}
_LOCK = threading.Lock()


@dataclass
class _Layer:
    """One layer's sessions: the prefix (up to the tap) and the masked suffix, and whether units can be stacked."""

    unit: ConvUnit
    reaches: bool  # False: the first output does not depend on the tap (every unit's importance is 0)
    prefix: Runner | None = None
    prefix_outputs: list[str] = field(default_factory=list)
    suffix: Runner | None = None
    suffix_inputs: list[str] = field(default_factory=list)
    mask: str = ""
    mask_dtype: type = np.float32
    batchable: bool = False
    nbytes: int = 0
    is_output: bool = False  # the tap is the first output itself: zeroing a unit zeroes its output channel


@dataclass
class ImportancePlan:
    """Everything a shard needs, built once per process: the scoring plan (model, images, preprocessing, selected
    layers), the driver's :class:`Spec`, and the sessions (made when first needed)."""

    base: Plan
    spec: Spec
    _layers: OrderedDict = field(default_factory=OrderedDict)
    _plain: Runner | None = None

    @property
    def config(self) -> ScoreConfig:
        return self.base.config

    @property
    def dataset(self):
        return self.base.dataset

    @property
    def model(self):
        return self.base.model

    def key(self) -> ImportanceKey:
        k = self.base.key()
        return ImportanceKey(k.config, k.model_sha256, k.data_sha256, None, k.dataset, spec=self.spec)

    def release_session(self) -> None:
        self._layers.clear()
        self._plain = None
        self.base.release_session()

    def _threads(self):
        c = self.config
        return c.runner.threads if c.runner.threads is not None else c.workers

    @property
    def output_name(self) -> str:
        return self.model.model.graph.output[0].name

    def plain(self) -> Runner:
        """A session of the unchanged model giving its first output."""
        if self._plain is None:
            r = make_runner(
                self.model, [], device=self.config.runner.device, threads=self._threads(), keep_outputs=True
            )
            r.outputs = [self.output_name]
            self._plain = r
        return self._plain

    def layer(self, u: ConvUnit) -> _Layer:
        lr = self._layers.pop(u.index, None)
        if lr is None:
            lr = _build_layer(self, u)
        self._layers[u.index] = lr  # most recently used last
        while len(self._layers) > 1 and sum(v.nbytes for v in self._layers.values()) > SESSION_BYTES:
            self._layers.popitem(last=False)
        return lr

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The plain model's first output for a batch already padded to the model's fixed batch, if any."""
        r = self.plain()
        return r.session.run(r.outputs, {r.input_name: x})[0]


def _free_mask_batch(model: onnx.ModelProto, mask: str) -> None:
    """Let the mask input take any number of rows (one per stacked image), not just 1."""
    for vi in model.graph.input:
        if vi.name == mask:
            dims = vi.type.tensor_type.shape.dim
            dims[0].Clear()
            dims[0].dim_param = "onnx_fe_blocks"


def _build_layer(plan: ImportancePlan, u: ConvUnit) -> _Layer:
    lm = plan.model
    if u.tap == plan.output_name:  # add_unit_masks leaves a graph output unmasked: the mask is applied here
        return _Layer(u, reaches=True, is_output=True)
    masked, info = add_unit_masks(lm.model, [u.tap])
    mask = info[u.tap][0]
    _free_mask_batch(masked, mask)
    try:
        prefix, pre_out, suffix, ext = split_at(masked, u.tap, plan.output_name, {lm.input_name, mask})
    except OnnxFeError:
        return _Layer(u, reaches=False)
    device, threads = plan.config.runner.device, plan._threads()
    pr = (
        make_runner(dataclasses.replace(lm, model=prefix), [], device=device, threads=threads, keep_outputs=True)
        if prefix is not None
        else None
    )
    sr = make_runner(dataclasses.replace(lm, model=suffix), [], device=device, threads=threads, keep_outputs=True)
    types = {i.name: i.type for i in sr.session.get_inputs()}
    lr = _Layer(
        u,
        True,
        pr,
        pre_out,
        sr,
        ext,
        mask,
        ORT_TO_NUMPY.get(types.get(mask), np.float32),
        nbytes=(prefix.ByteSize() if prefix is not None else 0) + suffix.ByteSize(),
    )
    lr.batchable = _batchable(plan, lr)
    return lr


def _batchable(plan: ImportancePlan, lr: _Layer) -> bool:
    """Whether the suffix inputs can be stacked along their first axis: the model's batch is free and every prefix
    output has the batch as its first axis (checked on one image and on two)."""
    if plan.model.fixed_batch:
        return False
    if lr.prefix is None:
        return True
    x1 = plan.dataset.load(0, 1, plan.base.preprocess, plan.base.runner.input_dtype)
    try:
        one = lr.prefix.session.run(lr.prefix_outputs, {plan.model.input_name: x1})
        two = lr.prefix.session.run(lr.prefix_outputs, {plan.model.input_name: np.concatenate([x1, x1])})
    except Exception:
        return False
    return all(
        a.ndim >= 1 and a.shape[0] == 1 and b.shape[0] == 2 and a.shape[1:] == b.shape[1:] for a, b in zip(one, two)
    )


# --------------------------------------------------------------------------- one shard


@dataclass
class ImportanceShard:
    """Per-image values of images [start, stop) (small arrays only)."""

    start: int
    stop: int
    unmasked_loss: np.ndarray = None
    unmasked_correct: np.ndarray = None
    delta_loss: dict = field(default_factory=dict)  # layer index → (n, U) float64
    delta_top1: dict = field(default_factory=dict)  # (n, U) int8
    delta_output: dict = field(default_factory=dict)  # (n, U) float64
    device: str = "cpu"
    seconds: dict = field(default_factory=dict)
    runs: int = 0  # suffix runs
    stacked: int = 0  # units measured in stacked runs


def _finite(out: np.ndarray, plan, first: int, what: str) -> None:
    a = np.asarray(out)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).argmax())
        raise OnnxFeError(
            f"the model's first output {plan.output_name!r} holds NaN or ±inf on image "
            f"{plan.dataset.ids[first + bad]}{what}; its change cannot be measured"
        )


def compute_shard(plan: ImportancePlan, start: int, stop: int, workers: int = 1) -> ImportanceShard:
    """Measure every unit of the spec on images [start, stop) in batches of ``batch_size`` (the model's fixed batch,
    if it has one, padded by repeating the last image). Writes nothing."""
    spec, ds, lm = plan.spec, plan.dataset, plan.model
    units = {u.index: u for u in plan.base.units}
    step = lm.fixed_batch or plan.config.batch_size
    res = ImportanceShard(start, stop, device=plan.plain().device)
    sec = res.seconds = dict.fromkeys(("load", "unmasked", "prefix", "suffix"), 0.0)
    parts: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i, _ in spec.units}
    losses, hits = [], []
    classifier = spec.output_kind == "classifier"
    for b0 in range(start, stop, step):
        b1 = min(stop, b0 + step)
        t = time.perf_counter()
        x = ds.load(b0, b1, plan.base.preprocess, plan.base.runner.input_dtype)
        real = len(x)
        if lm.fixed_batch and real < lm.fixed_batch:
            x = np.concatenate([x, np.repeat(x[-1:], lm.fixed_batch - real, axis=0)])
        y = ds.labels[b0:b1]
        t1 = time.perf_counter()
        sec["load"] += t1 - t
        try:
            out = plan.forward(x)[:real]
        except Exception as ex:
            raise OnnxFeError(f"inference failed on images {b0}..{b1 - 1} ({ds.ids[b0]}): {ort_message(ex)}") from None
        _finite(out, plan, b0, "")
        if classifier:
            loss, hit = cross_entropy(as_logits(out), y, spec.probabilities)
        else:
            loss, hit = np.full(real, np.nan), np.full(real, -1, np.int8)
        losses.append(loss)
        hits.append(hit)
        sec["unmasked"] += time.perf_counter() - t1
        for idx, chosen in spec.units:
            dl, dt, do = _measure(plan, plan.layer(units[idx]), chosen, x, y, real, b0, res)
            for part, a in zip(parts[idx], (dl, dt, do)):
                part.append(a)
    res.unmasked_loss = np.concatenate(losses)
    res.unmasked_correct = np.concatenate(hits)
    for idx, _ in spec.units:
        res.delta_loss[idx] = np.concatenate(parts[idx][0])
        res.delta_top1[idx] = np.concatenate(parts[idx][1])
        res.delta_output[idx] = np.concatenate(parts[idx][2])
    return res


def stack_budget(device: str) -> int:
    """Bytes of stacked suffix inputs per run on ``device`` (see ``STACK_BYTES``)."""
    return STACK_BYTES if device == "cuda" else STACK_BYTES_CPU


def _measure(plan, lr: _Layer, chosen, x, y, real: int, first: int, res: ImportanceShard):
    """(delta_loss, delta_top1, delta_output), each (real, len(chosen)), of one layer's units on one batch."""
    spec, sec = plan.spec, res.seconds
    classifier = spec.output_kind == "classifier"
    u_count = len(chosen)
    dl = np.zeros((real, u_count)) if classifier else np.full((real, u_count), np.nan)
    dt = np.zeros((real, u_count), dtype=np.int8)
    do = np.zeros((real, u_count))
    if not lr.reaches or not u_count:
        return dl, dt, do
    u = lr.unit
    image = plan.model.input_name
    t = time.perf_counter()
    if lr.is_output:
        base = plan.forward(x)
        _finite(base[:real], plan, first, "")
        if classifier:
            loss0, hit0 = cross_entropy(as_logits(base[:real]), y, spec.probabilities)
        for col, c in enumerate(chosen):
            o = base.copy()
            o[:, c] = 0
            do[:, col] = output_change(o[:real], base[:real])
            if classifier:
                loss, hit = cross_entropy(as_logits(o[:real]), y, spec.probabilities)
                dl[:, col], dt[:, col] = loss - loss0, hit0 - hit
        sec["suffix"] += time.perf_counter() - t
        return dl, dt, do
    try:
        feeds = {}
        if lr.prefix is not None:
            feeds = dict(zip(lr.prefix_outputs, lr.prefix.session.run(lr.prefix_outputs, {image: x})))
        if image in lr.suffix_inputs:
            feeds[image] = x
        t1 = time.perf_counter()
        sec["prefix"] += t1 - t
        c, m = u.channels, len(x)

        def run(f, mask):
            res.runs += 1
            return lr.suffix.session.run([plan.output_name], {**f, lr.mask: mask})[0]

        base = run(feeds, np.ones((1, c, 1, 1), dtype=lr.mask_dtype))[:real]
        sec["reference"] = sec.get("reference", 0.0) + time.perf_counter() - t1
        _finite(base, plan, first, f" (layer {u.index} {u.name}, no unit zeroed)")
        if classifier:
            base_loss, base_hit = cross_entropy(as_logits(base), y, spec.probabilities)
        k = 1
        if lr.batchable:
            block = sum(a.nbytes for a in feeds.values())
            k = int(max(1, min(u_count, stack_budget(lr.suffix.device) // max(1, block))))
        for g0 in range(0, u_count, k):
            group = chosen[g0 : g0 + k]
            if len(group) == 1:
                mask = np.ones((1, c, 1, 1), dtype=lr.mask_dtype)
                mask[0, group[0]] = 0
                outs = run(feeds, mask)[None, :real]
            else:
                stacked = {name: np.concatenate([a] * len(group)) for name, a in feeds.items()}
                mask = np.ones((len(group), m, c, 1, 1), dtype=lr.mask_dtype)
                mask[np.arange(len(group)), :, list(group)] = 0
                out = run(stacked, mask.reshape(len(group) * m, c, 1, 1))
                outs = out.reshape((len(group), m) + out.shape[1:])[:, :real]
                res.stacked += len(group)
                del stacked
            for j, o in enumerate(outs):
                _finite(o, plan, first, f" with unit {group[j]} of layer {u.index} {u.name} zeroed")
                col = g0 + j
                do[:, col] = output_change(o, base)
                if classifier:
                    loss, hit = cross_entropy(as_logits(o), y, spec.probabilities)
                    dl[:, col] = loss - base_loss
                    dt[:, col] = base_hit - hit
        sec["suffix"] += time.perf_counter() - t1
    except OnnxFeError:
        raise
    except Exception as ex:
        raise OnnxFeError(
            f"inference failed on images {first}..{first + real - 1} ({plan.dataset.ids[first]}) with layer "
            f"{u.index} {u.name} masked: {ort_message(ex)}"
        ) from None
    return dl, dt, do


# --------------------------------------------------------------------------- the run


@dataclass
class ImportanceResult:
    output: Path
    csv: Path
    h5: Path
    json: Path
    device: str
    reused: bool
    output_kind: str
    n_images: int
    n_units: int
    unmasked: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def frame(self):
        """importance.csv as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.read_csv(self.csv)


def _decide(plan: ImportancePlan) -> tuple[str, bool, list[str]]:
    """How the first output is read, from the plain model's outputs on the first (up to 8) images:
    (output kind, probabilities, notes)."""
    from .ablate import check_labels

    lm, ds = plan.model, plan.dataset
    n = min(len(ds), 8)
    x = ds.load(0, n, plan.base.preprocess, plan.base.runner.input_dtype)
    fb = lm.fixed_batch or n
    outs = []
    try:
        for s in range(0, n, fb):
            piece = x[s : s + fb]
            real = len(piece)
            if real < fb:
                piece = np.concatenate([piece, np.repeat(piece[-1:], fb - real, axis=0)])
            outs.append(plan.forward(piece)[:real])
    except Exception as e:
        raise OnnxFeError(f"the model failed on the input: {ort_message(e)}") from None
    out = np.concatenate(outs)
    name = plan.output_name
    logits = as_logits(out) if out.ndim >= 2 and out.shape[0] == n else None
    only = (
        "measuring delta_output only (the normalised L2 change of the first output); delta_loss and delta_top1 "
        "are left empty"
    )
    if logits is None:
        shape = tuple(out.shape[1:]) if out.ndim else ()
        return (
            "output",
            False,
            [f"note: the model's first output {name!r} has shape {shape} per image, not (classes,): {only}"],
        )
    try:
        check_labels(ds.classes, logits.shape[1])
    except OnnxFeError as e:
        return "output", False, [f"note: {e}; {only}"]
    return "classifier", bool(np.isfinite(logits).all() and looks_like_probabilities(logits)), []


def importance(
    model=None,
    data=None,
    output=None,
    *,
    config: ImportanceConfig | None = None,
    units_per_layer=None,
    progress=False,
    log=None,
    wait=False,
    client=None,
    executor=None,
    **options,
) -> ImportanceResult:
    """Ground-truth importance of every selected unit: the effect of zeroing it alone on the selected images.

    Takes the options of :func:`onnx_fe.score` that apply (``layers``, ``images_per_class``, ``classes``, ``seed``,
    preprocessing, ``batch_size``, ``device``, ``workers``, ``shard_size``, ``scheduler``, ``ci_level``,
    ``resamples``, ``bootstrap_seed``) in the CLI's text forms or as values, and ``units_per_layer`` (measure a
    seeded sample of that many units per layer). Writes ``importance.csv``, ``importance.h5`` and
    ``importance.json`` under ``output`` (default: ``importance/`` in the model's default results directory).
    Finished work is reused, an interrupted run resumes after its last written shard, and one run at a time writes
    into a directory (``wait``: as for ``score``). Wrong input raises :class:`OnnxFeError`.
    """
    if config is None:
        config = ImportanceConfig.build(model, data, output, units_per_layer=units_per_layer, **options)
    elif model is not None or data is not None or output is not None or options or units_per_layer is not None:
        raise OnnxFeError("give either a config or the model, data and options, not both")
    return run(config, progress=progress, log=log, wait=wait, client=client, executor=executor)


def run(cfg: ImportanceConfig, *, progress=False, log=None, wait=False, client=None, executor=None) -> ImportanceResult:
    log = log or (lambda msg: None)
    sc = cfg.score
    out = Path(sc.output) if sc.output is not None else default_output(sc.model) / "importance"
    t0 = time.perf_counter()
    if executor is None and will_use_processes(sc.workers, client, sc.scheduler):
        prestart()
    base = Plan.build(sc, log, lean=False)  # every input is checked before anything is created or locked
    plan = ImportancePlan(base, None)
    kind, probs, notes = _decide(plan)
    seed = sc.images.seed
    plan.spec = Spec(
        kind, probs, tuple((u.index, sample_units(u.channels, cfg.units_per_layer, seed, u.index)) for u in base.units)
    )
    notes = list(base.notes) + notes
    with output_lock(out, wait=wait, log=log):
        return _run_into(cfg, plan, out, notes, t0, progress, log, client, executor)


def _params(cfg: ImportanceConfig, plan: ImportancePlan) -> dict:
    ds = plan.dataset
    return {
        "format_version": FORMAT_VERSION,
        "model_sha256": plan.model.sha256,
        "data_sha256": ds.fingerprint(),
        **cfg.fingerprint(),
        "preprocess": plan.base.preprocess_desc,
        "classes": list(ds.classes),
        "output_kind": plan.spec.output_kind,
        "output": "probabilities" if plan.spec.probabilities else "logits",
        "units": {str(i): list(c) for i, c in plan.spec.units},
    }


def _run_into(cfg, plan: ImportancePlan, out: Path, notes, t0, progress, log, client, executor) -> ImportanceResult:
    sc, ds, lm, spec = cfg.score, plan.dataset, plan.model, plan.spec
    params = _params(cfg, plan)
    final, partial = out / "importance.h5", out / "importance.h5.partial"
    workers = sc.workers or usable_cpus()
    meta = {
        "model_path": str(lm.path),
        "model_sha256": lm.sha256,
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "output_kind": spec.output_kind,
        "output": ("probabilities" if spec.probabilities else "logits") if spec.output_kind == "classifier" else "",
        "versions": _versions(),
        "data_source": str(ds.source),
    }
    for line in notes:
        log(line)
    stored = store.stored_params(final)
    if stored is not None and store.same_params(stored, params):
        log(f"reusing finished importance in {final}")
        return _publish(cfg, plan, out, final, None, None, params, meta, notes, reused=True, log=log)
    if stored is not None:
        log(
            f"note: the importance in {out} was measured with other {store.describe(stored, params)}; measuring "
            "afresh (it stays until the new one is complete)"
        )
    f = store.resume(partial, params, log)
    if f is not None:
        start = int(f.attrs["n_done"])
        log(f"resuming an interrupted run at image {start} of {len(ds)}")
    else:
        f = store.create(
            partial,
            params=params,
            meta={**meta, "workers": workers, "batch_size": sc.batch_size},
            classes=ds.classes,
            labels=ds.labels,
            ids=ds.ids,
            layers=[(u, dict(spec.units)[u.index]) for u in plan.base.units],
        )
        start = 0
    w = store.ImportanceWriter(f, partial)
    try:
        device = _run_shards(w, plan, start, workers, progress, executor, client)
        w.set_attrs(
            wall_time_s=time.perf_counter() - t0,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            device=device or str(w.f.attrs.get("device", "")),
        )
        w.complete()
    except BaseException:
        if f.id.valid:
            w.close()
        raise
    return _publish(cfg, plan, out, final, w.f, partial, params, meta, notes, reused=False, log=log)


def _publish(cfg, plan, out, final, f, partial, params, meta, notes, *, reused, log) -> ImportanceResult:
    """Compute the table from the stored values and write importance.csv / .json (and move a finished ``.partial``
    into place); a reused result whose table and side file are already right is left as it is."""
    st = cfg.statistics()
    values = store.read_values(f if f is not None else final)
    import h5py

    with h5py.File(final, "r") if f is None else nullcontext(f) as h:
        attrs = {k: h.attrs.get(k) for k in ("finished", "wall_time_s", "device")}
    unmasked = {}
    if values["output_kind"] == "classifier":
        unmasked = {
            "loss": float(np.mean(values["unmasked_loss"])),
            "top1": float(np.mean(values["unmasked_correct"])),
        }
    n_units = sum(len(lay["units"]) for lay in values["layers"])
    full = {
        **meta,
        "params": params,
        "statistics": st,
        "n_images": values["n_images"],
        "n_units": n_units,
        "unmasked": unmasked,
        "layers": [
            {"layer_index": lay["index"], "layer": lay["name"], "units_measured": len(lay["units"])}
            for lay in values["layers"]
        ],
        "finished": _plain(attrs["finished"]),
        "wall_time_s": _plain(attrs["wall_time_s"]),
        "device": _plain(attrs["device"]),
        "notes": [n for n in notes],
    }
    if not (reused and store.outputs_match(out, full)):
        rows = importance_rows(values, level=st["ci_level"], resamples=st["resamples"], seed=st["bootstrap_seed"])
        store.write_outputs(out, rows, full, f=f, partial=partial)
    return ImportanceResult(
        output=out,
        csv=out / "importance.csv",
        h5=final,
        json=out / "importance.json",
        device=str(full["device"] or "cpu"),
        reused=reused,
        output_kind=values["output_kind"],
        n_images=values["n_images"],
        n_units=n_units,
        unmasked=unmasked,
        notes=list(notes),
    )


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _run_shards(w, plan: ImportancePlan, start: int, workers: int, progress: bool, executor, client) -> str:
    """Compute the shards from ``start`` on and write each, in order; ``n_done`` records how far the file is."""
    n = len(plan.dataset)
    cfg = plan.config
    n_units = sum(len(c) for _, c in plan.spec.units)
    own = executor is None
    ex = make_executor(workers, client=client, scheduler=cfg.scheduler) if own else executor
    devices = set()
    try:
        step = cfg.shard_size or default_shard_size(n - start, cfg.batch_size, getattr(ex, "slots", 1))
        bounds = [(s, min(n, s + step)) for s in range(start, n, step)]
        if getattr(ex, "remote", False):
            plan.release_session()
        with _progress(progress) as bar:
            on_done = None
            if bar is not None:
                task = bar.add_task("images × units", total=n * n_units, completed=start * n_units)

                def on_done(s, e):
                    bar.advance(task, (e - s) * n_units)

            for r in ex.map(compute_shard, plan, bounds, workers, on_done=on_done):
                s, e = r.start, r.stop
                w.write_root(s, e, unmasked_loss=r.unmasked_loss, unmasked_correct=r.unmasked_correct)
                for idx, _ in plan.spec.units:
                    w.write(
                        idx,
                        s,
                        e,
                        delta_loss=r.delta_loss[idx],
                        delta_top1=r.delta_top1[idx],
                        delta_output=r.delta_output[idx],
                    )
                devices.add(r.device)
                w.done(e)
    finally:
        if own:
            ex.close()
    return ",".join(sorted(devices))
