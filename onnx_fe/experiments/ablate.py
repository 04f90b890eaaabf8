"""Cumulative ablation: zero a layer's units in ranked order and measure accuracy and loss.

The graph is rewritten, so any ONNX model works whatever framework made it:
``add_unit_masks`` inserts ``masked = Mul(tap, mask)`` right after a layer's tap
(the tensor its units are scored on) and rewires every consumer of the tap to
``masked``; ``mask`` is an extra graph input of shape (1, C, 1, 1). One
onnxruntime session then serves every step: a step costs one inference with a
new mask. The graph is also split at the tap: the part before it (``prefix``)
runs once per batch and only the part after it (``suffix``) runs once per mask.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError
from ..io.lock import default_output, output_lock
from ..io.paths import check_output
from ..io.tables import write_rows_csv
from ..model.graph import ConvUnit, LoadedModel
from ..model.masks import add_unit_masks, split_at
from ..model.runner import ORT_TO_NUMPY, Runner, make_runner, ort_message
from ..scores.ranking import Ranking, load_rankings

ORDERS = ("most_important_first", "least_important_first")


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Plan:
    prefix: Runner | None
    prefix_outputs: list[str]
    suffix: Runner
    suffix_inputs: list[str]
    image: str
    output: str
    mask: str | None = None
    mask_dtype: type = np.float32
    channels: int | None = None


def _plan(lm: LoadedModel, unit: ConvUnit | None, device: str, threads=None) -> _Plan:
    output = lm.model.graph.output[0].name
    if unit is None:
        r = make_runner(lm, [], device=device, threads=threads, keep_outputs=True)
        return _Plan(None, [], r, [lm.input_name], lm.input_name, output)
    masked, info = add_unit_masks(lm.model, [unit.tap])
    mask = info[unit.tap][0]
    try:
        prefix, pre_out, suffix, ext = split_at(masked, unit.tap, output, {lm.input_name, mask})
    except OnnxFeError:
        raise OnnxFeError(
            f"layer {unit.index} {unit.name} does not feed the model's first output {output!r}; "
            "removing its units cannot change the predictions"
        ) from None
    pr = (
        make_runner(dataclasses.replace(lm, model=prefix), [], device=device, threads=threads, keep_outputs=True)
        if prefix is not None
        else None
    )
    sr = make_runner(dataclasses.replace(lm, model=suffix), [], device=device, threads=threads, keep_outputs=True)
    types = {i.name: i.type for i in sr.session.get_inputs()}
    return _Plan(
        pr, pre_out, sr, ext, lm.input_name, output, mask, ORT_TO_NUMPY.get(types.get(mask), np.float32), unit.channels
    )


def check_labels(classes: list[str], width: int) -> None:
    """The data's class index k is taken as the model's output index k; refuse data where that cannot hold."""
    if len(classes) > width:
        raise OnnxFeError(
            f"labels do not match the model outputs: the data has {len(classes)} classes but the "
            f"model's first output has only {width} entries"
        )
    for k, name in enumerate(classes):
        s = str(name).strip()
        if s.lstrip("+-").isdigit() and int(s) != k:
            raise OnnxFeError(
                f"labels do not match the model outputs: class {name!r} has index {k} in the data "
                f"(classes are in sorted order), so its images would be scored against output {k}; "
                "class names that are integers must equal their output index"
            )


def class_mismatch(n_classes: int, width: int | None) -> str | None:
    """The warning (one line) when the data's classes and the model's outputs differ in number, else None."""
    if width is None or width == n_classes:
        return None
    return (
        f"warning: the data has {n_classes} classes but the model's first output has {width} entries; top-1 counts "
        "class k (in sorted order) as output k, which may not be what the model means"
    )


def _as_2d(out: np.ndarray, name: str, what: str = "cumulative ablation") -> np.ndarray:
    a = np.asarray(out)
    if a.ndim > 2 and all(d == 1 for d in a.shape[2:]):
        a = a.reshape(a.shape[0], a.shape[1])
    if a.ndim != 2:
        raise OnnxFeError(
            f"the model's first output {name!r} has shape {tuple(a.shape)}; {what} needs "
            "logits or probabilities of shape (N, n_classes)"
        )
    return a.astype(np.float64)


def _metrics(out: np.ndarray, y: np.ndarray, probabilities: bool):
    """(top-1 hits, top-5 hits, summed cross-entropy) of one batch."""
    if probabilities:
        logp = np.log(np.clip(out, 1e-12, None))
    else:
        mx = out.max(axis=1, keepdims=True)
        logp = out - mx - np.log(np.exp(out - mx).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    order = np.argsort(-out, axis=1, kind="stable")
    top1 = int((order[:, 0] == y).sum())
    top5 = int((order[:, :5] == y[:, None]).any(axis=1).sum())
    return top1, top5, float(-logp[rows, y].sum())


def _evaluate(
    plan: _Plan,
    ds,
    pre,
    input_dtype,
    masks: list | None,
    batch_size: int,
    progress=None,
    fixed_batch=None,
    info=None,
    what: str = "cumulative ablation",
):
    """Top-1, top-5 accuracy and mean cross-entropy over the dataset for each mask (None: the plain model).

    ``fixed_batch``: the model's fixed batch size; images then go through in batches of exactly that size (the last
    one padded with copies of its last image, whose outputs are dropped). ``info`` (a dict) receives the width of
    the model's first output."""
    configs = masks if masks is not None else [None]
    m = len(configs)
    top1, top5, loss = np.zeros(m), np.zeros(m), np.zeros(m)
    probabilities, width, n = None, None, len(ds)
    step = fixed_batch or batch_size
    for s in range(0, n, step):
        e = min(n, s + step)
        x = ds.load(s, e, pre, input_dtype)
        y = ds.labels[s:e]
        real = len(x)
        if fixed_batch and real < fixed_batch:
            x = np.concatenate([x, np.repeat(x[-1:], fixed_batch - real, axis=0)])
        try:
            feeds = {}
            if plan.prefix is not None:
                feeds = dict(zip(plan.prefix_outputs, plan.prefix.session.run(plan.prefix_outputs, {plan.image: x})))
            if plan.image in plan.suffix_inputs:
                feeds[plan.image] = x
            for j, mask in enumerate(configs):
                if mask is not None:
                    feeds[plan.mask] = np.asarray(mask, dtype=plan.mask_dtype).reshape(1, -1, 1, 1)
                out = _as_2d(plan.suffix.session.run([plan.output], feeds)[0], plan.output, what)[:real]
                if not np.isfinite(out).all():
                    bad = int((~np.isfinite(out)).any(axis=1).argmax())
                    removed = "" if mask is None else f" with {int(np.sum(np.asarray(mask) == 0))} units removed"
                    raise OnnxFeError(
                        f"the model's first output {plan.output!r} holds NaN or ±inf on image {ds.ids[s + bad]}"
                        f"{removed}; top-1 and loss cannot be measured"
                    )
                if width is None:
                    width = out.shape[1]
                    check_labels(ds.classes, width)
                    probabilities = bool(
                        (out >= 0).all() and (out <= 1).all() and np.allclose(out.sum(axis=1), 1, atol=1e-3)
                    )
                a, b, c = _metrics(out, y, probabilities)
                top1[j] += a
                top5[j] += b
                loss[j] += c
                if progress is not None:
                    progress(e - s)
        except OnnxFeError:
            raise
        except Exception as ex:
            raise OnnxFeError(f"inference failed on images {s}..{e - 1} ({ds.ids[s]}): {ort_message(ex)}") from None
    if info is not None:
        info["width"] = width
    top5 = top5 / n if width is not None and width > 5 else np.full(m, np.nan)
    return top1 / n, top5, loss / n, bool(probabilities)


# --------------------------------------------------------------------------- the ablation API


@dataclass
class AblationResult:
    output: Path
    csv: Path
    png: Path | None
    summary_csv: Path
    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    device: str = "cpu"

    def frame(self):
        import pandas as pd

        return pd.read_csv(self.csv)


def removal_counts(channels: int, steps: int | None) -> list[int]:
    """Numbers of removed units at which the model is evaluated: 0..C, or ``steps`` + 1 evenly spaced ones."""
    if steps is None or steps >= channels:
        return list(range(channels + 1))
    if steps < 1:
        raise OnnxFeError("--steps must be at least 1")
    return sorted({int(round(v)) for v in np.linspace(0, channels, steps + 1)})


def _select_layers(rankings: list[Ranking], layers) -> list[int]:
    avail = {}
    for r in rankings:
        for lr in r.layers:
            avail.setdefault(lr.layer_index, lr.layer)
    if not avail:
        raise OnnxFeError("the ranking holds no layer")
    if not layers:
        return [max(avail)]
    import fnmatch

    out = []
    for spec in layers:
        for item in [s.strip() for s in str(spec).split(",") if s.strip()]:
            if item.lstrip("-").isdigit():
                hits = [i for i in avail if i == int(item)]
            else:
                hits = [i for i, nm in avail.items() if nm == item] or [
                    i for i, nm in avail.items() if fnmatch.fnmatchcase(nm, item)
                ]
            if not hits:
                raise OnnxFeError(
                    f"--layer {item!r} matches no layer of the ranking (ranked layers: "
                    + ", ".join(f"{i} {nm}" for i, nm in sorted(avail.items()))
                    + ")"
                )
            out.extend(hits)
    return sorted(set(out))


def _first(ds):
    """The dataset's first sample only."""
    return dataclasses.replace(
        ds, labels=ds.labels[:1], ids=ds.ids[:1], _npz_index=ds._npz_index[:1] if ds._npz_index is not None else None
    )


def _auc(fractions, values) -> float:
    x, v = np.asarray(fractions, dtype=float), np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(v[0]) if len(v) else float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2) / (x[-1] - x[0]))


def ablate(
    model,
    data,
    ranking,
    output=None,
    *,
    layers=None,
    steps=None,
    by=None,
    seed=0,
    random_repeats=1,
    images_per_class=None,
    classes=None,
    input_size=None,
    layout="auto",
    color=None,
    scale=None,
    mean=None,
    std=None,
    batch_size=32,
    device="auto",
    plot=True,
    progress=False,
    log=None,
    wait=False,
) -> AblationResult:
    """Cumulative ablation of ranked units, most- and least-important-first, for each ranking.

    ``ranking``: a results directory / results.h5 (rankings are computed for ``by``, default feature_entropy and
    the baselines), a ranking CSV/JSON written by ``rank``, or Ranking objects. ``layers``: which ranked layers
    to ablate (index, name or glob; default: the last ranked layer), each on its own. ``steps``: evaluate after
    ``steps`` evenly spaced numbers of removed units (default: after every unit). Preprocessing defaults to the
    one stored with the ranking when it has one (input size included). Writes ``ablation.csv``,
    ``ablation_summary.csv`` and (``plot=True``, needs matplotlib) ``ablation.png`` under ``output`` (default:
    ``ablation/`` beside the ranking's results; ``ranking=None`` takes the results of ``score`` in the model's
    default output directory). The output directory is locked while it is written (``wait``: as for ``score``).
    """
    from .score import prepare

    log = log or (lambda msg: None)
    if batch_size < 1:
        raise OnnxFeError("--batch-size must be at least 1")
    if random_repeats < 1:
        raise OnnxFeError("--random-repeats must be at least 1")
    if plot:
        from ..report.plots import require_matplotlib

        require_matplotlib()
    if isinstance(ranking, Ranking):
        rankings = [ranking]
    elif isinstance(ranking, (list, tuple)) and ranking and all(isinstance(r, Ranking) for r in ranking):
        rankings = list(ranking)
    else:
        if ranking is None:
            ranking = default_output(model)
            if not (ranking / "results.h5").exists():
                raise OnnxFeError(
                    "--ranking is required: a ranking CSV/JSON from `onnx-fe rank` or a results directory (there "
                    f"are no results of `onnx-fe score` in the model's default output {ranking})"
                )
            log(f"using the rankings of the results in {ranking}")
        rankings = load_rankings(ranking, by=by, seed=seed, random_seeds=list(range(seed, seed + random_repeats)))
    if by and isinstance(ranking, (Ranking, list, tuple)):
        rankings = [r for r in rankings if r.by in set(by)]
    if not rankings:
        raise OnnxFeError("no ranking to ablate")
    chosen = _select_layers(rankings, layers)

    stored = next((r.preprocess for r in rankings if r.preprocess), None) or {}
    asked_size = input_size
    if stored:
        if scale is None and mean is None and std is None and color is None and input_size is None and layout == "auto":
            log("using the preprocessing stored with the ranking: " + json.dumps(stored))
        scale = stored.get("scale") if scale is None else scale
        mean = tuple(stored["mean"]) if mean is None and stored.get("mean") is not None else mean
        std = tuple(stored["std"]) if std is None and stored.get("std") is not None else std
        color = stored.get("color") if color is None else color
        layout = stored.get("layout", "auto") if layout == "auto" else layout
        if input_size is None and stored.get("height") and stored.get("width"):
            input_size = (int(stored["height"]), int(stored["width"]))  # a dynamic-size model needs it
    lm, ds, pre, _, runner, _ = prepare(
        model,
        data,
        input_size=input_size,
        layout=layout,
        color=color,
        scale=scale,
        mean=mean,
        std=std,
        images_per_class=images_per_class,
        classes=classes,
        seed=0,
        device=device,
    )
    if (
        asked_size is not None
        and stored.get("height")
        and ds.kind != "npz"
        and (pre.height, pre.width) != (stored["height"], stored["width"])
    ):
        log(
            f"note: the ranking was scored at {stored['height']}x{stored['width']}, ablating at {pre.height}x{pre.width}"
        )
    sha = {r.model_sha256 for r in rankings if r.model_sha256}
    if sha and lm.sha256 not in sha:
        log(f"warning: the ranking was computed on another model file (SHA-256 differs from {lm.path.name})")

    if output is not None:
        out = Path(check_output(output))
    elif isinstance(ranking, (str, Path)):  # beside the results the ranking came from
        rp = Path(ranking)
        out = (rp if rp.is_dir() else rp.parent) / "ablation"
    else:
        out = default_output(lm.path) / "ablation"
    with output_lock(out, wait=wait, log=log):
        return _ablate_into(
            out, lm, ds, pre, runner, rankings, chosen, steps, batch_size, device, plot, progress, log, data
        )


def _ablate_into(out, lm, ds, pre, runner, rankings, chosen, steps, batch_size, device, plot, progress, log, data):
    """The ablation itself, into the locked output directory ``out``."""
    units = {u.index: u for u in lm.units}
    # check every chosen layer of every ranking against the model before any work
    for idx in chosen:
        u = units.get(idx)
        for r in rankings:
            try:
                lr = r.layer(idx)
            except KeyError:
                raise OnnxFeError(f"the {r.by} ranking has no layer {idx}") from None
            if u is None or u.name != lr.layer:
                have = f"{u.index} {u.name!r}" if u else "none"
                raise OnnxFeError(
                    f"ranking layer {idx} {lr.layer!r} does not match the model's Conv layer {idx} "
                    f"({have}); was the ranking made for {lm.path.name}?"
                )
            if u.channels != lr.channels:
                raise OnnxFeError(
                    f"ranking layer {idx} {lr.layer!r} has {lr.channels} units but the model's layer has {u.channels}"
                )

    # every session first, then one image through the first one: the label check fails before any long work
    plans = {idx: _plan(lm, units[idx], device) for idx in chosen}
    counts_by_layer = {idx: removal_counts(units[idx].channels, steps) for idx in chosen}
    first: dict = {}
    _evaluate(
        plans[chosen[0]],
        _first(ds),
        pre,
        runner.input_dtype,
        [np.ones(units[chosen[0]].channels)],
        1,
        fixed_batch=lm.fixed_batch,
        info=first,
    )
    warning = class_mismatch(len(ds.classes), first.get("width"))
    if warning:
        log(warning)

    rows: list[dict] = []
    baseline = {}
    bar_ctx = _progress_bar(progress)
    with bar_ctx as bar:
        for idx in chosen:
            u = units[idx]
            c = u.channels
            counts = counts_by_layer[idx]
            configs, keys = [np.ones(c)], {np.ones(c, dtype=bool).tobytes(): 0}
            curves = []  # (by, seed, order name, [(removed, config index)])
            for r in rankings:
                lr = r.layer(idx)
                for oname in ORDERS:
                    seq = lr.order if oname == ORDERS[0] else lr.order[::-1]
                    pts = []
                    for k in counts:
                        mk = np.ones(c, dtype=bool)
                        mk[seq[:k]] = False
                        key = mk.tobytes()
                        if key not in keys:
                            keys[key] = len(configs)
                            configs.append(mk.astype(np.float64))
                        pts.append((k, keys[key]))
                    curves.append((r.by, r.seed, oname, pts))
            plan = plans[idx]
            task = None
            if bar is not None:
                task = bar.add_task(f"layer {idx} {u.name}: {len(configs)} masks", total=len(ds) * len(configs))
            t1, t5, loss, probs = _evaluate(
                plan,
                ds,
                pre,
                runner.input_dtype,
                configs,
                batch_size,
                (lambda k, t=task: bar.advance(t, k)) if bar is not None else None,
                fixed_batch=lm.fixed_batch,
            )
            baseline = {
                "top1": float(t1[0]),
                "top5": float(t5[0]),
                "loss": float(loss[0]),
                "n_images": len(ds),
                "output": "probabilities" if probs else "logits",
            }
            log(
                f"layer {idx} {u.name}: {len(configs)} distinct masks; unablated top-1 {t1[0]:.4f}, "
                f"first output read as {baseline['output']}"
            )
            for b, s, oname, pts in curves:
                for k, j in pts:
                    rows.append(
                        {
                            "layer": u.name,
                            "layer_index": idx,
                            "units": c,
                            "by": b,
                            "seed": "" if s is None else s,
                            "order": oname,
                            "removed": k,
                            "fraction_removed": k / c,
                            "top1": float(t1[j]),
                            "top5": float(t5[j]),
                            "loss": float(loss[j]),
                            "n_images": len(ds),
                        }
                    )
    for idx in chosen:  # said after the work, so that an error stays the only line
        for r in rankings:
            lr = r.layer(idx)
            if lr.n_tied:
                log(
                    f"note: layer {idx} {lr.layer}, {r.by}{f' (seed {r.seed})' if r.by == 'random' else ''}: "
                    f"{lr.n_tied} of {lr.channels} units tie with another unit and are ordered by unit index"
                )
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "ablation.csv"
    cols = [
        "layer",
        "layer_index",
        "units",
        "by",
        "seed",
        "order",
        "removed",
        "fraction_removed",
        "top1",
        "top5",
        "loss",
        "n_images",
    ]
    write_rows_csv(csv_path, cols, rows)
    summary = summarize(rows)
    summary_path = out / "ablation_summary.csv"
    write_rows_csv(summary_path, list(summary[0].keys()) if summary else ["layer"], summary)
    png = None
    if plot:
        from ..report.plots import plot_ablation

        where = "/".join(Path(data).parts[-2:])
        png = plot_ablation(
            rows, out / "ablation.png", title=f"cumulative ablation: {lm.path.name} on {where} ({len(ds)} images)"
        )
    return AblationResult(
        output=out,
        csv=csv_path,
        png=png,
        summary_csv=summary_path,
        rows=rows,
        summary=summary,
        baseline=baseline,
        device=plans[chosen[0]].suffix.device,
    )


def summarize(rows: list[dict]) -> list[dict]:
    """Per layer × indicator: normalised area under the top-1 curve for both orders (random: mean over seeds)."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["layer_index"], r["layer"], r["by"])
        groups.setdefault(key, {}).setdefault((r["seed"], r["order"]), []).append(r)
    out = []
    for (idx, name, b), curves in groups.items():
        rec = {"layer": name, "layer_index": idx, "by": b}
        for oname, short in zip(ORDERS, ("most_first", "least_first")):
            aucs, halves, losses = [], [], []
            for (_s, o), pts in curves.items():
                if o != oname:
                    continue
                pts = sorted(pts, key=lambda p: p["removed"])
                aucs.append(_auc([p["fraction_removed"] for p in pts], [p["top1"] for p in pts]))
                losses.append(_auc([p["fraction_removed"] for p in pts], [p["loss"] for p in pts]))
                half = min(pts, key=lambda p: (abs(p["fraction_removed"] - 0.5), p["removed"]))
                halves.append(half["top1"])
            rec[f"auc_top1_{short}"] = float(np.mean(aucs))
            rec[f"top1_half_removed_{short}"] = float(np.mean(halves))
            rec[f"auc_loss_{short}"] = float(np.mean(losses))
        rec["auc_gap"] = rec["auc_top1_least_first"] - rec["auc_top1_most_first"]
        rec["repeats"] = len({s for s, _ in curves})
        out.append(rec)
    return out


def _progress_bar(enabled: bool):
    from .score import _progress

    return _progress(enabled)


def evaluate(
    model,
    data,
    *,
    images_per_class=None,
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
) -> dict:
    """Top-1 / top-5 accuracy and mean cross-entropy of the unmodified model (labels must match its outputs)."""
    from .score import prepare

    lm, ds, pre, _, runner, _ = prepare(
        model,
        data,
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
    plan = _plan(lm, None, device)
    info: dict = {}
    t1, t5, loss, probs = _evaluate(
        plan, ds, pre, runner.input_dtype, None, batch_size, fixed_batch=lm.fixed_batch, info=info, what="an accuracy"
    )
    return {
        "top1": float(t1[0]),
        "top5": float(t5[0]),
        "loss": float(loss[0]),
        "n_images": len(ds),
        "output": "probabilities" if probs else "logits",
        "n_outputs": info.get("width"),
        "n_classes": len(ds.classes),
    }
