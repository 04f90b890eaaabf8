"""Structural pruning of an ONNX model: choose channels (by unit, or by a ranking), remove them with everything
that depends on them (``model/prune.py``), check, measure and write the smaller model.

``prune(model, output, units=...)`` removes exactly the named units and the channels coupled to them;
``ranking=..., ratio=F`` removes, in every prunable group of coupled layers, the fraction F of its channels that
the ranking puts last; ``ranking=..., global_ratio=F`` removes the lowest-ranked channels across all groups, by one
threshold on the within-layer rank, until the model's MACs have dropped by the fraction F.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxFeError, OptionError
from ..io.lock import os_reason
from ..io.paths import check_output, make_parent, refuse_input
from ..io.tables import write_rows_csv
from ..model.graph import LoadedModel, load_model, select_units
from ..model.prune import Group, PruneGraph, cost

CSV_COLUMNS = ["layer", "layer_index", "unit", "group"]


@dataclass
class PruneResult:
    output: Path
    csv: Path
    removed: dict[int, list[int]]  # layer index -> removed units (coupled ones included)
    groups: list[Group]
    pruned_groups: list[int]
    params: tuple[int, int]  # before, after
    macs: tuple[int | None, int | None]
    bytes: tuple[int, int]
    latency_ms: tuple[float | None, float | None] = (None, None)
    external_data: str | None = None
    folds: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)
    max_diff: float | None = None  # --verify: largest |pruned - masked| over the model outputs
    max_output: float | None = None  # --verify: largest |masked| (the scale of the difference)
    verify_inputs: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def lines(self) -> list[str]:
        def pct(a, b):
            return f" ({100 * (b - a) / a:+.1f} %)" if a else ""

        p0, p1 = self.params
        out = [f"removed {self.n_removed} channels from {len(self.removed)} layers in {len(self.pruned_groups)} groups"]
        out.append(f"parameters: {p0:,} -> {p1:,}{pct(p0, p1)}")
        m0, m1 = self.macs
        if m0 is not None and m1 is not None:
            out.append(f"MACs per image: {m0:,} -> {m1:,}{pct(m0, m1)}")
        b0, b1 = self.bytes
        out.append(f"file size: {b0:,} -> {b1:,} bytes{pct(b0, b1)}")
        l0, l1 = self.latency_ms
        if l0 is not None and l1 is not None:
            out.append(f"onnxruntime latency (CPU, batch 1, median): {l0:.3f} ms -> {l1:.3f} ms{pct(l0, l1)}")
        out += [f"note: {s}" for s in self.notes]
        out += [f"folded: {s}" for s in self.folds]
        out += [f"differs from masking: {s}" for s in self.inexact]
        if self.max_diff is not None:
            out.append(
                f"verify ({self.verify_inputs}): largest |pruned - masked original| = {self.max_diff:.3g}"
                f" (outputs up to {self.max_output:.3g})"
            )
        return out


# --------------------------------------------------------------------------- choosing channels


def parse_units(units) -> list[tuple[int, int]]:
    """``"3:0,3:5,7:1"`` (or a list of such strings or of (layer, unit) pairs) -> [(3, 0), (3, 5), (7, 1)]."""
    items = []
    if isinstance(units, str):
        units = [units]
    for u in units:
        if isinstance(u, (tuple, list)) and len(u) == 2:
            items.append(f"{u[0]}:{u[1]}")
        else:
            items.extend(s.strip() for s in str(u).split(",") if s.strip())
    out = []
    for it in items:
        a, sep, b = it.partition(":")
        if not sep or not a.strip().lstrip("-").isdigit() or not b.strip().lstrip("-").isdigit():
            raise OptionError(f"--units {it!r}: expected LAYER_INDEX:UNIT, e.g. 3:0,3:5")
        out.append((int(a), int(b)))
    if not out:
        raise OptionError("--units is empty; give LAYER_INDEX:UNIT,...")
    return out


def _unit_roots(pg: PruneGraph, pairs) -> list[int]:
    roots = []
    for li, u in pairs:
        if li not in pg.layer_roots:
            n = len(pg.units)
            raise OnnxFeError(
                f"--units {li}:{u}: the model has no layer {li} (layers 0..{n - 1}; see `onnx-fe inspect`)"
            )
        c = len(pg.layer_roots[li])
        if not 0 <= u < c:
            raise OnnxFeError(f"--units {li}:{u}: layer {li} has {c} units (0..{c - 1})")
        r = int(pg.layer_roots[li][u])
        g = pg.group(li)
        if not g.prunable:
            raise OnnxFeError(f"--units {li}:{u}: layer {li} cannot be pruned: {g.reason}")
        roots.append(r)
    return list(dict.fromkeys(roots))


def _ranking(ranking, by, lm: LoadedModel):
    from ..scores.ranking import Ranking, load_rankings

    if isinstance(ranking, Ranking):
        rankings = [ranking]
    else:
        p = Path(ranking)
        if p.is_dir() or p.suffix.lower() in (".h5", ".hdf5"):
            raise OnnxFeError(
                f"--ranking {p}: give the ranking file that `onnx-fe rank` writes (RANKING.csv or .json), "
                "not a results directory"
            )
        rankings = load_rankings(p, by=[by] if by else None)
    if len(rankings) > 1:
        raise OnnxFeError(
            f"the ranking holds {len(rankings)} indicators ({', '.join(r.by for r in rankings)}); choose one with --by"
        )
    r = rankings[0]
    by_index = {u.index: u for u in lm.units}
    for lr in r.layers:
        u = by_index.get(lr.layer_index)
        if u is None:
            raise OnnxFeError(f"ranking layer {lr.layer_index} {lr.layer!r}: the model has no layer {lr.layer_index}")
        if lr.layer != u.name:
            raise OnnxFeError(
                f"ranking layer {lr.layer_index} is {lr.layer!r} but the model's layer {lr.layer_index} is {u.name!r}: "
                "the ranking was made for another model"
            )
    return r


def _class_scores(pg: PruneGraph, r, allowed_layers: set[int] | None) -> dict[int, float]:
    """Importance of each ranked class: the mean over its ranked units of rank / (C - 1) (0 = most important,
    1 = least)."""
    acc: dict[int, list[float]] = {}
    for lr in r.layers:
        li = lr.layer_index
        if li not in pg.layer_roots or (allowed_layers is not None and li not in allowed_layers):
            continue
        roots = pg.layer_roots[li]
        if len(roots) != lr.channels:
            raise OnnxFeError(
                f"ranking layer {li} {lr.layer!r} has {lr.channels} units but the model's layer has {len(roots)}"
            )
        rank = lr.rank
        denom = max(lr.channels - 1, 1)
        for u in range(lr.channels):
            acc.setdefault(int(roots[u]), []).append(rank[u] / denom)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _eligible(pg: PruneGraph, scores: dict[int, float], allowed_layers) -> list[Group]:
    out = []
    for g in pg.groups:
        if not g.prunable or len(g.classes) < 2:
            continue
        if allowed_layers is not None and not set(g.layers) & allowed_layers:
            continue
        if not any(c in scores for c in g.classes):
            continue
        out.append(g)
    return out


def _order(g: Group, scores: dict[int, float]) -> list[int]:
    """The group's ranked classes, least important first (ties: in the order of the group's first layer)."""
    ranked = [(k, c) for k, c in enumerate(g.classes) if c in scores]
    ranked.sort(key=lambda kc: (-scores[kc[1]], kc[0]))
    return [c for _, c in ranked]


def _step(pg: PruneGraph, g: Group, round_to: int | None) -> int:
    """The number of classes by which the group's kept count must move so that every layer of the group keeps a
    multiple of ``round_to`` channels (a class is one channel of the group's first layer; a depthwise conv with
    multiplier m, or the producer of a grouped conv's input, has m or G channels per class)."""
    if not round_to or round_to <= 1:
        return 1
    step = 1
    for li in g.layers:
        per = len(pg.layer_roots[li]) // max(len(g.classes), 1)
        step = math.lcm(step, round_to // math.gcd(round_to, max(per, 1)))
    return step


def _rounded(n_remove: int, n: int, step: int) -> int:
    """``n_remove`` of ``n`` classes, lowered so that the kept count is a multiple of ``step`` (as Torch-Pruning's
    round_to: the kept count is rounded up, never removing more than asked); 0 when no multiple lies below n."""
    if step <= 1 or n_remove <= 0:
        return max(n_remove, 0)
    keep = -(-(n - n_remove) // step) * step
    return max(n - keep, 0)


def choose_by_ratio(pg: PruneGraph, r, ratio: float, allowed_layers=None, round_to: int | None = None) -> list[int]:
    scores = _class_scores(pg, r, allowed_layers)
    removed = []
    floors = pg.floors()  # every layer, Split part, Slice and Gather keeps a channel
    for g in _eligible(pg, scores, allowed_layers):
        n = min(int(round(ratio * len(g.classes))), len(g.classes) - 1)
        n = _rounded(n, len(g.classes), _step(pg, g, round_to))
        removed.extend(floors.pick(_order(g, scores), n))
    return removed


class _MacModel:
    """MACs of the convs and dense layers as a function of the removed classes (fast, for the global budget)."""

    def __init__(self, pg: PruneGraph):
        self.pg = pg
        self.terms = []
        shapes = pg.shapes
        for e in pg.edits:
            if e.kind == "conv":
                out = shapes.get(e.node.output[0])
                w = pg.const_shape(e.node.input[1])
                if out is None or w is None or any(d is None for d in out[2:]):
                    continue
                per = int(np.prod(out[2:])) * int(np.prod(w[2:]))
                xin = e.extra["input"]
                rin = pg.uf.roots(pg.labels[xin].ids) if xin in pg.labels else None
                self.terms.append(
                    ("conv", per, pg.uf.roots(pg.labels[e.tensor].ids), rin, e.extra["kind"], e.extra["group"], w)
                )
            elif e.kind in ("gemm", "matmul"):
                w = pg.const_shape(e.node.input[1])
                m = w[0] if e.axis else w[1]
                self.terms.append(("dense", int(m), pg.uf.roots(pg.labels[e.tensor].ids)))

    def macs(self, removed: np.ndarray) -> int:
        total = 0
        for t in self.terms:
            if t[0] == "conv":
                _, per, rout, rin, kind, g, w = t
                cout = int((~np.isin(rout, removed)).sum())
                if kind == "depthwise":
                    total += per * cout
                else:
                    cin = int((~np.isin(rin, removed)).sum()) if rin is not None else w[1] * g
                    total += per * cout * (cin // g)
            else:
                _, m, rows = t
                total += m * int((~np.isin(rows, removed)).sum())
        return total


def choose_global(
    pg: PruneGraph, r, fraction: float, allowed_layers=None, round_to: int | None = None
) -> tuple[list[int], int, int]:
    """The lowest-ranked classes across every eligible group (one threshold on the normalised rank), fewest first,
    until the convs' and dense layers' MACs drop by ``fraction``; every group keeps at least one channel (with
    ``round_to``: a multiple of it, each group's count from the threshold rounded as in ``choose_by_ratio``).
    Returns (classes, MACs before, MACs after) of the counted layers."""
    scores = _class_scores(pg, r, allowed_layers)
    groups = _eligible(pg, scores, allowed_layers)
    cand = []
    orders, steps = {}, {}
    for g in groups:
        orders[g.id] = pg.floors().pick(_order(g, scores), len(g.classes) - 1)
        steps[g.id] = (_step(pg, g, round_to), len(g.classes))
        for k, c in enumerate(orders[g.id]):
            cand.append((-scores[c], g.id, k, c))
    cand.sort()
    order = [(gid, c) for _, gid, _, c in cand]

    def take(prefix: int) -> list[int]:
        # a prefix of the global order is a prefix of every group's order; round each group's count
        counts: dict[int, int] = {}
        for gid, _ in order[:prefix]:
            counts[gid] = counts.get(gid, 0) + 1
        out = []
        for gid, k in counts.items():
            step, n = steps[gid]
            out.extend(orders[gid][: _rounded(k, n, step)])
        floors = pg.floors()  # a Split part, Slice or Gather that spans groups keeps a channel too
        return sorted(floors.pick(out, len(out)))

    mm = _MacModel(pg)
    m0 = mm.macs(np.zeros(0, dtype=np.int64))
    target = (1 - fraction) * m0
    lo, hi = 0, len(order)
    while lo < hi:  # the shortest prefix that meets the budget (MACs fall as the prefix grows)
        mid = (lo + hi) // 2
        if mm.macs(np.asarray(take(mid), dtype=np.int64)) <= target:
            hi = mid
        else:
            lo = mid + 1
    chosen = take(lo)
    return chosen, m0, mm.macs(np.asarray(chosen, dtype=np.int64))


# --------------------------------------------------------------------------- files and measurements


def _side_files(model: onnx.ModelProto, base: Path) -> list[Path]:
    from ..model.randomize import _side_files as side

    return side(model, base)


def _size(path: Path, model: onnx.ModelProto) -> int:
    return path.stat().st_size + sum(f.stat().st_size for f in _side_files(model, path.parent) if f.exists())


def _save(pm: onnx.ModelProto, output: Path, external: bool) -> str | None:
    """Write the pruned model (and its weights file) into a temporary folder beside ``output``, then move them into
    place: an interrupted write leaves no half file under the output's name."""
    make_parent(output)
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-fe-prune-", dir=output.parent))
    try:
        location = output.name + ".data"
        if external:
            # the float weights go to the side file (shape constants stay inline: onnxruntime reads those inline)
            from onnx.external_data_helper import set_external_data

            pm, model = onnx.ModelProto(), pm
            pm.CopyFrom(model)  # saving moves the values out of the protobuf: keep the caller's intact

            floats = {
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.DOUBLE,
                onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16,
            }
            for t in pm.graph.initializer:
                if t.data_type in floats and t.HasField("raw_data") and len(t.raw_data):
                    set_external_data(t, location)
            onnx.save_model(pm, str(tmp / output.name))
            # onnx writes the weights file readable by its owner only (0600); give it the model file's mode (umask)
            os.chmod(tmp / location, stat.S_IMODE((tmp / output.name).stat().st_mode))
            os.replace(tmp / location, output.parent / location)
        else:
            onnx.save_model(pm, str(tmp / output.name))
        os.replace(tmp / output.name, output)
    except OSError as e:
        raise OnnxFeError(f"cannot write {output}: {os_reason(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(output.parent / location) if external else None


def _session(path_or_model, threads: int):
    from ..model.runner import import_onnxruntime

    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _latency(paths: list[str], x: np.ndarray, runs: int, threads: int) -> list[float]:
    """Median milliseconds of one run of each model; the models take turns, run by run, so that a change in the
    machine's load falls on both alike."""
    sessions = [_session(p, threads) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names):
        for _ in range(2):
            s.run(None, {n: x})
    times = [[] for _ in paths]
    for _ in range(runs):
        for k, (s, n) in enumerate(zip(sessions, names)):
            t = time.perf_counter()
            s.run(None, {n: x})
            times[k].append(1000 * (time.perf_counter() - t))
    return [float(statistics.median(t)) for t in times]


def _input_dims(lm: LoadedModel, hw) -> list[int]:
    dims = list(lm.input_shape)
    nhwc = dims[1] not in (1, 3, 4) and dims[3] in (1, 3, 4)
    hw_axes = (1, 2) if nhwc else (2, 3)
    if hw is not None:
        dims[hw_axes[0]], dims[hw_axes[1]] = hw
    if any(d is None for i, d in enumerate(dims) if i > 0):
        return None
    return [1] + [int(d) for d in dims[1:]]


def _verify(lm, pg, pm, rep, inputs: np.ndarray, threads: int) -> tuple[float, float]:
    """Largest difference between the pruned model and the original with the removed units masked at their taps."""
    from ..model.masks import add_unit_masks
    from ..model.runner import ORT_TO_NUMPY

    taps = {}
    for u in lm.units:
        if u.index in rep.removed:
            taps.setdefault(u.tap, []).append(u)
    masked, info = add_unit_masks(lm.model, list(taps))
    a = _session(masked, threads)
    b = _session(pm, threads)
    types = {i.name: ORT_TO_NUMPY.get(i.type, np.float32) for i in a.get_inputs()}
    feeds_mask = {}
    for tap, (mask, _) in info.items():
        c = len(pg.labels[tap].ids)
        m = np.ones((1, c, 1, 1), dtype=types.get(mask, np.float32))
        for u in taps[tap]:
            m[0, rep.removed[u.index]] = 0
        feeds_mask[mask] = m
    outs = [o.name for o in lm.model.graph.output]
    diff, scale = 0.0, 0.0
    step = lm.fixed_batch or 8
    for s in range(0, len(inputs), step):
        x = inputs[s : s + step]
        if lm.fixed_batch and len(x) < lm.fixed_batch:
            x = np.concatenate([x, np.repeat(x[-1:], lm.fixed_batch - len(x), axis=0)])
        ra = a.run(outs, {lm.input_name: x, **feeds_mask})
        rb = b.run(outs, {lm.input_name: x})
        for p, q in zip(ra, rb):
            p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
            diff = max(diff, float(np.max(np.abs(p - q))) if p.size else 0.0)
            scale = max(scale, float(np.max(np.abs(p))) if p.size else 0.0)
    return diff, scale


# --------------------------------------------------------------------------- the API


def prune(
    model,
    output,
    *,
    units=None,
    ranking=None,
    ratio=None,
    global_ratio=None,
    layers=None,
    by=None,
    round_to=None,
    verify=False,
    data=None,
    input_size=None,
    layout="auto",
    color=None,
    scale=None,
    mean=None,
    std=None,
    images_per_class=None,
    verify_samples=8,
    latency_runs=10,
    threads=1,
    seed=0,
    log=None,
) -> PruneResult:
    """Remove conv output channels and everything that depends on them; write ``output`` (.onnx) and
    ``output`` with .csv (every removed channel: layer, layer_index, unit, group).

    Choose the channels with ``units`` (``"3:0,3:5"``: layer index:unit, canonical indices as ``onnx-fe inspect``
    lists them; coupled channels go with them), or with a ``ranking`` file written by ``onnx-fe rank`` and
    ``ratio`` (that fraction of each prunable group's channels, the lowest-ranked first) or ``global_ratio``
    (the lowest-ranked channels across all groups until the MACs drop by that fraction). ``layers`` restricts the
    ranking-based choice to the groups of those layers. ``round_to`` (with ``ratio`` or ``global_ratio``) keeps every
    pruned layer's channel count a multiple of it, removing fewer channels where needed. ``verify`` runs the original with the removed units masked
    at their taps side by side with the pruned model on ``data`` (an image folder or .npz, preprocessed as for
    ``score``) or, without data, on ``verify_samples`` standard-normal inputs, and reports the largest output
    difference. The input model is never written to.
    """
    log = log or (lambda msg: None)
    path = Path(model)
    output = Path(check_output(output))
    if not path.exists():
        raise OnnxFeError(f"model not found: {path}")
    if path.is_dir():
        raise OnnxFeError(f"model path is a directory, expected an .onnx file: {path}")
    if output.is_dir():
        raise OnnxFeError(f"output is a directory, expected an .onnx file path: {output}")
    if output.suffix.lower() != ".onnx":
        raise OnnxFeError(f"output {output} should end in .onnx (the list of removed channels goes beside it, .csv)")
    csv_path = output.with_suffix(".csv")
    skeleton_side = _side_files(onnx.load(str(path), load_external_data=False), path.parent) if path.is_file() else []
    for out in (output, csv_path, output.parent / (output.name + ".data")):
        refuse_input(out, path, *skeleton_side, what="output")
    if data is not None:
        refuse_input(csv_path, data, what="output")

    modes = [units is not None, ratio is not None, global_ratio is not None]
    if sum(modes) != 1:
        raise OptionError("choose what to remove: --units, or --ranking with --ratio or --global-ratio (one of them)")
    if units is not None and (ranking is not None or layers is not None):
        raise OptionError("--units names the channels itself; --ranking and --layers go with --ratio/--global-ratio")
    if units is None and ranking is None:
        raise OptionError("--ratio and --global-ratio need --ranking (a ranking file written by `onnx-fe rank`)")
    if round_to is not None:
        if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
            raise OptionError(f"--round-to must be a positive whole number of channels, got {round_to!r}")
        if units is not None:
            raise OptionError("--round-to goes with --ratio or --global-ratio; --units names the channels itself")
        round_to = int(round_to)
    for name, v in (("--ratio", ratio), ("--global-ratio", global_ratio)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1):
            raise OptionError(f"{name} must be a fraction between 0 and 1 (exclusive), got {v!r}")
    if verify_samples < 1 or latency_runs < 0 or threads < 1:
        raise OptionError("verify_samples and threads must be at least 1, latency_runs at least 0")

    from ..data.preprocess import parse_size

    hw = parse_size(input_size) if isinstance(input_size, str) else (tuple(input_size) if input_size else None)
    lm = load_model(path)
    if not lm.units:
        raise OnnxFeError(f"{path.name} has no Conv node: nothing to prune")
    dims = _input_dims(lm, hw)
    if dims is None:
        raise OnnxFeError(
            f"{path.name} has a dynamic image size; give --input-size HxW (for the MACs, the latency and --verify)"
        )
    pg = PruneGraph(lm.model, lm.units, hw)

    allowed = None
    if layers is not None:
        allowed = {u.index for u in select_units(lm.units, layers if not isinstance(layers, str) else [layers])}
    notes = []
    if units is not None:
        roots = _unit_roots(pg, parse_units(units))
    else:
        r = _ranking(ranking, by, lm)
        if ratio is not None:
            roots = choose_by_ratio(pg, r, float(ratio), allowed, round_to)
        else:
            roots, m0, m1 = choose_global(pg, r, float(global_ratio), allowed, round_to)
            if m0 and (m0 - m1) / m0 < float(global_ratio) - 1e-9:
                notes.append(
                    f"the ranked, prunable layers allow a MAC drop of {100 * (m0 - m1) / m0:.1f} % only "
                    f"(asked {100 * float(global_ratio):.1f} %)"
                )
        unranked = [
            g for g in pg.groups if g.prunable and not any(li in {x.layer_index for x in r.layers} for li in g.layers)
        ]
        if unranked:
            notes.append(
                f"{len(unranked)} prunable group(s) have no ranked layer and were left whole: "
                + ", ".join(str(g.id) for g in unranked[:8])
                + (" …" if len(unranked) > 8 else "")
            )
        if not roots:
            raise OnnxFeError(
                "the ranking and ratio choose no channel to remove (too small a ratio"
                + (f" for --round-to {round_to}" if round_to and round_to > 1 else "")
                + ", or nothing prunable)"
            )
    pm, rep = pg.apply(roots)

    onnx.checker.check_model(pm, full_check=True)
    onnx.shape_inference.infer_shapes(pm, strict_mode=True)

    external = bool(skeleton_side) or pm.ByteSize() > 2**31 - 1024**2
    ext_file = _save(pm, output, external)
    rows = []
    name_of = {u.index: u.name for u in lm.units}
    for li in sorted(rep.removed):
        g = pg.group(li).id
        for u in rep.removed[li]:
            rows.append({"layer": name_of[li], "layer_index": li, "unit": u, "group": g})
    write_rows_csv(csv_path, CSV_COLUMNS, rows)
    pruned_groups = sorted({pg.group(li).id for li in rep.removed})

    p0, m0 = cost(lm.model, hw)
    p1, m1 = cost(pm, hw)
    skeleton = onnx.load(str(path), load_external_data=False)
    res = PruneResult(
        output=output,
        csv=csv_path,
        removed=rep.removed,
        groups=pg.groups,
        pruned_groups=pruned_groups,
        params=(p0, p1),
        macs=(m0, m1),
        bytes=(_size(path, skeleton), _size(output, onnx.load(str(output), load_external_data=False))),
        external_data=ext_file,
        folds=rep.folds,
        inexact=rep.inexact,
        notes=notes,
    )
    from ..model.runner import ORT_TO_NUMPY

    s0 = _session(str(path), threads)
    in_dtype = ORT_TO_NUMPY.get(s0.get_inputs()[0].type, np.float32)
    del s0
    batch = lm.fixed_batch or 1
    x1 = np.random.default_rng(seed).standard_normal([batch] + dims[1:]).astype(in_dtype)
    if latency_runs:
        res.latency_ms = tuple(_latency([str(path), str(output)], x1, latency_runs, threads))
    if verify:
        if data is not None:
            from .score import prepare

            _, ds, pre, _, _, _ = prepare(
                path,
                data,
                input_size=input_size,
                layout=layout,
                color=color,
                scale=scale,
                mean=mean,
                std=std,
                images_per_class=images_per_class,
                device="cpu",
            )
            xs = ds.load(0, len(ds), pre, in_dtype)
            res.verify_inputs = f"{len(xs)} images of {data}"
        else:
            xs = np.random.default_rng(seed).standard_normal([verify_samples] + dims[1:]).astype(in_dtype)
            res.verify_inputs = f"{verify_samples} standard-normal inputs"
        res.max_diff, res.max_output = _verify(lm, pg, pm, rep, xs, threads)
    return res
