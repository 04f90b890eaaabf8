"""Several networks on the same data: per-layer feature entropy and birth rate side by side.

Each model is scored with :func:`onnx_fe.score` into its own sub-folder of the output directory, so a second
call reuses finished scores and an interrupted one resumes. The last scored layer's mean feature entropy is the
paper's indicator of how well a network generalises; the top-1 accuracy on the scored images is given beside it
when the data's labels match the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OnnxFeError
from ..io.lock import output_lock
from ..io.tables import write_rows_csv

LAYER_COLUMNS = [
    "model",
    "layer_index",
    "layer",
    "chain",
    "units",
    "size",
    "relative_depth",
    "feature_entropy",
    "birth_rate",
]
MODEL_COLUMNS = [
    "model",
    "path",
    "layers",
    "last_layer",
    "last_feature_entropy",
    "last_birth_rate",
    "top1",
    "top5",
    "loss",
    "n_images",
    "results",
]


@dataclass
class CompareResult:
    output: Path
    layers_csv: Path
    models_csv: Path
    png: Path | None
    layers: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)


def model_names(paths: list[Path]) -> list[str]:
    """Short unique names: file stems, else parent folder names, else folder_stem, else numbered."""
    resolved = [Path(p).resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise OnnxFeError(f"model {paths[i]} is given twice")
    for cand in (
        [p.stem for p in resolved],
        [p.parent.name or p.stem for p in resolved],
        [f"{p.parent.name}_{p.stem}" for p in resolved],
    ):
        if len(set(cand)) == len(cand) and all(cand):
            return cand
    return [f"{p.stem}_{i}" for i, p in enumerate(resolved)]


def compare(
    models,
    data,
    output=None,
    *,
    accuracy=True,
    plot=True,
    log=None,
    progress=False,
    config=None,
    wait=False,
    **options,
) -> CompareResult:
    """Score every model on ``data`` with the same settings and tabulate the layers.

    The settings are the options of :func:`onnx_fe.score` (``options``) or a :class:`~onnx_fe.config.ScoreConfig`
    (``config``) whose model, data and output are replaced for each model. Writes ``compare_layers.csv``, ``compare_models.csv`` and (``plot=True``) ``compare.png`` under ``output``
    (default ``onnx-fe-results/compare``), and each model's ``results.h5`` / ``scores.csv`` in ``output/<name>``.
    The output directory is locked for the run (``wait``: as for :func:`onnx_fe.score`).
    """
    from ..config import ScoreConfig

    log = log or (lambda msg: None)
    models = [Path(m) for m in models]
    if not models:
        raise OnnxFeError("compare needs at least one model")
    if config is None:
        config = ScoreConfig.build(models[0], data, **options)
    elif options:
        raise OnnxFeError("give either a config or options, not both")
    if plot:
        from ..report.plots import require_matplotlib

        require_matplotlib()
    for m in models:
        if not m.exists():
            raise OnnxFeError(f"model not found: {m}")
        if m.is_dir() or m.suffix.lower() != ".onnx":
            raise OnnxFeError(f"expected .onnx model files then the data; {m} is not an .onnx file")
    names = model_names(models)
    out = Path(output) if output is not None else Path("onnx-fe-results") / "compare"
    with output_lock(out, wait=wait, log=log):
        return _compare_into(out, names, models, data, config, accuracy, plot, log, progress, wait)


def _compare_into(out, names, models, data, config, accuracy, plot, log, progress, wait) -> CompareResult:
    from .score import run

    layer_rows, model_rows = [], []
    for name, path in zip(names, models):
        log(f"scoring {name} ({path})")
        res = run(
            config.replace(model=str(path), data=str(data), output=str(out / name)),
            progress=progress,
            log=log,
            wait=wait,
        )
        n = len(res.summary)
        for r in res.summary:
            layer_rows.append(
                {
                    "model": name,
                    "layer_index": r["layer_index"],
                    "layer": r["layer"],
                    "chain": r["chain"],
                    "units": r["units"],
                    "size": r["size"],
                    "relative_depth": (r["layer_index"] / max(1, res.summary[-1]["layer_index"])),
                    "feature_entropy": r["feature_entropy"],
                    "birth_rate": r["birth_rate"],
                }
            )
        last = res.summary[-1]
        rec = {
            "model": name,
            "path": str(path),
            "layers": n,
            "last_layer": f"{last['layer_index']} {last['layer']}",
            "last_feature_entropy": last["feature_entropy"],
            "last_birth_rate": last["birth_rate"],
            "top1": float("nan"),
            "top5": float("nan"),
            "loss": float("nan"),
            "n_images": "",
            "results": str(res.output),
        }
        if accuracy:
            rec.update(_accuracy(path, data, config, log, name))
        model_rows.append(rec)
    out.mkdir(parents=True, exist_ok=True)
    layers_csv, models_csv = out / "compare_layers.csv", out / "compare_models.csv"
    write_rows_csv(layers_csv, LAYER_COLUMNS, layer_rows)
    write_rows_csv(models_csv, MODEL_COLUMNS, model_rows)
    png = None
    if plot:
        from ..report.plots import plot_compare

        png = plot_compare(layer_rows, out / "compare.png", title=f"{len(models)} models on {Path(data).name}")
    return CompareResult(out, layers_csv, models_csv, png, layer_rows, model_rows)


def _accuracy(path, data, cfg, log, name) -> dict:
    from .ablate import evaluate

    pp, im = cfg.preprocess, cfg.images  # the images and preprocessing the scores used
    args = {
        "images_per_class": im.images_per_class,
        "classes": im.classes,
        "seed": im.seed,
        "input_size": pp.input_size,
        "layout": pp.layout,
        "color": pp.color,
        "scale": pp.scale,
        "mean": pp.mean,
        "std": pp.std,
        "batch_size": cfg.batch_size,
        "device": cfg.runner.device,
    }
    try:
        r = evaluate(path, data, **args)
    except OnnxFeError as e:
        log(f"{name}: no accuracy: {e}")
        return {"note": f"no accuracy: {e}"}
    rec = {"top1": r["top1"], "top5": r["top5"], "loss": r["loss"], "n_images": r["n_images"]}
    if r.get("n_outputs") is not None and r["n_outputs"] != r["n_classes"]:
        rec["note"] = (
            f"warning: the data has {r['n_classes']} classes but the model's first output has {r['n_outputs']} "
            "entries; top-1 counts class k (in sorted order) as output k, which may not be what the model means"
        )
        log(f"{name}: {rec['note']}")
    return rec
