"""`onnx-fe score`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import DataOptions, MethodOptions, PreprocessOptions, RunnerOptions, ScoreConfig
from .app import QUIET, VERBOSE, _log, _set_verbosity, _verbosity, app
from .options import BATCH, LAYERS, METHOD, RUNNER, WORKERS, images_group, options, preprocess_group


@app.command()
@options(METHOD, images_group(), preprocess_group(), RUNNER)
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
        show_default="onnx-fe-results/<model name>",
    ),
    layers: Optional[List[str]] = LAYERS,
    batch_size: int = BATCH,
    workers: Optional[int] = WORKERS,
    keep_activations: bool = typer.Option(
        False, "--keep-activations", help="Also store every unit's maps in results.h5"
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    method: MethodOptions,
    images: DataOptions,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
):
    """Score every conv unit: birth points, feature entropy per class → results.h5 + scores.csv."""
    from ..experiments.score import run

    _set_verbosity(quiet, verbose)
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
    )
    result = run(cfg, progress=not _verbosity["quiet"], log=_log)
    if _verbosity["quiet"]:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"feature entropy per layer (mean over units and classes) — device: {result.device}")
    for col in ("#", "layer", "tap", "units", "map", "feature entropy", "birth rate"):
        t.add_column(col, justify="right" if col in ("#", "units", "feature entropy", "birth rate") else "left")
    for r in result.summary:
        t.add_row(
            str(r["layer_index"]),
            r["layer"],
            r["tap"],
            str(r["units"]),
            r["size"],
            f"{r['feature_entropy']:.3f}",
            f"{r['birth_rate']:.3f}",
        )
    c = Console(stderr=False, width=max(120, Console().width))
    c.print(t)
    c.print(f"wrote {result.scores_csv} and {result.results_h5}" + (" (reused)" if result.reused else ""))
