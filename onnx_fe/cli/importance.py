"""`onnx-fe importance`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from ..config import DataOptions, PreprocessOptions, RunnerOptions, ScoreConfig, StatisticsOptions
from .app import QUIET, VERBOSE, _log, _set_verbosity, _verbosity, app
from .options import (
    BATCH,
    RUNNER,
    SCHEDULER,
    SHARD,
    STATISTICS,
    WAIT,
    WORKERS,
    OptionGroup,
    images_group,
    options,
    preprocess_group,
)

# the statistics options that apply here (no rarefaction: that is feature entropy's)
IMPORTANCE_STATISTICS = OptionGroup(
    "statistics", tuple(p for p in STATISTICS.params if p.name != "rarefy_k"), StatisticsOptions.build
)


@app.command()
@options(images_group(), preprocess_group(), RUNNER, IMPORTANCE_STATISTICS)
def importance(
    model: Path = typer.Argument(..., help="ONNX model file"),
    data: Path = typer.Argument(
        ..., help="ImageFolder directory (one sub-folder per class) or .npz with x, y[, classes]"
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output directory",
        show_default="onnx-fe-results/<model name>-<hash of its path>/importance",
    ),
    layers: Optional[List[str]] = typer.Option(
        None,
        "--layers",
        "-l",
        help="Layers to measure: index, name or glob; comma-separated or repeated",
        show_default="all scorable",
    ),
    units_per_layer: Optional[int] = typer.Option(
        None,
        "--units-per-layer",
        help="Measure this many units per layer, drawn with --seed (for large networks)",
        show_default="all",
    ),
    batch_size: int = BATCH,
    workers: Optional[int] = WORKERS,
    shard_size: Optional[int] = SHARD,
    scheduler: Optional[str] = SCHEDULER,
    wait: bool = WAIT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    images: DataOptions,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
    statistics: StatisticsOptions,
):
    """Measure each unit's importance: zero it alone and record the change of loss, top-1 and output
    → importance.csv + importance.h5."""
    from ..experiments.importance import ImportanceConfig, run

    _set_verbosity(quiet, verbose)
    sc = ScoreConfig.create(
        model,
        data,
        output,
        layers=layers,
        images=images,
        preprocess=preprocess,
        runner=runner,
        statistics=statistics,
        batch_size=batch_size,
        workers=workers,
        shard_size=shard_size,
        scheduler=scheduler,
    )
    cfg = ImportanceConfig.create(sc, units_per_layer)
    res = run(cfg, progress=not _verbosity["quiet"], log=_log, wait=wait)
    if _verbosity["quiet"]:
        return
    from rich.table import Table

    from .app import _console

    df = res.frame()
    classifier = res.output_kind == "classifier"
    title = f"per layer: mean over the measured units of the effect of zeroing one unit ({res.n_images} images)"
    t = Table(title=title + f" — device: {res.device}")
    cols = ["#", "layer", "units", "Δ loss", "max Δ loss (unit)", "Δ top-1", "Δ output"]
    if not classifier:
        cols = ["#", "layer", "units", "Δ output", "max Δ output (unit)"]
    for c in cols:
        t.add_column(c, justify="left" if c == "layer" else "right")
    for (idx, name), g in df.groupby(["layer_index", "layer"], sort=True):
        key = "delta_loss" if classifier else "delta_output"
        top = g.loc[g[key].idxmax()]
        cells = [str(idx), name, str(len(g))]
        if classifier:
            cells += [
                _num(g["delta_loss"].mean()),
                f"{_num(top['delta_loss'])} ({int(top['unit'])})",
                _num(g["delta_top1"].mean()),
                _num(g["delta_output"].mean()),
            ]
        else:
            cells += [_num(g["delta_output"].mean()), f"{_num(top['delta_output'])} ({int(top['unit'])})"]
        t.add_row(*cells)
    c = _console()
    c.print(t)
    if classifier:
        c.print(
            f"unmasked: top-1 {res.unmasked['top1']:.4f}, loss {res.unmasked['loss']:.4f}; Δ loss = loss with the unit "
            "zeroed − without (higher: the unit matters more), Δ top-1 = drop in top-1; per-unit CIs in the CSV"
        )
    for note in res.notes:
        if not note.startswith(("note", "warning")):
            c.print(note, markup=False, highlight=False, soft_wrap=True)
    c.print(f"wrote {res.csv}, {res.h5} and {res.json}" + (" (reused)" if res.reused else ""))


def _num(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"
