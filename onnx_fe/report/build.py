"""``onnx_fe.report``: one self-contained HTML page from one or several finished runs.

Sections (their ids are the anchors and ``data-section`` values of the page): ``run`` (what was scored and how),
``compare`` (only with several runs), ``layers`` (per-layer table), ``depth`` (FE against depth), ``distributions``
(unit FE per layer), ``heatmap`` (class × unit), ``ranking`` (feature entropy against the baselines), ``ablation``
(curves, when an ablation directory is given), ``validity`` (indicators against measured unit importance, from
``onnx-fe validate``) and ``gallery`` (best and worst units' maps).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import OnnxFeError, OptionError
from ..io.paths import check_output, refuse_input, write_atomic
from . import figures as F
from . import gallery as G
from .html import Column, Page, Section, esc, how, info_table, missing, runs_grid, side_table, table
from .runs import Run, load_ablation, load_runs, read_csv_rows
from .summary import (
    BASELINES,
    best_worst,
    fmt,
    gallery_images,
    layer_rows,
    rank_agreement,
    relative_depth,
    table_value,
)

SECTIONS = (
    "run",
    "compare",
    "layers",
    "depth",
    "distributions",
    "heatmap",
    "ranking",
    "ablation",
    "validity",
    "gallery",
)
MAX_GALLERY_LAYERS = 12


def required_sections(n_runs: int) -> list[str]:
    """The sections a report of ``n_runs`` runs always has (``compare`` only with two or more)."""
    return [s for s in SECTIONS if s != "compare" or n_runs > 1]


@dataclass
class ReportResult:
    path: Path
    size: int  # bytes
    sections: list[str]
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


# --------------------------------------------------------------------------- layers.csv column names

# Older spellings are accepted too, so that a renamed column still shows.
NULL_FE = ("null_fe",)
NULL_RAR = ("null_fe_rarefied",)
NULL_BR = ("null_birth_rate",)
CONTROL_FE = ("control_fe", "control_mean_fe")
CONTROL_RAR = ("control_fe_rarefied",)
CONTROL_BR = ("control_birth_rate",)
COHEN = ("cohens_d", "cohen_d")


def _tv(row, names):
    v = table_value(row, *names)
    return float(v) if isinstance(v, (int, float)) else None


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


# --------------------------------------------------------------------------- header


def _short_sha(s: str) -> str:
    return f'<span class="mono" title="{esc(s)}">{esc(s[:12])}…</span>' if s else "–"


def _duration(s) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def _short(v) -> str:
    """Numbers with 6 significant digits (1/255 reads 0.00392157), lists item by item."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


def run_info(run: Run) -> list[tuple[str, str]]:
    a, p = run.attrs, run.params
    n_per = sorted({int(n) for n in run.layers[0].n_images}) if run.layers else []
    mp = p.get("method_params") or {}
    pre = p.get("preprocess") or {}
    versions = a.get("versions") if isinstance(a.get("versions"), dict) else {}
    providers = a.get("providers") if isinstance(a.get("providers"), list) else []
    wall = next((a[k] for k in ("wall_time_s", "wall_time", "elapsed_s") if k in a), None)
    classes = run.classes
    cls = ", ".join(classes[:12]) + (f", … ({len(classes)} in all)" if len(classes) > 12 else "")
    items = [
        ("results", f'<span class="mono">{esc(run.results_h5)}</span>'),
        (
            "model",
            f'<span class="mono">{esc(a.get("model_path", "?"))}</span> · SHA-256 '
            + _short_sha(str(a.get("model_sha256", ""))),
        ),
        ("data", f'<span class="mono">{esc(a.get("data_source", "?"))}</span>'),
        (
            "images",
            f"{run.n_images} ({len(classes)} classes × "
            f"{'/'.join(str(n) for n in n_per) or '?'} images; asked for {esc(p.get('images_per_class', '?'))}"
            f" per class, seed {esc(p.get('seed', '?'))})",
        ),
        ("classes", esc(cls)),
        (
            "method",
            esc(p.get("method", "?")) + (" · " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in mp.items()) if mp else ""),
        ),
        (
            "layers scored",
            f"{len(run.layers)} of the model's Conv layers: " + esc(", ".join(str(lay.index) for lay in run.layers)),
        ),
        ("preprocessing", esc(", ".join(f"{k} {_short(v)}" for k, v in pre.items())) or "–"),
        ("device", esc(a.get("device", "?")) + (f" ({esc(', '.join(providers))})" if providers else "")),
        ("batch size · workers", f"{esc(a.get('batch_size', '–'))} · {esc(a.get('workers', '–'))}"),
        (
            "wall time",
            _duration(wall) if wall is not None else '<span class="muted">not stored in this results file</span>',
        ),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items())) or "–"),
    ]
    for k in ("started", "finished", "created"):
        if k in a:
            items.append((k, esc(a[k])))
    st = run.config.get("statistics")
    if isinstance(st, dict) and st:
        items.append(("statistics", esc(", ".join(f"{k} {_short(v)}" for k, v in st.items()))))
    if run.control is not None:
        seed = run.config.get("control_seed")
        items.append(
            (
                "control",
                esc(
                    f"{run.config.get('control') or 'control'}"
                    + (f" twin (seed {seed})" if seed is not None else "")
                    + f", scored on the same images: {run.control.results_h5}"
                ),
            )
        )
    elif run.config.get("control"):
        items.append(("control", '<span class="muted">asked for, but its results are not here</span>'))
    cfg = a.get("config")
    if isinstance(cfg, dict):
        items.append(
            (
                "configuration",
                '<details><summary>as stored (JSON)</summary><pre class="mono">'
                + esc(json.dumps(cfg, indent=1, sort_keys=True))
                + "</pre></details>",
            )
        )
    acc = run.extra.get("compare")
    if acc and isinstance(acc.get("top1"), float) and acc["top1"] == acc["top1"]:
        items.append(
            (
                "accuracy (scored images)",
                f"top-1 {fmt(acc['top1'])}"
                + (f", top-5 {fmt(acc.get('top5'))}" if isinstance(acc.get("top5"), float) else ""),
            )
        )
    return items


def header_section(runs: list[Run]) -> Section:
    if len(runs) == 1:
        body = info_table(run_info(runs[0]))
    else:
        infos = [dict(run_info(r)) for r in runs]
        labels = list(dict.fromkeys(k for i in infos for k in i))
        body = side_table(labels, [r.name for r in runs], [[i.get(k, "–") for i in infos] for k in labels])
    return Section("run", "Run" if len(runs) == 1 else "Runs", body)


# --------------------------------------------------------------------------- per-layer table


def _ci_cell(v, lo, hi, digits: int = 3) -> str:
    if v is None:
        return "–"
    s = esc(fmt(v, digits))
    if lo is not None and hi is not None:
        s += f'<br><span class="ci">[{esc(fmt(lo, digits))}, {esc(fmt(hi, digits))}]</span>'
    return s


def _has(rows, *names) -> bool:
    return any(table_value(r, *names) is not None for r in rows)


def _ci_col(key: str, header: str, tip: str, lo: str, hi: str, digits: int = 3) -> Column:
    return Column(
        key, header, tip, digits, render=lambda r: _ci_cell(_tv(r, (key,)), _tv(r, (lo,)), _tv(r, (hi,)), digits)
    )


def _pct(level: float) -> str:
    return f"{100 * level:g} %"


def layer_columns(rows: list[dict], level: float = 0.95) -> list[Column]:
    """The layer table's columns: always the map, tap and means; CIs, the noise null and rarefied FE when stored."""
    ci = _pct(level)
    cols = [
        Column("layer_index", "#", "Conv layer index (as in onnx-fe inspect)", 0),
        Column(
            "layer",
            "layer",
            "the Conv node's name",
            numeric=False,
            render=lambda r: f'<span class="mono">{esc(r["layer"])}</span>',
        ),
        Column(
            "tap_kind",
            "tap",
            "where the map is read: after an activation (post) or before one (pre: a signed map), and "
            "the op it ends after; hover for the chain from the Conv",
            numeric=False,
            render=lambda r: f'<span title="{esc(r["chain"])}">{esc(r["tap_kind"])}</span>',
        ),
        Column(
            "map",
            "map",
            "height × width of the unit's map",
            numeric=False,
            render=lambda r: f"{r['height']}×{r['width']}",
        ),
        Column("units", "units", "output channels", 0),
    ]
    if _has(rows, "fe_ci_low"):
        cols.append(
            _ci_col(
                "feature_entropy",
                f"mean FE [{ci} CI]",
                "mean over units of each unit's class-mean feature entropy, with its CI over units (layers.csv)",
                "fe_ci_low",
                "fe_ci_high",
            )
        )
    else:
        cols += [
            Column("feature_entropy", "mean FE", "mean over units of each unit's class-mean feature entropy"),
            Column(
                "fe_iqr",
                "unit FE quartiles",
                "25th and 75th percentiles of the units' class-mean FE",
                numeric=False,
                render=lambda r: f"{fmt(r['fe_q25'])} – {fmt(r['fe_q75'])}",
            ),
        ]
    if _has(rows, *NULL_FE):
        cols.append(
            Column(
                "null_fe",
                "noise FE",
                "FE of structureless smoothed noise maps of this map size "
                "(layers.csv null_fe): what the map size alone gives",
                render=lambda r: esc(fmt(_tv(r, NULL_FE))),
            )
        )
    if _has(rows, "fe_rarefied_ci_low"):
        cols.append(
            _ci_col(
                "fe_rarefied",
                f"rarefied FE [{ci} CI]",
                "mean over units of the expected FE of k "
                "births drawn from the unit's births, which does not grow with their number",
                "fe_rarefied_ci_low",
                "fe_rarefied_ci_high",
            )
        )
    elif _has(rows, "fe_rarefied"):
        cols.append(
            Column(
                "fe_rarefied",
                "rarefied FE",
                "mean over units of the expected FE of k births drawn "
                "from the unit's births (units with fewer than k births left out)",
            )
        )
    if _has(rows, *NULL_RAR):
        cols.append(
            Column(
                "null_fe_rarefied",
                "noise rarefied",
                "rarefied FE of noise maps of this size",
                render=lambda r: esc(fmt(_tv(r, NULL_RAR))),
            )
        )
    if _has(rows, "fe_ci_width") and not _has(rows, "fe_ci_low"):
        cols.append(Column("fe_ci_width", "FE CI width", "median width of the unit × class bootstrap CIs of FE"))
    if _has(rows, "birth_rate_ci_low"):
        cols.append(
            _ci_col(
                "birth_rate",
                f"birth rate [{ci} CI]",
                "mean over units of the fraction of images whose map has a birth point, with its CI over units",
                "birth_rate_ci_low",
                "birth_rate_ci_high",
            )
        )
    else:
        cols.append(Column("birth_rate", "birth rate", "mean fraction of images whose map has a birth point"))
    if _has(rows, *NULL_BR):
        cols.append(
            Column(
                "null_birth_rate",
                "noise BR",
                "birth rate of noise maps of this size",
                render=lambda r: esc(fmt(_tv(r, NULL_BR))),
            )
        )
    cols.append(Column("no_birth_units", "units w/o birth", "units with no birth point on any scored image", 0))
    for key, header, what in (
        ("rho_fe_mean_activation", "ρ FE ~ mean act.", "mean activation"),
        ("rho_fe_birth_rate", "ρ FE ~ birth rate", "birth rate"),
    ):
        if _has(rows, key):
            cols.append(
                _ci_col(
                    key,
                    f"{header} [{ci} CI]",
                    f"Spearman's ρ over the layer's units of each unit's class-mean FE against its class-mean {what}, "
                    f"with a percentile bootstrap CI over units (layers.csv {key})",
                    f"{key}_ci_low",
                    f"{key}_ci_high",
                    2,
                )
            )
    return cols


def control_columns(level: float = 0.95) -> list[Column]:
    ci = _pct(level)
    return [
        Column("layer_index", "#", "Conv layer index", 0),
        Column("feature_entropy", "FE", "trained: mean FE"),
        Column(
            "control_fe",
            "control FE",
            "the control's mean FE (layers.csv)",
            render=lambda r: esc(fmt(_tv(r, CONTROL_FE))),
        ),
        _ci_col(
            "delta_fe",
            f"Δ FE [{ci} CI]",
            "trained − control, Welch CI over units",
            "delta_fe_ci_low",
            "delta_fe_ci_high",
        ),
        Column(
            "cohens_d",
            "Cohen's d",
            "standardised difference of the units' FE, trained − control",
            render=lambda r: esc(fmt(_tv(r, COHEN), 2)),
        ),
        Column(
            "control_fe_rarefied",
            "control rarefied",
            "the control's mean rarefied FE",
            render=lambda r: esc(fmt(_tv(r, CONTROL_RAR))),
        ),
        _ci_col(
            "delta_fe_rarefied",
            f"Δ rarefied FE [{ci} CI]",
            "trained − control",
            "delta_fe_rarefied_ci_low",
            "delta_fe_rarefied_ci_high",
        ),
        Column(
            "control_birth_rate",
            "control BR",
            "the control's mean birth rate",
            render=lambda r: esc(fmt(_tv(r, CONTROL_BR))),
        ),
        _ci_col(
            "delta_birth_rate",
            f"Δ birth rate [{ci} CI]",
            "trained − control",
            "delta_birth_rate_ci_low",
            "delta_birth_rate_ci_high",
        ),
    ]


def _absent(run: Run, rows: list[dict]) -> list[str]:
    out = []
    if not any(r.get("fe_rarefied") is not None for r in rows):
        out.append("rarefied FE")
    if not any(r.get("fe_ci_low") is not None or r.get("fe_ci_width") is not None for r in rows):
        out.append("confidence intervals")
    if run.layer_table is None:
        out.append("layers.csv (noise null, CIs over units)")
    elif not _has(rows, *NULL_FE):
        out.append("a noise null")
    if not _has(rows, *CONTROL_FE):
        out.append("a control (score --control random-init)")
    return out


def layers_section(runs: list[Run], rows_by_run: dict) -> Section:
    blocks = []
    for run in runs:
        rows = rows_by_run[run.name]
        body = table(layer_columns(rows, run.ci_level), rows)
        if _has(rows, *CONTROL_FE):
            body += (
                f"<h4>Against the control{' (' + esc(run.config.get('control')) + ')' if run.config.get('control') else ''}</h4>"
                + table(control_columns(run.ci_level), rows)
            )
        absent = _absent(run, rows)
        if absent:
            body += missing("Not in these results: " + ", ".join(absent) + ".")
        blocks.append((run.name, body))
    intro = how(
        "Feature entropy (FE) of a unit in a class is the entropy of its birth points over the class's images; "
        "lower means a more stable spatial pattern. A layer's value is the mean over its units of each unit's "
        "class mean. Intervals are the ones the results hold (CIs over units, from layers.csv). Read a layer "
        "against its noise null (what structureless maps of its size give) and against the control before "
        "comparing layers. The two ρ columns say how much of FE is activity: Spearman's ρ over the layer's units "
        "of FE against the mean activation and against the birth rate; near ±1, FE orders the units as that "
        "cheap statistic does and says little beyond it, near 0 the orders are unrelated. Low FE = effective unit "
        "is the paper's reading, not an established fact: in the project's pre-registered study against measured "
        "unit importance (docs/validity.md), units with higher FE mattered more and FE added nothing shown beyond "
        "birth rate and mean activation; check this model with onnx-fe importance and onnx-fe validate. Click a "
        "column header to sort."
    )
    return Section("layers", "Layers", runs_grid(blocks, len(runs) == 1), intro)


# --------------------------------------------------------------------------- FE against depth


def _series_of(rows, x, key, label, color, lo=None, hi=None, band_label=None, **kw) -> dict | None:
    y = [_tv(r, (key,) if isinstance(key, str) else key) for r in rows]
    if all(v is None for v in y):
        return None
    band = None
    if lo and hi:
        lo_v, hi_v = [_tv(r, (lo,)) for r in rows], [_tv(r, (hi,)) for r in rows]
        if any(v is not None for v in lo_v + hi_v):
            band = (_arr(lo_v), _arr(hi_v))
    return {"label": label, "x": x, "y": _arr(y), "color": color, "band": band, "band_label": band_label, **kw}


def _depth_panels(run: Run, rows: list[dict], x) -> list[dict]:
    """FE, rarefied FE and birth rate against depth, each with its CI band, the control and the noise null; with a
    control, the differences with their CIs. Without layers.csv: the means and the units' FE quartiles."""
    ci = f"{_pct(run.ci_level)} CI over units"
    has_ci = _has(rows, "fe_ci_low")
    panels = []
    for key, ylabel, lo, hi, ctrl, null in (
        ("feature_entropy", "mean feature entropy", "fe_ci_low", "fe_ci_high", CONTROL_FE, NULL_FE),
        ("fe_rarefied", "mean rarefied FE", "fe_rarefied_ci_low", "fe_rarefied_ci_high", CONTROL_RAR, NULL_RAR),
        ("birth_rate", "mean birth rate", "birth_rate_ci_low", "birth_rate_ci_high", CONTROL_BR, NULL_BR),
    ):
        if key == "feature_entropy" and not has_ci:
            main_s = _series_of(rows, x, key, "trained", F.PALETTE[0], "fe_q25", "fe_q75", "units' FE, quartiles")
        else:
            main_s = _series_of(rows, x, key, "trained", F.PALETTE[0], lo, hi, ci)
        if main_s is None:
            continue
        series = [main_s]
        c = _series_of(rows, x, ctrl, "control", F.CONTROL_COLOR, marker="s")
        if c:
            series.append(c)
        n = _series_of(rows, x, null, "noise null (same map size)", F.NULL_COLOR, style=":", marker="D")
        if n:
            series.append(n)
        panels.append({"ylabel": ylabel, "series": series, "ylim": (-0.02, 1.02) if key == "birth_rate" else None})
    deltas = [
        s
        for s in (
            _series_of(rows, x, "delta_fe", "Δ FE", F.PALETTE[3], "delta_fe_ci_low", "delta_fe_ci_high", ci),
            _series_of(
                rows,
                x,
                "delta_fe_rarefied",
                "Δ rarefied FE",
                F.PALETTE[2],
                "delta_fe_rarefied_ci_low",
                "delta_fe_rarefied_ci_high",
                None,
                style="--",
            ),
        )
        if s
    ]
    if deltas:
        panels.append({"ylabel": "trained − control", "series": deltas, "zero": True})
    return panels


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def depth_section(runs, rows_by_run) -> Section:
    blocks = []
    for k, run in enumerate(runs):
        rows = rows_by_run[run.name]
        x = [r["layer_index"] for r in rows]
        panels = _depth_panels(run, rows, x)
        svg = F.depth_figure(panels, f"d{k}", ncols=2 if len(panels) > 2 else len(panels))
        note = ""
        if not _has(rows, *NULL_FE):
            note += missing(
                "No noise null in these results (layers.csv with null_fe): a trend with depth may "
                "follow map size alone."
            )
        blocks.append((run.name, svg + note))
    intro = how(
        "Lines: layer means over units. Shaded: the CI over units that layers.csv gives (without it, the 25th–75th "
        "percentiles of the units' FE: a spread, not a confidence interval). Grey dotted: the noise null, what "
        "structureless maps of each layer's size give; orange: the control. With a control, the last panel shows "
        "trained − control with its CI over units (Welch)."
    )
    return Section("depth", "Feature entropy against depth", runs_grid(blocks, len(runs) == 1), intro)


def compare_section(runs, rows_by_run) -> Section:
    panels = [
        {"ylabel": "mean feature entropy", "series": []},
        {"ylabel": "mean birth rate", "series": [], "ylim": (-0.02, 1.02)},
    ]
    markers, styles = "os^Dvp*h", ["-", "--", ":", "-."]
    for k, run in enumerate(runs):
        rows = rows_by_run[run.name]
        x = relative_depth([r["layer_index"] for r in rows])
        for p, key in zip(panels, ("feature_entropy", "birth_rate")):
            p["series"].append(
                {
                    "label": run.name,
                    "x": x,
                    "y": [r[key] for r in rows],
                    "style": styles[k % 4],
                    "marker": markers[k % 8],
                    "color": F.PALETTE[k % len(F.PALETTE)],
                    "mfc": "none" if k % 2 else None,
                }
            )
    svg = F.depth_figure(panels, "cmp", xlabel="relative depth (first scored layer 0, last 1)", integer_x=False)
    labels = [
        "layers scored",
        "images",
        "method",
        "mean FE, first layer",
        "mean FE, last layer",
        "mean birth rate, last layer",
        "top-1 accuracy (scored images)",
    ]
    cells = []
    for run in runs:
        rows = rows_by_run[run.name]
        acc = run.extra.get("compare", {}).get("top1")
        mp = run.params.get("method_params") or {}
        cells.append(
            [
                str(len(rows)),
                str(run.n_images),
                esc(f"{run.params.get('method', '?')} " + ", ".join(f"{k} {v}" for k, v in mp.items())),
                fmt(rows[0]["feature_entropy"]),
                fmt(rows[-1]["feature_entropy"]),
                fmt(rows[-1]["birth_rate"]),
                fmt(acc) if isinstance(acc, float) else "–",
            ]
        )
    same = len({json.dumps([r.params.get("method"), r.params.get("method_params")], sort_keys=True) for r in runs}) == 1
    note = (
        "" if same else missing("The runs used different methods or parameters: their FE values are not on one scale.")
    )
    intro = how(
        "Layers are placed by relative depth among each run's scored layers, so networks of different depth "
        "line up. Each run's own sections follow below, side by side."
    )
    rows_t = [list(col) for col in zip(*cells)]  # one row per label, one column per run
    return Section("compare", "Comparison", svg + side_table(labels, [r.name for r in runs], rows_t) + note, intro)


# --------------------------------------------------------------------------- distributions and heatmap


def distributions_section(runs, rows_by_run) -> Section:
    from .summary import unit_means

    blocks = []
    for k, run in enumerate(runs):
        rows = {r["layer_index"]: r for r in rows_by_run[run.name]}
        groups = []
        for lay in run.layers:
            c = run.control.layer_by_name(lay.name) if run.control is not None else None
            groups.append(
                {
                    "label": str(lay.index),
                    "values": unit_means(lay.feature_entropy),
                    "marker": _tv(rows[lay.index], NULL_FE),
                    "control": unit_means(c.feature_entropy) if c is not None else None,
                }
            )
        blocks.append((run.name, F.distribution_figure(groups, f"u{k}")))
    intro = how(
        "Each unit's FE is its mean over classes. Boxes: quartiles and median; whiskers: 5th–95th percentiles; "
        "dots: single units (left out when there are very many); orange boxes: the control's units; grey bars: the "
        "noise null of the layer's map size."
    )
    return Section("distributions", "Unit feature entropy per layer", runs_grid(blocks, len(runs) == 1), intro)


def heatmap_section(runs, rankings_by_run, heatmap_layers) -> tuple[Section, list[str]]:
    blocks, notes = [], []
    for run in runs:
        wanted = heatmap_layers or [run.layers[-1].index]
        parts = []
        for idx in wanted:
            try:
                lay = run.layer(int(idx))
            except (KeyError, ValueError):
                notes.append(f"{run.name}: no scored layer {idx} for the heatmap")
                parts.append(missing(f"Layer {idx} was not scored in this run."))
                continue
            fr = rankings_by_run[run.name].get("feature_entropy")
            order = fr.layer(lay.index).order if fr is not None else np.argsort(lay.unit_fe, kind="stable")
            uri = F.heatmap_png(
                lay.feature_entropy,
                lay.birth_rate,
                run.classes,
                order,
                f"layer {lay.index} {lay.name} · {lay.height}×{lay.width}",
            )
            parts.append(
                f'<h4>layer {lay.index} <span class="mono">{esc(lay.name)}</span></h4>'
                f'<img class="fig" alt="class by unit feature entropy, layer {lay.index}" src="{uri}">'
            )
        blocks.append((run.name, "".join(parts)))
    intro = how(
        "Feature entropy of every unit (columns) in every class (rows). Grey cells: the unit has no birth "
        "point on any image of that class, where FE is 0 by definition rather than by a stable pattern. "
        "Default layer: the last scored one (<code>--heatmap-layer</code> chooses)."
    )
    return Section("heatmap", "Class × unit feature entropy", runs_grid(blocks, len(runs) == 1), intro), notes


# --------------------------------------------------------------------------- ranking


def compute_rankings(run: Run) -> tuple[dict, list[str]]:
    from ..scores.ranking import rank

    out, notes = {}, []
    for by in ("feature_entropy",) + BASELINES:
        try:
            out[by] = rank(run.results_h5, by)
        except OnnxFeError as e:
            notes.append(f"{run.name}: no {by} ranking: {e}")
    return out, notes


def ranking_section(runs, rankings_by_run, notes_by_run) -> Section:
    blocks = []
    for k, run in enumerate(runs):
        rows = rank_agreement(rankings_by_run[run.name])
        present = [b for b in BASELINES if any(f"rho_{b}" in r for r in rows)]
        if not rows or not present:
            blocks.append((run.name, missing("No ranking to compare.")))
            continue
        cols = [Column("layer_index", "#", digits=0), Column("units", "units", digits=0)]
        for b in present:
            cols.append(Column(f"rho_{b}", f"ρ {b}", f"Spearman's ρ between FE importance and {b} importance", 2))
            cols.append(
                Column(
                    f"top_overlap_{b}",
                    "top ¼ shared",
                    f"fraction of the FE ranking's top quarter of units that are also in {b}'s top quarter",
                    2,
                )
            )
        body = F.agreement_figure(rows, present, f"r{k}") + table(cols, rows)
        for n in notes_by_run.get(run.name, []):
            body += missing(n)
        blocks.append((run.name, body))
    intro = how(
        "How the feature-entropy ranking (<code>onnx-fe rank --by feature_entropy</code>: the reference "
        "rule) orders each layer's units compared with the magnitude baselines. ρ = 1: the same order, 0: "
        "unrelated, −1: reversed. With a share of the top quarter, chance level is about ¼. No ρ (“–”, a gap in "
        "the line): one of the two gives every unit of the layer the same value (e.g. APoZ 0 on a pre-activation "
        "map without exact zeros) or the layer has fewer than 3 units."
    )
    return Section("ranking", "Ranking against baselines", runs_grid(blocks, len(runs) == 1), intro)


# --------------------------------------------------------------------------- ablation


def ablation_section(ablations: list) -> Section:
    if not ablations:
        body = missing(
            "No ablation directory given. `onnx-fe ablate MODEL DATA --ranking RESULTS -o DIR` writes one; "
            "pass it with --ablation DIR."
        )
        return Section("ablation", "Cumulative ablation", body)
    blocks = []
    for k, p in enumerate(ablations):
        rows = load_ablation(p)
        body = F.ablation_figure(rows, f"a{k}")
        sp = Path(p) / "ablation_summary.csv" if Path(p).is_dir() else Path(p).with_name("ablation_summary.csv")
        if sp.exists():
            srows = read_csv_rows(sp)
            cols = [
                Column("layer_index", "#", digits=0),
                Column("by", "ranking", numeric=False),
                Column(
                    "auc_top1_most_first",
                    "AUC most first",
                    "normalised area under the top-1 curve, most "
                    "important units removed first (lower: the ranking found the important units)",
                ),
                Column("auc_top1_least_first", "AUC least first", "the same, least important first (higher is better)"),
                Column("auc_gap", "gap", "AUC least first − AUC most first"),
                Column("repeats", "repeats", digits=0),
            ]
            body += table(cols, srows)
        n = rows[0].get("n_images")
        blocks.append((str(p), body + how(f"{esc(n)} images." if n else "")))
    intro = how(
        "Top-1 accuracy as a layer's units are zeroed one ranking at a time: solid, most important first; "
        "dashed, least important first. A random ranking with several seeds is their mean, shaded min–max."
    )
    return Section("ablation", "Cumulative ablation", runs_grid(blocks, len(blocks) == 1), intro)


# --------------------------------------------------------------------------- validity

SIGN = {-1: "−", 1: "+", 0: "none"}


def _validity_reading(r: dict) -> str:
    lo, hi, s = r["ci_low"], r["ci_high"], r["expected_sign"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    if lo <= 0 <= hi:
        return "CI contains 0"
    side = 1 if lo > 0 else -1
    if s == 0:
        return "positive" if side > 0 else "negative"
    return "as expected" if side == s else "opposite to expected"


def validity_block(v, k: int) -> str:
    """Table and forest plot of one validity directory (pooled rows sorted by ρ, then the two FE-beyond-activity
    rows)."""
    from ..experiments.validate import INCREMENT, PARTIAL

    pooled = [r for r in v.rows if r["layer_index"] == "all"]
    plain = sorted(
        (r for r in pooled if r["indicator"] not in (PARTIAL, INCREMENT)),
        key=lambda r: (not np.isfinite(r["spearman"]), r["spearman"]),
    )
    extra = [r for r in pooled if r["indicator"] in (PARTIAL, INCREMENT)]
    level = float(v.info.get("ci_level", 0.95))
    target = str(v.info.get("target", "delta_loss"))
    items = []
    for r in plain + [r for r in extra if r["indicator"] == PARTIAL]:
        items.append(
            {
                "label": f"{r['indicator']} ({SIGN[r['expected_sign']]})",
                "value": r["spearman"],
                "low": r["ci_low"],
                "high": r["ci_high"],
                "layers": [
                    q["spearman"] for q in v.rows if q["indicator"] == r["indicator"] and q["layer_index"] != "all"
                ],
            }
        )
    fig = F.validity_figure(items, f"v{k}", xlabel=f"Spearman ρ with {target}")
    rows = [
        {**r, "sign": SIGN[r["expected_sign"]], "reading": _validity_reading(r), "rho": r["spearman"]}
        for r in plain + extra
    ]
    cols = [
        Column("indicator", "indicator", "the unit value compared with the measured importance", numeric=False),
        Column("sign", "expected", "the sign of ρ when the indicator finds the important units", numeric=False),
        Column(
            "rho",
            f"ρ [{_pct(level)} CI]",
            f"pooled within-layer Spearman ρ with {target}; for fe_increment the gain in cross-validated ρ",
            render=lambda r: _ci_cell(
                r["rho"] if np.isfinite(r["rho"]) else None,
                r["ci_low"] if np.isfinite(r["ci_low"]) else None,
                r["ci_high"] if np.isfinite(r["ci_high"]) else None,
                2,
            ),
        ),
        Column("n_units", "units", "units with both values (in layers with a ρ)", 0),
        Column("reading", "reading", "what the CI says about the sign", numeric=False),
    ]
    info = v.info
    head = how(
        f"{esc(info.get('method', '?'))} scores against {esc(target)} of {esc(info.get('n_units', '?'))} units, "
        f"{esc(info.get('resamples', '?'))} resamples of the units within each layer (seed {esc(info.get('seed', '?'))})"
        f'; importance from <span class="mono">{esc(info.get("importance", "?"))}</span>.'
    )
    notes = "".join(missing(esc(n)) for n in info.get("notes") or [])
    return head + fig + table(cols, rows) + notes


def validity_section(runs, given) -> tuple[Section, list[str]]:
    from ..experiments.validate import find_validity, load_validity, stale_reason

    dirs, notes, blocks = [], [], []
    for r in runs:
        d = find_validity(r.directory)
        if d is not None:
            dirs.append((r.name if len(runs) > 1 else str(d), d))
    for g in given:
        d = find_validity(g)
        if d is not None and all(Path(d).resolve() != Path(x).resolve() for _, x in dirs):
            dirs.append((str(d), d))
    for k, (name, d) in enumerate(dirs):
        try:
            v = load_validity(d)
        except OnnxFeError as e:
            notes.append(f"validity not shown: {e}")
            blocks.append((name, missing(f"Not shown: {esc(e)}.")))
            continue
        why = stale_reason(v)
        if why:
            notes.append(f"validity not shown: {why}")
            blocks.append((name, missing(f"Not shown: {esc(why)}; run `onnx-fe validate` again.")))
            continue
        blocks.append((name, validity_block(v, k)))
    if not blocks:
        body = missing(
            "No validity directory. `onnx-fe validate RESULTS IMPORTANCE` writes RESULTS/validity, which the report "
            "of RESULTS shows; one written elsewhere is passed with --validity DIR."
        )
        return Section("validity", "Indicator validity", body), notes
    intro = how(
        "How well each indicator orders the units by what they do: ρ is the Spearman rank correlation, within each "
        "layer, between the indicator's unit values and the measured importance (the mean increase of the loss "
        "when the unit alone is zeroed, <code>onnx-fe importance</code>), pooled over layers (the unit-weighted mean "
        "of the layers' ρ). ρ = 1: the indicator orders the units as their importance, 0: unrelated, −1: reversed. "
        "“expected” is the sign an indicator that finds important units should have (low FE = important: −). "
        "Black: pooled ρ with its bootstrap CI over units; open grey dots: single layers. The last two rows ask "
        "whether FE says more than activity: <code>fe|birth_rate+mean_activation</code> is FE's partial ρ once "
        "birth rate and mean activation are accounted for, and <code>fe_increment</code> is the gain in "
        "cross-validated ρ when FE is added to birth rate, mean activation, APoZ and HRank. A CI that contains 0 "
        "there means this run gives no evidence that FE adds to the activity statistics. In the project's "
        "pre-registered study (docs/validity.md: 20 small trained CNNs), units with higher FE mattered more, the "
        "opposite of the paper's reading, and FE added nothing shown beyond birth rate and mean activation."
    )
    return Section("validity", "Indicator validity", runs_grid(blocks, len(blocks) == 1), intro), notes


# --------------------------------------------------------------------------- gallery


def gallery_layer_choice(layers: list[int], wanted, limit: int = MAX_GALLERY_LAYERS) -> list[int]:
    """Every scored layer when there are at most ``limit``, else ``limit`` evenly spaced ones (the last included)."""
    if wanted:
        return [int(i) for i in wanted if int(i) in layers]
    if len(layers) <= limit:
        return list(layers)
    pick = np.unique(np.rint(np.linspace(0, len(layers) - 1, limit)).astype(int))
    return [layers[i] for i in pick]


def gallery_block(run: Run, rankings: dict, opts: dict, advance, k: int) -> tuple[str, list[str], list[str]]:
    """(html, css lines, notes) of one run's gallery."""
    from ..topology import birth_points

    fr = rankings.get("feature_entropy")
    if fr is None:
        return missing("No feature-entropy ranking, so no best and worst units."), [], []
    try:
        rows = gallery_images(run.labels, run.classes, opts["images"], opts["classes"])
    except ValueError:
        raise OptionError(
            f"--gallery-classes: not a class of {run.name} (have: {', '.join(run.classes[:20])})"
        ) from None
    if not rows:
        return missing("No image to show."), [], []
    layers = gallery_layer_choice([lay.index for lay in run.layers], opts["layers"])
    picks = {}
    for idx in layers:
        best, worst = best_worst(fr.layer(idx).order, opts["units"])
        picks[idx] = (best, worst)
    try:
        maps = G.recompute(
            run,
            {i: b + w for i, (b, w) in picks.items()},
            rows,
            model=opts["model"],
            data=opts["data"],
            device=opts["device"],
            advance=advance,
        )
    except OnnxFeError as e:
        return missing(f"Unit gallery not drawn: {e}."), [], [f"{run.name}: gallery not drawn: {e}"]
    method = run.params.get("method", "cubical")
    mparams = run.params.get("method_params") or {}
    css = [f".g{k}t{j}{{background-image:url({u})}}" for j, u in enumerate(maps.thumbs)]
    classes = [run.classes[int(run.labels[r])] for r in rows]
    head_cells = "".join(f'<th class="cls">{esc(c)}</th>' for c in classes)
    thumbs = "".join(
        f'<td><div class="thumb g{k}t{j}" title="{esc(run.image_ids[r])}"></div></td>' for j, r in enumerate(rows)
    )
    parts, n_maps, n_same, n_unset = [], 0, 0, 0
    for idx in layers:
        lay = run.layer(idx)
        m = maps.maps[idx]  # (images, units, H, W)
        sel = maps.units[idx]
        stored = run.per_image(idx, "birth_points", rows)[:, sel]
        again = (
            birth_points(m.transpose(1, 0, 2, 3).reshape(-1, m.shape[2], m.shape[3]), method=method, **mparams)
            .reshape(len(sel), len(rows))
            .T
        )
        rank_of = fr.layer(idx).rank
        body = [f'<tr><td class="lab"></td>{head_cells}</tr><tr><td class="lab">input</td>{thumbs}</tr>']
        best, worst = picks[idx]
        for group, units in (("best", best), ("worst", worst)):
            body.append('<tr class="sep"><td></td></tr>')
            for ui, u in enumerate(units):
                col = list(sel).index(u)
                lab = (
                    f'<td class="lab"><b>{group} {ui + 1}</b> unit {u}<br>rank {int(rank_of[u]) + 1}/{lay.channels}'
                    f" · score {fmt(fr.layer(idx).score[u], 2)}<br>FE {fmt(lay.unit_fe[u])}"
                    f" · birth rate {fmt(lay.unit_birth_rate[u], 2)}</td>"
                )
                cells = []
                for j, r in enumerate(rows):
                    mm = m[j, col]
                    bp, mask = G.birth_set(mm, method, mparams)
                    n_maps += 1
                    same = int(again[j, col]) == int(stored[j, col])
                    n_same += same
                    if bp != int(again[j, col]):
                        n_unset += 1
                        mask = None
                    title = (
                        f"{run.image_ids[r]} · layer {idx} unit {u} · birth point recomputed {int(again[j, col])},"
                        f" stored {int(stored[j, col])}"
                    )
                    tile = G.tile_html(mm, int(again[j, col]), mask, title)
                    if not same:
                        tile = tile.replace('class="tile"', 'class="tile diff"', 1)
                    cells.append(f"<td>{tile}</td>")
                body.append(f"<tr>{lab}{''.join(cells)}</tr>")
        parts.append(
            f'<h4>layer {idx} <span class="mono">{esc(lay.name)}</span> · {lay.height}×{lay.width} · '
            f'{esc(lay.chain)}</h4><div class="scroll"><table class="gal"><tbody>{"".join(body)}</tbody>'
            f"</table></div>"
        )
    if method == "clique":
        what = (
            "Clique method: orange marks the entries (i, j) of max(U, Uᵀ) whose edges have entered the flag "
            "filtration (the map read as a graph on its rows) when the first 1-cycle appears; <i>b</i> is that "
            "filtration index − 1. "
        )
    else:
        what = (
            "Cubical method: orange is the superlevel set of the map's rank filtration when the first hole "
            f"appears; <i>b</i> = ⌈{esc(mparams.get('resolution', 100))} · its pixels / H·W⌉. "
        )
    check = what + (
        f'Recomputed on {esc(maps.device)} from <span class="mono">{esc(_shown(maps.model_path))}</span> '
        f"(SHA-256 checked): the birth points of {n_same} of {n_maps} maps equal the stored ones"
        + ("." if n_same == n_maps else " (differing ones have a red caption).")
    )
    if n_unset:
        check += f" For {n_unset} map(s) the birth set could not be reconstructed and is not drawn."
    skipped = len(run.layers) - len(layers)
    if skipped > 0:
        check += f" {skipped} of {len(run.layers)} layers are left out (--gallery-layer chooses)."
    notes = [] if n_same == n_maps else [f"{run.name}: {n_maps - n_same} of {n_maps} recomputed birth points differ"]
    return how(check) + "".join(parts), css, notes


def _shown(p: Path) -> str:
    """A path as short as it reads unambiguously: relative to the working directory when inside it."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def gallery_section(runs, rankings_by_run, opts, advance) -> tuple[Section, list[str], list[str]]:
    blocks, css, notes = [], [], []
    for k, run in enumerate(runs):
        body, c, n = gallery_block(run, rankings_by_run[run.name], opts, advance, k)
        blocks.append((run.name, body))
        css += c
        notes += n
    u = opts["units"]
    intro = how(
        f"The {u} most and {u} least important units of each layer by the feature-entropy ranking, on the "
        f"first {opts['images']} images of the shown classes, ranked by the reference rule (score: the class "
        "mean of FE / birth rate, where a class whose value is below 0.1 — no birth point, or all birth points "
        "equal — counts as 100·ln 100; lower ranks first). "
        "Grey: the unit's map (darkest = its minimum, lightest = its maximum; a constant map is "
        "mid-grey). Orange: what is present in the filtration when the first hole is born (see each run's "
        "method below); <i>b</i>: the birth point; “none”: no birth point."
    )
    return Section("gallery", "Unit gallery", runs_grid(blocks, len(runs) == 1), intro), css, notes


# --------------------------------------------------------------------------- the API


def default_output(paths: list, runs: list[Run]) -> Path:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "report.html"
    if len(runs) == 1:
        return runs[0].directory / "report.html"
    return Path("report.html")


def check_can_report() -> None:
    """Raise a one-line error when the report cannot be drawn here (matplotlib missing)."""
    from .plots import require_matplotlib

    try:
        require_matplotlib()
    except OnnxFeError:
        raise OnnxFeError(
            "the report draws its figures with matplotlib, which is not installed: pip install 'onnx-fe[plot]'"
        ) from None


def report(
    results,
    output=None,
    *,
    ablation=None,
    validity=None,
    heatmap_layers=None,
    gallery=True,
    gallery_units=3,
    gallery_images=3,
    gallery_classes=None,
    gallery_layers=None,
    model=None,
    data=None,
    device="cpu",
    title=None,
    progress=False,
    log=None,
) -> ReportResult:
    """Write one self-contained HTML report of one or several finished ``score`` runs.

    ``results``: a results directory (or results.h5, or a ``compare`` output directory), or a list of them.
    ``output``: the HTML file (default: ``report.html`` in the results directory; ``./report.html`` for several).
    ``ablation``: directories written by ``ablate`` to draw. ``validity``: directories written by ``validate`` to
    show (a run's own ``RESULTS/validity`` is shown without being named). ``heatmap_layers``: layer indices for the class × unit
    heatmap (default: the last scored layer). The gallery recomputes the maps of the ``gallery_units`` best and
    worst units of each layer on ``gallery_images`` images of each of ``gallery_classes`` (default: the first and
    the middle class) with the scored model; ``model`` and ``data`` say where those are when the stored paths do
    not resolve from here. Needs matplotlib (``pip install 'onnx-fe[plot]'``).
    """
    log = log or (lambda msg: None)
    check_can_report()
    paths = list(results) if isinstance(results, (list, tuple)) else [results]
    if not paths:
        raise OptionError("report needs at least one results directory")
    for name, v in (("--gallery-units", gallery_units), ("--gallery-images", gallery_images)):
        if int(v) < 1:
            raise OptionError(f"{name} must be at least 1")
    runs = load_runs(paths)
    if model is not None and len(runs) > 1:
        raise OptionError("--model applies to a report of one run (each run names its own model)")
    ablations = [ablation] if isinstance(ablation, (str, os.PathLike)) else list(ablation or [])
    for a in ablations:
        load_ablation(a)  # fail early, before any long work
    validities = [validity] if isinstance(validity, (str, os.PathLike)) else list(validity or [])
    for v in validities:
        from ..experiments.validate import load_validity

        load_validity(v)  # fail early
    for r in runs:  # options are checked before any long work
        scored = [lay.index for lay in r.layers]
        for opt, wanted in (("--heatmap-layer", heatmap_layers), ("--gallery-layer", gallery_layers)):
            bad = [str(i) for i in wanted or [] if int(i) not in scored]
            if bad:
                raise OptionError(
                    f"{opt} {', '.join(bad)}: not a scored layer of {r.name} (scored: {', '.join(map(str, scored))})"
                )
        bad = [c for c in gallery_classes or [] if c not in r.classes]
        if bad:
            raise OptionError(
                f"--gallery-classes {', '.join(bad)}: not a class of {r.name} (have: "
                f"{', '.join(r.classes[:20])}{'…' if len(r.classes) > 20 else ''})"
            )
    out = Path(check_output(output)) if output is not None else default_output(paths, runs)
    if out.exists() and out.is_dir():
        raise OptionError(f"output {out} is a directory; give a file name such as {out / 'report.html'}")
    inputs = [Path(r.results_h5) for r in runs]
    refuse_input(out, *inputs, *(p.with_name(n) for p in inputs for n in ("scores.csv", "layers.csv")))
    opts = {
        "units": int(gallery_units),
        "images": int(gallery_images),
        "classes": gallery_classes,
        "layers": gallery_layers,
        "model": model,
        "data": data,
        "device": device,
    }
    notes: list[str] = []
    rows_by_run = {r.name: layer_rows(r) for r in runs}
    n_gallery = (
        sum(len(gallery_layer_choice([lay.index for lay in r.layers], gallery_layers)) for r in runs) if gallery else 0
    )
    with _progress(progress) as bar:
        t_fig = (
            bar.add_task("figures", total=len(runs) * 5 + (1 if len(runs) > 1 else 0) + len(ablations)) if bar else None
        )
        t_gal = bar.add_task("gallery layers", total=n_gallery) if bar and gallery else None

        def step(n=1):
            if bar is not None:
                bar.advance(t_fig, n)

        rankings_by_run, rnotes = {}, {}
        for r in runs:
            rankings_by_run[r.name], rnotes[r.name] = compute_rankings(r)
            step()
        sections = [header_section(runs)]
        if len(runs) > 1:
            sections.append(compare_section(runs, rows_by_run))
            step()
        sections.append(layers_section(runs, rows_by_run))
        sections.append(depth_section(runs, rows_by_run))
        step(len(runs))
        sections.append(distributions_section(runs, rows_by_run))
        step(len(runs))
        hs, hn = heatmap_section(runs, rankings_by_run, heatmap_layers)
        sections.append(hs)
        notes += hn
        step(len(runs))
        sections.append(ranking_section(runs, rankings_by_run, rnotes))
        step(len(runs))
        sections.append(ablation_section(ablations))
        step(len(ablations))
        vs, vn = validity_section(runs, validities)
        sections.append(vs)
        notes += vn
        css: list[str] = []
        if gallery:
            gs, css, gn = gallery_section(
                runs, rankings_by_run, opts, (lambda n=1: bar.advance(t_gal, n)) if bar else None
            )
            notes += gn
        else:
            gs = Section("gallery", "Unit gallery", missing("Gallery left out (--no-gallery)."))
        sections.append(gs)
    for r in runs:
        notes += rnotes[r.name]
    names = ", ".join(r.name for r in runs)
    ttl = title or (
        f"onnx-fe report: {names}"
        if len(runs) > 1
        else f"onnx-fe report: {Path(str(runs[0].attrs.get('model_path', runs[0].name))).name}"
    )
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sub = f"{len(runs)} run{'s' if len(runs) > 1 else ''} · {esc(', '.join(str(r.results_h5) for r in runs))}"
    footer = (
        f"Made by onnx-fe {esc(__version__)} on {esc(now)} from the results files named above. "
        "One file: figures, images and script are inline, and the page requests nothing from any network."
    )
    page = Page(ttl, sub, sections, footer, css).render()
    write_atomic(out, page)
    for n in notes:
        log(f"note: {n}")
    return ReportResult(out, out.stat().st_size, [s.id for s in sections], notes)
