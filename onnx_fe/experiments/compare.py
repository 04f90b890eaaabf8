"""Several networks on the same data: per-layer feature entropy side by side, with differences and their uncertainty.

Each model is scored with :func:`onnx_fe.score` into its own sub-folder of the output directory, so a second
call reuses finished scores and an interrupted one resumes. The first model is the reference. Its layers are aligned
with every other model's by relative depth (:func:`onnx_fe.scores.compare.align_layers`), so networks of different
architectures are compared layer for layer without gaps. Per aligned layer: each model's means over units with CIs
(as in its layers.csv) and the difference from the reference with a Welch CI over units and Cohen's d. Per model: the
network-level FE (mean over the reference's layers of the aligned layer's FE) and its difference from the
reference, with a paired bootstrap CI over images and, where the two networks' image rows can be swapped, a
permutation test (docs/method.md, "Comparing networks"). The top-1 accuracy on the scored images is given beside
when the data's labels match the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError
from ..io.lock import output_lock
from ..io.paths import check_output
from ..io.tables import write_rows_csv
from ..scores.compare import DEFAULT_PERMUTATIONS

_STATS = ("fe", "fe_rarefied", "birth_rate")
_CI = ("{}", "{}_ci_low", "{}_ci_high")

LAYER_COLUMNS = [
    "model",
    "ref_layer_index",
    "ref_layer",
    "ref_relative_depth",
    "layer_index",
    "layer",
    "relative_depth",
    "chain",
    "tap",
    "units",
    "size",
    "feature_entropy",
    "fe_ci_low",
    "fe_ci_high",
    "fe_rarefied",
    "fe_rarefied_ci_low",
    "fe_rarefied_ci_high",
    "n_units_rarefied",
    "birth_rate",
    "birth_rate_ci_low",
    "birth_rate_ci_high",
    "null_fe",
    "null_fe_rarefied",
    "delta_fe",
    "delta_fe_ci_low",
    "delta_fe_ci_high",
    "cohens_d",
    "delta_fe_rarefied",
    "delta_fe_rarefied_ci_low",
    "delta_fe_rarefied_ci_high",
    "cohens_d_rarefied",
    "delta_birth_rate",
    "delta_birth_rate_ci_low",
    "delta_birth_rate_ci_high",
]
NETWORK_COLUMNS = [
    f"{pre}{stat}{suf}"
    for stat in ("fe", "fe_rarefied")
    for pre, suf in (
        ("net_", ""),
        ("net_", "_ci_low"),
        ("net_", "_ci_high"),
        ("delta_net_", ""),
        ("delta_net_", "_ci_low"),
        ("delta_net_", "_ci_high"),
        ("p_net_", ""),
    )
]
MODEL_COLUMNS = [
    "model",
    "path",
    "layers",
    "conv_layers",
    "last_layer",
    "last_feature_entropy",
    "last_birth_rate",
    *NETWORK_COLUMNS,
    "aligned_layers",
    "unit_match",
    "permutation",
    "n_resamples",
    "n_permutations",
    "top1",
    "top5",
    "loss",
    "n_images",
    "results",
]


SUMMARY_METHODS = ("cubical", "clique")
NETWORKS_COLUMNS = [
    "model",
    "path",
    "method",
    "layers",
    *[f"{s}_{m}" for m in SUMMARY_METHODS for s in ("fe", "fe_rarefied", "birth_rate")],
    "mean_activation",
    "param_count",
    "log_spec_prod",
    "path_norm",
    "inverse_margin",
    "pacbayes_flatness",
    "sigma_additive",
    "pacbayes_mag_flatness",
    "sigma_multiplicative",
    "train_loss",
    "train_top1",
    "n_images",
]


@dataclass
class CompareResult:
    output: Path
    layers_csv: Path
    models_csv: Path
    png: Path | None
    layers: list[dict] = field(default_factory=list)  # rows of compare_layers.csv
    models: list[dict] = field(default_factory=list)  # rows of compare_models.csv
    networks_csv: Path | None = None  # summary=True
    networks: list[dict] = field(default_factory=list)  # rows of networks.csv


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


@dataclass
class _Net:
    """One scored model, as the comparison needs it."""

    name: str
    path: Path
    result: object  # ScoreResult
    n_conv: int
    layers: list[dict]  # per scored layer: layers.csv row + chain, size, unit values
    filters: dict  # layer index → (C, fan-in) conv weights, or None when not a constant of the graph


def _conv_filters(lm) -> dict:
    """Each Conv layer's weights as (C, fan-in), None where the weight is not a constant."""
    import onnx.numpy_helper as nh

    consts = {t.name: t for t in lm.model.graph.initializer}
    for n in lm.model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts.setdefault(n.output[0], a.t)
    out = {}
    for u in lm.units:
        t = consts.get(u.weight) if u.weight else None
        if t is not None:
            w = nh.to_array(t).astype(np.float64)
            t = w.reshape(w.shape[0], -1)
        out[u.index] = t
    return out


def _load(name: str, path: Path, res) -> _Net:
    from ..io.results import read_layer_scores
    from ..model.graph import load_model
    from ..scores.layers import unit_values

    lm = load_model(path)
    n_conv = len(lm.units)
    summary = {r["layer_index"]: r for r in res.summary}
    units = {r["layer_index"]: r for r in read_layer_scores(res.results_h5)}
    layers = []
    for row in res.layers:
        i = row["layer_index"]
        u = units[i]
        layers.append(
            {
                **row,
                "units": row["n_units"],
                "chain": summary[i]["chain"],
                "size": summary[i]["size"],
                "unit_values": {
                    "fe": unit_values(u["feature_entropy"]),
                    "fe_rarefied": unit_values(u["fe_rarefied"]) if "fe_rarefied" in u else None,
                    "birth_rate": unit_values(u["birth_rate"]),
                    "mean_activation": unit_values(u["mean_activation"]),
                },
            }
        )
    try:
        filters = _conv_filters(lm)
    except Exception:  # an unusual weight layout: correspondence is then reported as not checked
        filters = {}
    return _Net(name, Path(path), res, n_conv, layers, filters)


def _births(h5_path: Path, indices: list[int]) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """Birth points of the given layers, labels, image ids and class names from a results file."""
    import h5py

    from ..io.results import layer_key

    with h5py.File(h5_path, "r") as f:
        bps = [f["layers"][layer_key(i)]["birth_points"][()] for i in indices]
        return bps, f["labels"][()], list(f["image_ids"].asstr()[()]), list(f["classes"].asstr()[()])


def _layer_rows(ref: _Net, net: _Net, alignment: list[int], level: float) -> list[dict]:
    from ..scores.compare import relative_depth
    from ..scores.statistics import cohens_d, difference_ci

    rows = []
    for rl, j in zip(ref.layers, alignment):
        ml = net.layers[j]
        row = {
            "model": net.name,
            "ref_layer_index": rl["layer_index"],
            "ref_layer": rl["layer"],
            "ref_relative_depth": relative_depth(rl["layer_index"], ref.n_conv),
            "layer_index": ml["layer_index"],
            "layer": ml["layer"],
            "relative_depth": relative_depth(ml["layer_index"], net.n_conv),
            **{
                k: ml.get(k)
                for k in ("chain", "tap", "units", "size", "n_units_rarefied", "null_fe", "null_fe_rarefied")
            },
            "feature_entropy": ml["fe"],
        }
        for s in _STATS:
            for c in _CI:
                if c.format(s) != "fe":
                    row[c.format(s)] = ml.get(c.format(s))
        if net is not ref:
            for s in _STATS:
                a, b = ml["unit_values"][s], rl["unit_values"][s]
                if a is None or b is None:
                    continue
                d = difference_ci(a, b, level=level)
                row[f"delta_{s}"], row[f"delta_{s}_ci_low"], row[f"delta_{s}_ci_high"] = d.estimate, d.low, d.high
            row["cohens_d"] = cohens_d(ml["unit_values"]["fe"], rl["unit_values"]["fe"])
            if ml["unit_values"]["fe_rarefied"] is not None and rl["unit_values"]["fe_rarefied"] is not None:
                row["cohens_d_rarefied"] = cohens_d(ml["unit_values"]["fe_rarefied"], rl["unit_values"]["fe_rarefied"])
        rows.append(row)
    return rows


def _network_row(ref: _Net, net: _Net, alignment: list[int], cfg, permutations: int, log) -> dict:
    """Network-level FE of ``net`` over the reference's layers, and its difference from the reference."""
    from ..scores.compare import class_key, compare_networks, filter_match, permutation_applicable

    so = cfg.statistics
    ref_idx = [r["layer_index"] for r in ref.layers]
    rb, labels, ids, classes = _births(ref.result.results_h5, ref_idx)
    ob, labels_o, ids_o, classes_o = _births(net.result.results_h5, [net.layers[j]["layer_index"] for j in alignment])
    row = {"aligned_layers": " ".join(f"{a}:{net.layers[j]['layer_index']}" for a, j in zip(ref_idx, alignment))}
    match = filter_match(
        [ref.filters.get(i) for i in ref_idx], [net.filters.get(net.layers[j]["layer_index"]) for j in alignment]
    )
    row["unit_match"] = match
    if net is ref:
        perm = (False, "reference")
    elif ids != ids_o or classes != classes_o or not np.array_equal(labels, labels_o):
        perm = (False, "the two networks were scored on different images")
    else:
        perm = permutation_applicable(ref.layers, net.layers, alignment, match)
    same_images = net is ref or perm[1] != "the two networks were scored on different images"
    if not same_images:
        log(f"{net.name}: no network-level comparison: {perm[1]}")
        row["permutation"] = f"n/a: {perm[1]}"
        return row
    r = compare_networks(
        rb,
        ob,
        labels,
        class_ids=[class_key(c) for c in classes],
        k=so.rarefy_k,
        level=so.ci_level,
        n_resamples=so.resamples,
        n_permutations=permutations,
        seed=so.bootstrap_seed,
        permutation=perm,
    )
    for s, stat in enumerate(r.statistics):
        row[f"net_{stat}"] = float(r.other[s])
        row[f"net_{stat}_ci_low"], row[f"net_{stat}_ci_high"] = (float(x) for x in r.other_ci[s])
        if net is not ref:
            row[f"delta_net_{stat}"] = float(r.difference[s])
            row[f"delta_net_{stat}_ci_low"], row[f"delta_net_{stat}_ci_high"] = (float(x) for x in r.difference_ci[s])
            row[f"p_net_{stat}"] = float(r.p_value[s])
    row["permutation"] = "reference" if net is ref else r.permutation
    row["n_resamples"] = r.n_resamples
    row["n_permutations"] = r.n_permutations
    return row


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
    permutations: int = DEFAULT_PERMUTATIONS,
    summary: bool = False,
    **options,
) -> CompareResult:
    """Score every model on ``data`` with the same settings and compare each with the first.

    The settings are the options of :func:`onnx_fe.score` (``options``) or a :class:`~onnx_fe.config.ScoreConfig`
    (``config``) whose model, data and output are replaced for each model; its statistics options (CI level,
    resamples, bootstrap seed, rarefy k) also drive the comparison. ``permutations``: permutations of the
    network-level test (0: none). Writes ``compare_layers.csv``, ``compare_models.csv`` and (``plot=True``)
    ``compare.png`` under ``output`` (default ``onnx-fe-results/compare``), and each model's ``results.h5`` /
    ``scores.csv`` / ``layers.csv`` in ``output/<name>``. The output directory is locked for the run (``wait``: as
    for :func:`onnx_fe.score`). ``summary=True`` also writes ``networks.csv``: one row per network with its own
    network-level FE, rarefied FE and birth rate (mean over its scored layers; columns named by the method, the other
    method's left empty), mean activation and the generalisation baselines on the same images
    (:mod:`onnx_fe.experiments.generalization`; docs/preregistration_generalization.md defines them).
    """
    from ..config import ScoreConfig

    log = log or (lambda msg: None)
    models = [Path(m) for m in models]
    if not models:
        raise OnnxFeError("compare needs at least one model")
    if isinstance(permutations, bool) or int(permutations) != permutations or permutations < 0:
        raise OnnxFeError(f"--permutations {permutations!r}: expected a non-negative integer")
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
    out = Path(check_output(output)) if output is not None else Path("onnx-fe-results") / "compare"
    with output_lock(out, wait=wait, log=log):
        res, nets = _compare_into(
            out, names, models, data, config, accuracy, plot, log, progress, wait, int(permutations)
        )
        if summary:
            from .generalization import measures_of_models

            log(f"generalisation measures of {len(nets)} network(s)")
            measures = measures_of_models([n.path for n in nets], data, config)
            res.networks = [_summary_row(n, m, config) for n, m in zip(nets, measures)]
            res.networks_csv = out / "networks.csv"
            rows = [{k: _clean(v) for k, v in r.items()} for r in res.networks]
            write_rows_csv(res.networks_csv, NETWORKS_COLUMNS, rows)
        return res


def _layer_mean(values) -> float:
    """Mean over layers of the values that are finite (NaN when none is)."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _summary_row(net: _Net, m: dict, config) -> dict:
    """One row of networks.csv: the network's own network-level values and its generalisation baselines ``m``."""
    import warnings

    method = config.method.method
    row = {"model": net.name, "path": str(net.path), "method": method, "layers": len(net.layers)}
    for s in ("fe", "fe_rarefied", "birth_rate"):
        row[f"{s}_{method}"] = _layer_mean(r[s] for r in net.layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer whose units are all NaN
        row["mean_activation"] = _layer_mean(np.nanmean(r["unit_values"]["mean_activation"]) for r in net.layers)
    row.update({k: m[k] for k in NETWORKS_COLUMNS if k in m})
    return row


def _compare_into(out, names, models, data, config, accuracy, plot, log, progress, wait, permutations):
    from ..scores.compare import align_layers
    from .score import run

    nets = []
    for name, path in zip(names, models):
        log(f"scoring {name} ({path})")
        res = run(
            config.replace(model=str(path), data=str(data), output=str(out / name)),
            progress=progress,
            log=log,
            wait=wait,
        )
        if not res.layers:
            raise OnnxFeError(f"{name}: no layer was scored")
        nets.append(_load(name, path, res))
    ref = nets[0]
    level = config.statistics.ci_level
    layer_rows, model_rows = [], []
    for net in nets:
        alignment = align_layers(
            [r["layer_index"] for r in ref.layers], ref.n_conv, [r["layer_index"] for r in net.layers], net.n_conv
        )
        layer_rows += _layer_rows(ref, net, alignment, level)
        last = net.result.summary[-1]
        rec = {
            "model": net.name,
            "path": str(net.path),
            "layers": len(net.layers),
            "conv_layers": net.n_conv,
            "last_layer": f"{last['layer_index']} {last['layer']}",
            "last_feature_entropy": last["feature_entropy"],
            "last_birth_rate": last["birth_rate"],
            "top1": float("nan"),
            "top5": float("nan"),
            "loss": float("nan"),
            "n_images": "",
            "results": str(net.result.output),
        }
        rec.update(_network_row(ref, net, alignment, config, permutations, log))
        if accuracy:
            rec.update(_accuracy(net.path, data, config, log, net.name))
        model_rows.append(rec)
    out.mkdir(parents=True, exist_ok=True)
    layers_csv, models_csv = out / "compare_layers.csv", out / "compare_models.csv"
    write_rows_csv(layers_csv, LAYER_COLUMNS, [{k: _clean(v) for k, v in r.items()} for r in layer_rows])
    write_rows_csv(models_csv, MODEL_COLUMNS, [{k: _clean(v) for k, v in r.items()} for r in model_rows])
    png = None
    if plot:
        from ..report.plots import plot_compare

        own = [
            {
                "model": n.name,
                "layer_index": r["layer_index"],
                "feature_entropy": r["fe"],
                "birth_rate": r["birth_rate"],
            }
            for n in nets
            for r in n.layers
        ]
        png = plot_compare(own, out / "compare.png", title=f"{len(models)} models on {Path(data).name}")
    return CompareResult(out, layers_csv, models_csv, png, layer_rows, model_rows), nets


def _clean(v):
    """Python floats for the CSV (repr round-trips), -0.0 as 0.0."""
    if isinstance(v, (float, np.floating)):
        return float(v) + 0.0
    if isinstance(v, np.integer):
        return int(v)
    return v


def _accuracy(path, data, cfg, log, name) -> dict:
    from .ablate import class_mismatch, evaluate

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
    warning = class_mismatch(r["n_classes"], r.get("n_outputs"))
    if warning:
        rec["note"] = warning
        log(f"{name}: {rec['note']}")
    return rec
