"""`onnx-fe ablate`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import PreprocessOptions, RunnerOptions, split_items
from .app import QUIET, VERBOSE, _console, _fmt, _log, _set_verbosity, _verbosity, app
from .options import BATCH, RUNNER, WAIT, options, preprocess_group


@app.command()
@options(preprocess_group(from_run=True), RUNNER)
def ablate(
    model: Path = typer.Argument(..., help="ONNX model file (first output: logits or probabilities, (N, classes))"),
    data: Path = typer.Argument(..., help="Labelled data: ImageFolder or .npz; class index k must be output index k"),
    ranking: Optional[Path] = typer.Option(
        None,
        "--ranking",
        "-r",
        help="A ranking CSV/JSON from `onnx-fe rank`, or a results directory (rankings are then computed for --by)",
        show_default="the results of `onnx-fe score MODEL` in its default output",
    ),
    layer: Optional[List[str]] = typer.Option(
        None,
        "--layer",
        "-l",
        help="Layer(s) to ablate, each on its own: index, name or glob",
        show_default="the last ranked layer",
    ),
    steps: Optional[int] = typer.Option(
        None,
        "--steps",
        "-s",
        help="Evaluate at this many evenly spaced numbers of removed units",
        show_default="every unit",
    ),
    by: Optional[List[str]] = typer.Option(
        None,
        "--by",
        help="Indicators to compare, comma-separated or repeated",
        show_default="feature_entropy, mean_activation, apoz, weight_l1, random",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random ranking"),
    random_repeats: int = typer.Option(
        1, "--random-repeats", help="Random rankings (seeds seed, seed+1, …) to average"
    ),
    images_per_class: Optional[int] = typer.Option(
        None, "--images-per-class", "-n", help="Images per class", show_default="all"
    ),
    batch_size: int = BATCH,
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Output directory", show_default="ablation/ beside the --ranking results"
    ),
    wait: bool = WAIT,
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw ablation.png (no matplotlib needed)"),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
):
    """Cumulative ablation: zero ranked units (graph rewrite) and plot accuracy vs units removed."""
    from rich.table import Table

    from ..experiments.ablate import ablate as run_ablate

    _set_verbosity(quiet, verbose)
    res = run_ablate(
        model,
        data,
        ranking,
        output,
        layers=layer,
        steps=steps,
        by=list(split_items(by, "--by")) if by else None,
        seed=seed,
        random_repeats=random_repeats,
        images_per_class=images_per_class,
        input_size=preprocess.input_size,
        layout=preprocess.layout,
        color=preprocess.color,
        scale=preprocess.scale,
        mean=preprocess.mean,
        std=preprocess.std,
        batch_size=batch_size,
        device=runner.device,
        plot=not no_plot,
        progress=not _verbosity["quiet"],
        log=_log,
        wait=wait,
    )
    if _verbosity["quiet"]:
        return
    b = res.baseline
    t = Table(
        title=f"cumulative ablation — unablated top-1 {b['top1']:.4f} on {b['n_images']} images "
        "(AUC = mean top-1 over the fraction of units removed)"
    )
    for col in (
        "#",
        "layer",
        "indicator",
        "AUC most important first",
        "AUC least important first",
        "gap",
        "top-1 at half removed (most / least first)",
    ):
        t.add_column(col, justify="left" if col in ("layer", "indicator") else "right")
    for s in res.summary:
        t.add_row(
            str(s["layer_index"]),
            s["layer"],
            s["by"] + (f" ×{s['repeats']}" if s["repeats"] > 1 else ""),
            _fmt(s["auc_top1_most_first"]),
            _fmt(s["auc_top1_least_first"]),
            _fmt(s["auc_gap"]),
            f"{_fmt(s['top1_half_removed_most_first'])} / {_fmt(s['top1_half_removed_least_first'])}",
        )
    c = _console()
    c.print(t)
    c.print(f"wrote {res.csv}, {res.summary_csv}" + (f" and {res.png}" if res.png else ""))
