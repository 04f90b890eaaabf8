"""`onnx-fe score`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import (
    BATCH,
    COLOR,
    DEVICE,
    INPUT_SIZE,
    LAYERS,
    LAYOUT,
    MEAN,
    QUIET,
    SCALE,
    SEED,
    STD,
    VERBOSE,
    WORKERS,
    _debug,
    _set_verbosity,
    _verbosity,
    app,
)


@app.command()
def score(
    model: Path = typer.Argument(..., help="ONNX model file."),
    data: Path = typer.Argument(
        ..., help="ImageFolder directory (one sub-folder per class) or .npz with x, y[, classes]."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Output directory [default: onnx-fe-results/<model name>]."
    ),
    layers: Optional[List[str]] = LAYERS,
    method: str = typer.Option(
        "cubical", "--method", "-m", help="cubical (default) or clique (the paper's construction)."
    ),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", help="cubical: steps of the size-normalised filtration [100]."
    ),
    threshold: Optional[int] = typer.Option(
        None, "--threshold", help="Last step that counts as a birth point [cubical 75, clique 50]."
    ),
    max_edge_density: Optional[float] = typer.Option(
        None, "--max-edge-density", help="clique: edge density cap [0.8]."
    ),
    images_per_class: int = typer.Option(
        100, "--images-per-class", "-n", help="Images per class (chosen deterministically)."
    ),
    classes: Optional[List[str]] = typer.Option(
        None, "--classes", help="Only these classes (comma-separated or repeated)."
    ),
    seed: int = SEED,
    input_size: Optional[str] = INPUT_SIZE,
    scale: float = SCALE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    color: Optional[str] = COLOR,
    layout: str = LAYOUT,
    batch_size: int = BATCH,
    device: str = DEVICE,
    workers: Optional[int] = WORKERS,
    keep_activations: bool = typer.Option(
        False, "--keep-activations", help="Also store every unit's maps in results.h5."
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Score every conv unit: birth points, feature entropy per class → results.h5 + scores.csv."""
    from ..data import parse_floats, parse_size
    from ..experiments.score import score as run_score

    _set_verbosity(quiet, verbose)

    result = run_score(
        model,
        data,
        output,
        layers=layers,
        method=method,
        resolution=resolution,
        threshold=threshold,
        max_edge_density=max_edge_density,
        images_per_class=images_per_class,
        classes=classes,
        seed=seed,
        input_size=parse_size(input_size),
        layout=layout,
        color=color,
        scale=scale,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        batch_size=batch_size,
        device=device,
        workers=workers,
        keep_activations=keep_activations,
        progress=not _verbosity["quiet"],
        log=_debug,
    )
    if _verbosity["quiet"]:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"feature entropy per layer (mean over units and classes) — device: {result.device}")
    for col in ("#", "layer", "chain", "units", "map", "feature entropy", "birth rate"):
        t.add_column(col, justify="right" if col in ("#", "units", "feature entropy", "birth rate") else "left")
    for r in result.summary:
        t.add_row(
            str(r["layer_index"]),
            r["layer"],
            r["chain"],
            str(r["units"]),
            r["size"],
            f"{r['feature_entropy']:.3f}",
            f"{r['birth_rate']:.3f}",
        )
    c = Console(stderr=False, width=max(120, Console().width))
    c.print(t)
    c.print(f"wrote {result.scores_csv} and {result.results_h5}" + (" (reused)" if result.reused else ""))
