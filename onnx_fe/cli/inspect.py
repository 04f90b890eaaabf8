"""`onnx-fe inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ModelError
from .app import COLOR, INPUT_SIZE, LAYOUT, QUIET, VERBOSE, _set_verbosity, app


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model file"),
    input_size: Optional[str] = INPUT_SIZE,
    layout: str = LAYOUT,
    color: Optional[str] = COLOR,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """List every Conv layer: index, name, chain, channels, output size, scorable or why not."""
    from rich.console import Console
    from rich.table import Table

    from ..experiments.score import inspect_model

    _set_verbosity(quiet, verbose)

    lm = inspect_model(model, input_size=input_size, layout=layout, color=color)
    units = lm.units
    t = Table(title=str(model))
    for col in ("#", "name", "chain", "tap", "channels", "output", "scorable"):
        t.add_column(col)
    for u in units:
        t.add_row(
            str(u.index),
            u.name,
            u.chain_str,
            u.tap_kind,
            str(u.channels),
            f"{u.height}×{u.width}",
            "yes" if u.scorable else f"no: {u.reason}",
        )
    console = Console(width=max(120, Console().width))
    console.print(t)
    for line in lm.skipped:  # convolutions that are not layers, and why
        console.print(line)
    n_ok = sum(u.scorable for u in units)
    if not units:
        raise ModelError(
            "no Conv layer that can be scored in this model" if lm.skipped else "no Conv layer in this model"
        )
    else:
        n_pre = sum(u.scorable and not u.activated for u in units)
        console.print(
            f"{n_ok} of {len(units)} layers scorable"
            + (f"; {n_pre} of them are taken before their activation (signed maps)" if n_pre else "")
            + "; layers are numbered in a canonical order of the conv graph (see docs/method.md)"
        )
    if not n_ok:
        raise ModelError(f"none of the {len(units)} Conv layers of this model can be scored (see the table above)")
