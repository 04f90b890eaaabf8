"""`onnx-fe inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import COLOR, INPUT_SIZE, LAYOUT, QUIET, VERBOSE, _info, _set_verbosity, app


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file."),
    input_size: Optional[str] = INPUT_SIZE,
    layout: str = LAYOUT,
    color: Optional[str] = COLOR,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """List every Conv layer: index, name, chain, channels, output size, scorable or why not."""
    from rich.console import Console
    from rich.table import Table

    from ..experiments.score import inspect as run_inspect

    _set_verbosity(quiet, verbose)

    units = run_inspect(model, input_size=input_size, layout=layout, color=color)
    t = Table(title=str(model))
    for col in ("#", "name", "chain", "channels", "output", "scorable"):
        t.add_column(col)
    for u in units:
        t.add_row(
            str(u.index),
            u.name,
            u.chain_str,
            str(u.channels),
            f"{u.height}×{u.width}",
            "yes" if u.scorable else f"no: {u.reason}",
        )
    Console(width=max(120, Console().width)).print(t)
    if not units:
        _info("no Conv layer in this model")
