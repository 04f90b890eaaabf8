"""Run settings: one frozen, validated, serialisable object per kind of run.

A :class:`ScoreConfig` holds everything a scoring run needs — model, data, which images, how they are
preprocessed, the topological method and its parameters, how the work is executed and where results go. It is built
the same way by the CLI and by the Python API (:meth:`ScoreConfig.build` accepts what the CLI accepts: ``"320x320"``,
``"0.5,0.5,0.5"``, ``"conv1,3"``, or the parsed values), checked once, stored verbatim in ``results.h5`` and picklable,
so that a shard running in another process or on another machine gets all it needs from it.

Only :meth:`ScoreConfig.fingerprint` decides whether finished or interrupted results can be reused: it leaves out
what cannot change a score (batch size, workers, device, output directory, progress display).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import OptionError

LAYOUTS = ("auto", "nchw", "nhwc")
COLORS = ("rgb", "bgr", "gray")
DEVICES = ("auto", "cpu", "cuda")
CONTROLS = ("random-init",)


# --------------------------------------------------------------------------- parsing helpers (CLI text or values)


def parse_size(value, option: str = "--input-size") -> tuple[int, int] | None:
    """``"224x224"``, ``"224"``, ``224``, ``(224, 224)`` → (H, W); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        t = value.strip().lower().replace("×", "x")
        parts = t.split("x") if "x" in t else [t, t]
        try:
            h, w = (int(p) for p in parts)
        except ValueError:
            raise OptionError(f"{option} {value!r}: expected HxW, e.g. 224x224") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        h = w = value
    else:
        try:
            h, w = (int(v) for v in value)
        except (TypeError, ValueError):
            raise OptionError(f"{option} {value!r}: expected HxW, e.g. 224x224") from None
    if h < 1 or w < 1:
        raise OptionError(f"{option} {value!r}: sizes must be positive")
    return int(h), int(w)


def parse_floats(value, option: str) -> tuple[float, ...] | None:
    """``"0.5"``, ``"0.485,0.456,0.406"``, a number or a sequence of numbers → a tuple of finite floats."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v for v in value.replace(" ", ",").split(",") if v]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise OptionError(f"{option} {value!r}: expected a number or comma-separated numbers") from None
    try:
        vals = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise OptionError(f"{option} {value!r}: expected a number or comma-separated numbers") from None
    if not vals:
        raise OptionError(f"{option} is empty")
    if not all(math.isfinite(v) for v in vals):
        raise OptionError(f"{option} {value!r}: values must be finite numbers")
    return vals


def parse_scale(value) -> float | None:
    """``1/255``, ``"1/255"``, ``0.5`` → float; None stays None (the model's input type decides)."""
    if value is None:
        return None
    if isinstance(value, str):
        t = value.strip()
        try:
            if "/" in t:
                a, b = t.split("/", 1)
                v = float(a) / float(b)
            else:
                v = float(t)
        except (ValueError, ZeroDivisionError):
            raise OptionError(f"--scale {value!r}: expected a number such as 1/255 or 0.5") from None
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"--scale {value!r}: expected a number such as 1/255 or 0.5") from None
    if not math.isfinite(v) or v <= 0:
        raise OptionError(f"--scale {value!r}: must be a positive finite number")
    return v


def split_items(values, option: str) -> tuple[str, ...] | None:
    """Comma-separated or repeated items (``["a,b", "c"]`` → ``("a", "b", "c")``); ints are kept as text."""
    if values is None:
        return None
    if isinstance(values, (str, int)) and not isinstance(values, bool):
        values = [values]
    out: list[str] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise OptionError(f"{option} {v!r}: expected names or indices")
        out.extend(s.strip() for s in str(v).split(",") if s.strip())
    if not out:
        raise OptionError(f"{option} is empty")
    return tuple(out)


def class_items(values, option: str = "--classes") -> tuple[str, ...] | None:
    """Class names, comma-separated or repeated, where ``\\,`` is a comma inside a name (a class folder named
    ``a,b`` is chosen with ``a\\,b``); refuses values that name nothing (``","``)."""
    from .data.dataset import split_names

    if values is None:
        return None
    if isinstance(values, (str, int)) and not isinstance(values, bool):
        values = [values]
    out: list[str] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise OptionError(f"{option} {v!r}: expected class names")
        out.extend(split_names(str(v)))
    if not out:
        raise OptionError(f"{option} is empty")
    return tuple(out)


def _int(value, option: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise OptionError(f"{option} {value!r}: expected an integer")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise OptionError(f"{option} {value!r}: expected an integer") from None
    if v != value and not isinstance(value, str):
        raise OptionError(f"{option} {value!r}: expected an integer")
    if minimum is not None and v < minimum:
        raise OptionError(f"{option} must be at least {minimum}")
    return v


def _choice(value, option: str, choices: Sequence[str]) -> str:
    v = str(value).lower() if value is not None else value
    if v not in choices:
        raise OptionError(f"{option} {value!r}: choose one of {', '.join(choices)}")
    return v


# --------------------------------------------------------------------------- option groups


@dataclass(frozen=True)
class PreprocessOptions:
    """How image files become model input. None means "from the model" (size, colour) or the default."""

    input_size: tuple[int, int] | None = None
    layout: str = "auto"
    color: str | None = None
    scale: float | None = None  # None: 1/255 for float inputs, 1 for integer inputs
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def build(cls, input_size=None, layout="auto", color=None, scale=None, mean=None, std=None) -> PreprocessOptions:
        std_t = parse_floats(std, "--std")
        if std_t is not None and any(s == 0 for s in std_t):
            raise OptionError("--std must not contain 0")
        return cls(
            input_size=parse_size(input_size),
            layout=_choice(layout or "auto", "--layout", LAYOUTS),
            color=None if color is None else _choice(color, "--color", COLORS),
            scale=parse_scale(scale),
            mean=parse_floats(mean, "--mean"),
            std=std_t,
        )


@dataclass(frozen=True)
class DataOptions:
    """Which images: per-class count (None = all), a subset of classes, and the seed of the per-class draw."""

    images_per_class: int | None = 100
    classes: tuple[str, ...] | None = None
    seed: int = 0

    @classmethod
    def build(cls, images_per_class=100, classes=None, seed=0) -> DataOptions:
        n = None if images_per_class is None else _int(images_per_class, "--images-per-class", 1)
        return cls(images_per_class=n, classes=class_items(classes), seed=_int(seed, "--seed", 0))


@dataclass(frozen=True)
class RunnerOptions:
    """Where inference runs: ``auto`` (CUDA only if it really loads), ``cpu`` or ``cuda``; onnxruntime threads."""

    device: str = "auto"
    threads: int | None = None

    @classmethod
    def build(cls, device="auto", threads=None) -> RunnerOptions:
        return cls(
            device=_choice(device or "auto", "--device", DEVICES),
            threads=None if threads is None else _int(threads, "--threads", 1),
        )


@dataclass(frozen=True)
class MethodOptions:
    """The topological construction and its parameters (defaults filled in and checked)."""

    method: str = "cubical"
    params: tuple[tuple[str, Any], ...] = ()
    engine: str = "early"  # cubical: "early" (default) or "cripser"; identical birth points, so not in the fingerprint

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    @classmethod
    def build(
        cls, method="cubical", resolution=None, threshold=None, max_edge_density=None, engine=None
    ) -> MethodOptions:
        from .topology import ENGINES, METHODS, method_params

        m = _choice(method or "cubical", "--method", METHODS)
        if m == "cubical" and max_edge_density is not None:
            raise OptionError("--max-edge-density applies to --method clique only")
        if m == "clique" and resolution is not None:
            raise OptionError("--resolution applies to --method cubical only")
        given = (
            {"resolution": resolution, "threshold": threshold}
            if m == "cubical"
            else {"threshold": threshold, "max_edge_density": max_edge_density}
        )
        try:
            p = method_params(m, **given)
        except (TypeError, ValueError) as e:
            raise OptionError(str(e)) from None
        eng = "early" if engine is None else _choice(engine, "--engine", ENGINES)
        if m == "clique" and engine is not None and eng != "early":
            raise OptionError("--engine applies to --method cubical only")
        return cls(method=m, params=tuple(sorted(p.items())), engine=eng)


@dataclass(frozen=True)
class StatisticsOptions:
    """Uncertainty and rarefaction of the per-cell statistics (:mod:`onnx_fe.scores.statistics`, docs/statistics.md).

    ``ci_level``: coverage of the bootstrap intervals; ``resamples``: bootstrap resamples per class (0: no
    intervals); ``bootstrap_seed``: seed of the resamples (separate from the seed that picks the images);
    ``rarefy_k``: births per draw of ``fe_rarefied`` (NaN for cells with fewer births). Part of
    :meth:`ScoreConfig.fingerprint`: other statistics options mean a fresh run.
    """

    ci_level: float = 0.95
    resamples: int = 1000
    bootstrap_seed: int = 0
    rarefy_k: int = 10

    @classmethod
    def build(cls, ci_level=0.95, resamples=1000, bootstrap_seed=0, rarefy_k=10) -> StatisticsOptions:
        if isinstance(ci_level, bool):
            raise OptionError(f"--ci-level {ci_level!r}: expected a number between 0 and 1")
        if isinstance(ci_level, str):
            t = ci_level.strip()
            pct = t.endswith("%")
            try:
                level = float(t[:-1] if pct else t) / (100 if pct else 1)
            except ValueError:
                raise OptionError(f"--ci-level {ci_level!r}: expected a number between 0 and 1, e.g. 0.95") from None
        else:
            try:
                level = float(ci_level)
            except (TypeError, ValueError):
                raise OptionError(f"--ci-level {ci_level!r}: expected a number between 0 and 1, e.g. 0.95") from None
        if not (math.isfinite(level) and 0 < level < 1):
            raise OptionError(f"--ci-level {ci_level!r}: must lie strictly between 0 and 1 (e.g. 0.95 or 95%)")
        return cls(
            ci_level=level,
            resamples=_int(resamples, "--resamples", 0),
            bootstrap_seed=_int(bootstrap_seed, "--bootstrap-seed", 0),
            rarefy_k=_int(rarefy_k, "--rarefy-k", 2),
        )


# --------------------------------------------------------------------------- the run settings


@dataclass(frozen=True)
class ScoreConfig:
    """Everything one ``onnx-fe score`` run needs (see the module docstring)."""

    model: str
    data: str
    output: str | None = None
    layers: tuple[str, ...] | None = None
    method: MethodOptions = field(default_factory=MethodOptions)
    images: DataOptions = field(default_factory=DataOptions)
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    statistics: StatisticsOptions = field(default_factory=StatisticsOptions)
    batch_size: int = 32
    workers: int | None = None
    keep_activations: bool = False
    hrank: bool = True  # the HRank baseline (one float32 SVD a map: about half a ResNet-18 run); False: not computed
    control: str | None = None  # "random-init": also score an untrained twin on the same images
    control_seed: int = 0
    shard_size: int | None = None  # images per unit of work; None: see experiments.score.default_shard_size
    scheduler: str | None = None  # a Dask scheduler's address (tcp://HOST:PORT) to run the shards on
    cluster: str | None = None  # "slurm": start Dask workers as SLURM jobs (dask-jobqueue) to run the shards on
    cluster_options: tuple[tuple[str, str], ...] = ()  # --cluster-option KEY=VALUE pairs (execution.slurm.KEYS)

    FORMAT = 1

    @classmethod
    def build(
        cls,
        model,
        data,
        output=None,
        *,
        layers=None,
        method="cubical",
        resolution=None,
        threshold=None,
        max_edge_density=None,
        engine=None,
        images_per_class=100,
        classes=None,
        seed=0,
        input_size=None,
        layout="auto",
        color=None,
        scale=None,
        mean=None,
        std=None,
        batch_size=32,
        device="auto",
        threads=None,
        workers=None,
        keep_activations=False,
        hrank=True,
        ci_level=0.95,
        resamples=1000,
        bootstrap_seed=0,
        rarefy_k=10,
        control=None,
        control_seed=0,
        shard_size=None,
        scheduler=None,
        cluster=None,
        cluster_options=None,
    ) -> ScoreConfig:
        """Check and normalise options given as the CLI gives them (text) or as Python values."""
        return cls.create(
            model,
            data,
            output,
            layers=layers,
            method=MethodOptions.build(method, resolution, threshold, max_edge_density, engine),
            images=DataOptions.build(images_per_class, classes, seed),
            preprocess=PreprocessOptions.build(input_size, layout, color, scale, mean, std),
            runner=RunnerOptions.build(device, threads),
            statistics=StatisticsOptions.build(ci_level, resamples, bootstrap_seed, rarefy_k),
            batch_size=batch_size,
            workers=workers,
            keep_activations=keep_activations,
            hrank=hrank,
            control=control,
            control_seed=control_seed,
            shard_size=shard_size,
            scheduler=scheduler,
            cluster=cluster,
            cluster_options=cluster_options,
        )

    @classmethod
    def create(
        cls,
        model,
        data,
        output=None,
        *,
        layers=None,
        method: MethodOptions | None = None,
        images: DataOptions | None = None,
        preprocess: PreprocessOptions | None = None,
        runner: RunnerOptions | None = None,
        statistics: StatisticsOptions | None = None,
        batch_size=32,
        workers=None,
        keep_activations=False,
        hrank=True,
        control=None,
        control_seed=0,
        shard_size=None,
        scheduler=None,
        cluster=None,
        cluster_options=None,
    ) -> ScoreConfig:
        """Assemble a config from built option groups (as the CLI does), checking the remaining fields."""
        if model is None or str(model) == "":
            raise OptionError("a model file is required")
        if data is None or str(data) == "":
            raise OptionError("a data directory or .npz is required")
        from .io.paths import check_output

        return cls(
            model=str(model),
            data=str(data),
            output=None if output is None else str(check_output(output)),
            layers=split_items(layers, "--layers"),
            method=method or MethodOptions.build(),
            images=images or DataOptions(),
            preprocess=preprocess or PreprocessOptions(),
            runner=runner or RunnerOptions(),
            statistics=statistics or StatisticsOptions(),
            batch_size=_int(batch_size, "--batch-size", 1),
            workers=None if workers is None else _int(workers, "--workers", 1),
            keep_activations=bool(keep_activations),
            hrank=bool(hrank),
            control=None if control is None else _choice(control, "--control", CONTROLS),
            control_seed=_int(control_seed, "--control-seed", 0),
            shard_size=None if shard_size is None else _int(shard_size, "--shard-size", 1),
            scheduler=_scheduler(scheduler),
            **cluster_settings(scheduler, cluster, cluster_options),
        )

    def replace(self, **changes) -> ScoreConfig:
        return replace(self, **changes)

    # ---- serialisation
    def to_dict(self) -> dict:
        d = asdict(self)
        d["method"] = {"method": self.method.method, "params": self.method.kwargs, "engine": self.method.engine}
        return _plain(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ScoreConfig:
        m = d.get("method", {})
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["method"] = MethodOptions(
            m.get("method", "cubical"), tuple(sorted(m.get("params", {}).items())), m.get("engine", "early")
        )
        kw["images"] = DataOptions(**_tuples(d.get("images", {})))
        kw["preprocess"] = PreprocessOptions(**_tuples(d.get("preprocess", {})))
        kw["runner"] = RunnerOptions(**d.get("runner", {}))
        kw["statistics"] = StatisticsOptions(**d.get("statistics", {}))  # absent in configs stored before it existed
        kw["layers"] = tuple(d["layers"]) if d.get("layers") is not None else None
        kw["cluster_options"] = tuple(tuple(p) for p in d.get("cluster_options", ()))
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> ScoreConfig:
        return cls.from_dict(json.loads(text))

    def fingerprint(self) -> dict:
        """The settings that decide the scores (the model's and data's contents are added by the run)."""
        d = self.to_dict()
        return {
            "method": {k: v for k, v in d["method"].items() if k != "engine"},
            "images": d["images"],
            "preprocess": d["preprocess"],
            "layers": d["layers"],
            "keep_activations": d["keep_activations"],
            "statistics": d["statistics"],
            # only when off, so that the settings of a default run are those of runs made before the option existed
            **({} if d.get("hrank", True) else {"hrank": False}),
        }

    @property
    def model_path(self) -> Path:
        return Path(self.model)

    @property
    def data_path(self) -> Path:
        return Path(self.data)


def _scheduler(value) -> str | None:
    """A Dask scheduler address: ``tcp://HOST:PORT`` (or another Dask protocol), or ``HOST:PORT`` (tcp assumed)."""
    if value is None:
        return None
    v = str(value).strip()
    if not v:
        raise OptionError("--scheduler is empty")
    if "://" not in v:
        v = "tcp://" + v
    proto, rest = v.split("://", 1)
    host, _, port = rest.rpartition(":")
    if proto not in ("tcp", "tls", "ucx", "ws", "wss") or not host or not port.isdigit():
        raise OptionError(f"--scheduler {value!r}: expected a Dask scheduler address such as tcp://HOST:8786")
    return v


def cluster_settings(scheduler, cluster, cluster_options) -> dict:
    """``cluster`` ("slurm" or None) and ``cluster_options`` as config fields. Options come as ``KEY=VALUE`` strings
    (``--cluster-option``), ``(key, value)`` pairs or a dict (a list value: the key repeated); they are checked
    against :data:`onnx_fe.execution.slurm.KEYS`. ``--cluster`` and ``--scheduler`` exclude each other."""
    if isinstance(cluster_options, dict):
        items = [f"{k}={x}" for k, v in cluster_options.items() for x in (v if isinstance(v, (list, tuple)) else [v])]
    else:
        items = [o if isinstance(o, str) else "=".join(map(str, o)) for o in (cluster_options or ())]
    if cluster is None:
        if items:
            raise OptionError("--cluster-option needs --cluster slurm")
        return {"cluster": None, "cluster_options": ()}
    name = _choice(cluster, "--cluster", ("slurm",))
    if scheduler is not None:
        raise OptionError("--cluster and --scheduler exclude each other: give one place to run the shards")
    from .execution.slurm import parse_options

    return {"cluster": name, "cluster_options": parse_options(items)}


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
