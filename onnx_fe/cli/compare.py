"""`onnx-fe compare`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import DataOptions, MethodOptions, PreprocessOptions, RunnerOptions, ScoreConfig, StatisticsOptions
from ..errors import OnnxFeError
from ..scores.compare import DEFAULT_PERMUTATIONS
from .app import QUIET, VERBOSE, _console, _fmt, _log, _set_verbosity, _verbosity, app
from .options import (
    BATCH,
    LAYERS,
    METHOD,
    RUNNER,
    STATISTICS,
    WAIT,
    WORKERS,
    images_group,
    options,
    preprocess_group,
)


@app.command()
@options(METHOD, images_group(), preprocess_group(), RUNNER, STATISTICS)
def compare(
    paths: List[Path] = typer.Argument(..., help="ONNX models, then the data (ImageFolder directory or .npz)"),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output directory; each model is scored into a sub-folder",
        show_default="onnx-fe-results/compare",
    ),
    layers: Optional[List[str]] = LAYERS,
    batch_size: int = BATCH,
    workers: Optional[int] = WORKERS,
    no_accuracy: bool = typer.Option(False, "--no-accuracy", help="Do not measure each model's accuracy"),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw compare.png (no matplotlib needed)"),
    wait: bool = WAIT,
    permutations: int = typer.Option(
        DEFAULT_PERMUTATIONS,
        "--permutations",
        help="Permutations of the network-level test over images (0: no test)",
        rich_help_panel="Statistics",
    ),
    rarefied: bool = typer.Option(
        False, "--rarefied", help="Show rarefied FE in the table instead of raw FE (the CSVs hold both)"
    ),
    summary: bool = typer.Option(
        False,
        "--summary",
        help="Also write networks.csv: a row per network with its FE, rarefied FE, birth rate and mean activation and "
        "the generalisation baselines on the data (path norm, spectral norms, margin, parameter count, PAC-Bayes "
        "flatness)",
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    method: MethodOptions,
    images: DataOptions,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
    statistics: StatisticsOptions,
):
    """Score several networks on the same data and compare each with the first: per layer (aligned by relative
    depth) and for the whole network, with confidence intervals."""
    from rich.table import Table

    from ..experiments.compare import compare as run_compare

    _set_verbosity(quiet, verbose)
    if len(paths) < 2:
        raise OnnxFeError("compare needs one or more models followed by the data")
    cfg = ScoreConfig.create(
        paths[0],
        paths[-1],
        layers=layers,
        method=method,
        images=images,
        preprocess=preprocess,
        runner=runner,
        batch_size=batch_size,
        workers=workers,
        statistics=statistics,
    )
    res = run_compare(
        paths[:-1],
        paths[-1],
        output,
        accuracy=not no_accuracy,
        plot=not no_plot,
        log=_log,
        progress=not _verbosity["quiet"],
        config=cfg,
        wait=wait,
        permutations=permutations,
        summary=summary,
    )
    if _verbosity["quiet"]:
        return
    t = comparison_table(res, cfg.statistics.ci_level, "fe_rarefied" if rarefied else "fe")
    s = Table(title="last scored layer of each model")
    for col in ("model", "layers", "last layer", "feature entropy", "birth rate", "top-1", "images"):
        s.add_column(col, justify="left" if col in ("model", "last layer") else "right")
    for m in res.models:
        s.add_row(
            m["model"],
            str(m["layers"]),
            m["last_layer"],
            _fmt(m["last_feature_entropy"]),
            _fmt(m["last_birth_rate"]),
            _fmt(m["top1"]),
            str(m["n_images"]),
        )
    c = _console()
    from rich.console import Console
    from rich.measure import Measurement

    need = Measurement.get(c, c.options.update(width=1000), t).maximum
    if need > c.width:  # one line per row: CIs in brackets stay beside their estimate
        c = Console(stderr=False, width=min(need, 400))
    c.print(t)
    ref = res.models[0]["model"]
    c.print(
        f"Rows: the layers of {ref}, each paired with every other model's layer at the nearest relative depth "
        "(layer index / (Conv layers − 1)). Δ: model − " + ref + ", CI over units (Welch); d: Cohen's d over units. "
        "network: mean over the rows; its CIs are bootstrap CIs over images (paired for Δ); p: permutation test over "
        "images."
    )
    for m in res.models[1:]:
        if str(m.get("permutation", "")).startswith("n/a"):
            c.print(f"{m['model']}: permutation test {m['permutation']}")
        rows = [r for r in res.layers if r["model"] == m["model"]]
        refs = {r["ref_layer_index"]: r for r in res.layers if r["model"] == ref}
        size = sum(r["size"] != refs[r["ref_layer_index"]]["size"] for r in rows)
        tap = sum(r["tap"] != refs[r["ref_layer_index"]]["tap"] for r in rows)
        if size or tap:
            c.print(
                f"{m['model']}: {size} of {len(rows)} rows pair maps of different sizes and {tap} pair different tap "
                "kinds; read each layer against its noise null (null_fe in compare_layers.csv) before its Δ"
            )
    c.print(s)
    for m in res.models:
        if m.get("note"):
            c.print(f"{m['model']}: {m['note']}", markup=False, highlight=False)
    c.print(f"wrote {res.layers_csv}, {res.models_csv}" + (f" and {res.png}" if res.png else ""))
    if res.networks_csv is not None:
        c.print(f"wrote {res.networks_csv} (one row per network: FE and the generalisation baselines)")


def _ci(v, lo, hi) -> str:
    if v is None or v != v:
        return "n/a"
    if lo is None or lo != lo:
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"


def _signed(v, lo, hi) -> str:
    if v is None or v != v:
        return "n/a"
    if lo is None or lo != lo:
        return f"{v:+.3f}"
    return f"{v:+.3f} [{lo:+.2f}, {hi:+.2f}]"


def comparison_table(res, level: float, stat: str = "fe"):
    """One table: a row per reference layer (and one for the network), per model its aligned layer, mean
    FE [CI], Δ vs the reference [CI] and Cohen's d."""
    from rich.table import Table

    est = "feature_entropy" if stat == "fe" else stat
    d_key = "cohens_d" if stat == "fe" else "cohens_d_rarefied"
    label = "FE" if stat == "fe" else "rarefied FE"
    names = [m["model"] for m in res.models]
    ref = names[0]
    t = Table(title=f"{label} per layer, aligned by relative depth with {ref} [{100 * level:g} % CI]")
    t.add_column("#", justify="right")
    t.add_column("depth", justify="right")
    t.add_column(f"{ref}\n{label}", justify="right")
    for n in names[1:]:
        t.add_column(f"{n}\nlayer", justify="right")
        t.add_column(f"{n}\n{label}", justify="right")
        t.add_column(f"{n}\nΔ {label}", justify="right")
        t.add_column(f"{n}\nd (p)", justify="right")
    by = {(r["model"], r["ref_layer_index"]): r for r in res.layers}
    for rl in (r for r in res.layers if r["model"] == ref):
        i = rl["ref_layer_index"]
        cells = [str(i), f"{rl['ref_relative_depth']:.2f}", _ci(rl[est], rl[f"{stat}_ci_low"], rl[f"{stat}_ci_high"])]
        for n in names[1:]:
            r = by[(n, i)]
            cells += [
                str(r["layer_index"]),
                _ci(r[est], r[f"{stat}_ci_low"], r[f"{stat}_ci_high"]),
                _signed(r.get(f"delta_{stat}"), r.get(f"delta_{stat}_ci_low"), r.get(f"delta_{stat}_ci_high")),
                _fmt(r.get(d_key), 2),
            ]
        t.add_row(*cells)
    m0 = res.models[0]
    cells = ["network", "", _ci(m0.get(f"net_{stat}"), m0.get(f"net_{stat}_ci_low"), m0.get(f"net_{stat}_ci_high"))]
    for m in res.models[1:]:
        p = m.get(f"p_net_{stat}")
        cells += [
            "all",
            _ci(m.get(f"net_{stat}"), m.get(f"net_{stat}_ci_low"), m.get(f"net_{stat}_ci_high")),
            _signed(m.get(f"delta_net_{stat}"), m.get(f"delta_net_{stat}_ci_low"), m.get(f"delta_net_{stat}_ci_high")),
            "p n/a" if p is None or p != p else f"p={p:.3g}",
        ]
    t.add_section()
    t.add_row(*cells)
    return t
