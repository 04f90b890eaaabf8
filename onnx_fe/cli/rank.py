"""`onnx-fe rank`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import QUIET, VERBOSE, _console, _set_verbosity, _verbosity, app


@app.command()
def rank(
    results: Path = typer.Argument(..., help="Results directory of `onnx-fe score` (or its results.h5)"),
    by: str = typer.Option(
        "feature_entropy",
        "--by",
        help="feature_entropy (the reference rule), ineffectiveness, mean_activation, apoz, weight_l1, hrank, "
        "activation_std or random (see `onnx-fe rank` in the README)",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of --by random"),
    classes: Optional[List[str]] = typer.Option(
        None,
        "--classes",
        help="Aggregate over these classes only, comma-separated or repeated (\\, for a comma in a name)",
        show_default="all",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output: a .csv/.json path or a directory",
        show_default="RESULTS/ranking-<by>.csv and .json",
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Rank each layer's units by importance from stored scores (no inference) → CSV + JSON (rank 0 = most important)."""
    from rich.table import Table

    from ..config import class_items
    from ..scores.ranking import rank as run_rank
    from ..scores.ranking import results_file

    _set_verbosity(quiet, verbose)
    r = run_rank(results, by=by, seed=seed, classes=class_items(classes))
    if output is None:
        base = results_file(results).parent / f"ranking-{by}"
    elif output.suffix.lower() in (".csv", ".json") or (not output.is_dir() and output.suffix):
        base = output
    else:
        base = output / f"ranking-{by}"
    csv_path, json_path = r.save(base)
    if _verbosity["quiet"]:
        return
    t = Table(title=f"units by {by}{f' (seed {seed})' if by == 'random' else ''}: most important first")
    for col in ("#", "layer", "units", "tied", "most important", "least important"):
        t.add_column(col, justify="right" if col in ("#", "units", "tied") else "left")
    for lr in r.layers:
        k = min(8, lr.channels)
        rest = min(8, lr.channels - k)
        t.add_row(
            str(lr.layer_index),
            lr.layer,
            str(lr.channels),
            str(lr.n_tied),
            " ".join(map(str, lr.order[:k])),
            (("… " if lr.channels > k + rest else "") + " ".join(map(str, lr.order[-rest:]))) if rest else "",
        )
    c = _console()
    c.print(t)
    c.print("tied: units whose score equals another unit's; among them the lower unit index ranks first")
    c.print(f"wrote {csv_path} and {json_path}")
