"""`onnx-fe score`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import DataOptions, MethodOptions, PreprocessOptions, RunnerOptions, ScoreConfig, StatisticsOptions
from .app import QUIET, VERBOSE, _log, _set_verbosity, _verbosity, app
from .options import (
    BATCH,
    CLUSTER,
    CLUSTER_OPTION,
    CONTROL,
    CONTROL_SEED,
    LAYERS,
    METHOD,
    RUNNER,
    SCHEDULER,
    SHARD,
    STATISTICS,
    WAIT,
    WORKERS,
    images_group,
    options,
    preprocess_group,
)


@app.command()
@options(METHOD, images_group(), preprocess_group(), RUNNER, STATISTICS)
def score(
    model: Path = typer.Argument(..., help="ONNX model file"),
    data: Path = typer.Argument(
        ..., help="ImageFolder directory (one sub-folder per class) or .npz with x, y[, classes]"
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output directory",
        show_default="onnx-fe-results/<model name>-<hash of its path>",
    ),
    layers: Optional[List[str]] = LAYERS,
    batch_size: int = BATCH,
    workers: Optional[int] = WORKERS,
    shard_size: Optional[int] = SHARD,
    scheduler: Optional[str] = SCHEDULER,
    cluster: Optional[str] = CLUSTER,
    cluster_option: Optional[List[str]] = CLUSTER_OPTION,
    keep_activations: bool = typer.Option(
        False, "--keep-activations", help="Also store every unit's maps in results.h5"
    ),
    hrank: bool = typer.Option(
        True,
        "--hrank/--no-hrank",
        help="Compute the HRank baseline (the matrix rank of every map: one SVD a map, about half the time of a "
        "224² run); --no-hrank leaves its column empty (rank --by hrank and validate then do without it)",
    ),
    control: Optional[str] = CONTROL,
    control_seed: int = CONTROL_SEED,
    report: bool = typer.Option(
        False, "--report", help="Also write OUTPUT/report.html (needs matplotlib; see `onnx-fe report`)"
    ),
    wait: bool = WAIT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    method: MethodOptions,
    images: DataOptions,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
    statistics: StatisticsOptions,
):
    """Score every conv unit: birth points, feature entropy per class → results.h5 + scores.csv."""
    _set_verbosity(quiet, verbose)
    if report:  # fail before the long work when the report could not be drawn
        from ..report.build import check_can_report

        check_can_report()
    cfg = ScoreConfig.create(
        model,
        data,
        output,
        layers=layers,
        method=method,
        images=images,
        preprocess=preprocess,
        runner=runner,
        batch_size=batch_size,
        workers=workers,
        keep_activations=keep_activations,
        hrank=hrank,
        statistics=statistics,
        control=control,
        control_seed=control_seed,
        shard_size=shard_size,
        scheduler=scheduler,
        cluster=cluster,
        cluster_options=cluster_option,
    )
    from ..execution import prestart_for

    prestart_for(cfg.workers, None, cfg.scheduler, cfg.cluster)  # -j N: the workers' server loads as this one does
    from ..experiments.score import run

    result = run(cfg, progress=not _verbosity["quiet"], log=_log, wait=wait)
    if report:
        from .report import write_report

        write_report(result.output, result.output / "report.html")
    if _verbosity["quiet"]:
        return
    from rich.console import Console
    from rich.table import Table

    level = f"{100 * cfg.statistics.ci_level:g} %"
    t = Table(
        title=f"per layer: mean over units of the class-averaged scores, [{level} CI over units] — device: {result.device}"
    )
    cols = ["#", "layer", "tap", "units", "map", "FE", "rarefied FE", "birth rate", "noise FE", "ρ FE~act", "ρ FE~BR"]
    if result.control is not None:
        cols += ["control FE", "Δ FE (trained − control)"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "tap") else "right")
    for r in result.layers:
        cells = [
            str(r["layer_index"]),
            r["layer"],
            r["tap"],
            str(r["n_units"]),
            f"{r['height']}×{r['width']}",
            _ci(r, "fe"),
            _ci(r, "fe_rarefied"),
            _ci(r, "birth_rate"),
            _num(r.get("null_fe")),
            _ci(r, "rho_fe_mean_activation"),
            _ci(r, "rho_fe_birth_rate"),
        ]
        if result.control is not None:
            cells += [_num(r.get("control_fe")), _ci(r, "delta_fe")]
        t.add_row(*cells)
    c = Console(stderr=False, width=max(120 + 10 * (len(cols) - 9), Console().width))  # room for the CIs
    c.print(t)
    c.print(
        "noise FE: what structureless noise maps of the layer's size get; compare layers only against it and a control"
    )
    c.print(
        "ρ FE~act, ρ FE~BR: Spearman's ρ over the layer's units of FE against the mean activation and the birth rate "
        "[CI over units]; near ±1, FE orders the units as that cheap statistic does and says little beyond it"
    )
    for note in result.notes:
        c.print(note, markup=False, highlight=False, soft_wrap=True)
    c.print(
        f"wrote {result.scores_csv}, {result.layers_csv} and {result.results_h5}"
        + (" (reused)" if result.reused else "")
    )


def _num(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def _ci(r: dict, key: str) -> str:
    lo, hi = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    if lo is None or lo != lo:
        return _num(r.get(key))
    return f"{_num(r.get(key))} [{lo:.2f}, {hi:.2f}]"
