"""`onnx-fe compare`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import OnnxFeError
from .app import (
    BATCH,
    COLOR,
    DEVICE,
    INPUT_SIZE,
    LAYOUT,
    MEAN,
    QUIET,
    SCALE,
    SEED,
    STD,
    VERBOSE,
    WORKERS,
    _console,
    _debug,
    _fmt,
    _set_verbosity,
    _verbosity,
    app,
)


@app.command()
def compare(
    paths: List[Path] = typer.Argument(..., help="ONNX models, then the data (ImageFolder directory or .npz)."),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Output directory (default: onnx-fe-results/compare); each model is scored into a sub-folder.",
    ),
    layers: Optional[List[str]] = typer.Option(
        None, "--layers", "-l", help="Layers to score in every model: index, name or glob (default: all scorable)."
    ),
    method: str = typer.Option("cubical", "--method", "-m", help="cubical (default) or clique."),
    images_per_class: int = typer.Option(100, "--images-per-class", "-n", help="Images per class."),
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
    no_accuracy: bool = typer.Option(False, "--no-accuracy", help="Do not measure each model's accuracy."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw compare.png (no matplotlib needed)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Score several networks on the same data; per-layer feature entropy and birth rate side by side."""
    from rich.table import Table

    from ..data import parse_floats, parse_size
    from ..experiments.compare import compare as run_compare

    _set_verbosity(quiet, verbose)
    if len(paths) < 2:
        raise OnnxFeError("compare needs one or more models followed by the data")
    res = run_compare(
        paths[:-1],
        paths[-1],
        output,
        accuracy=not no_accuracy,
        plot=not no_plot,
        log=_debug,
        progress=not _verbosity["quiet"],
        layers=layers,
        method=method,
        images_per_class=images_per_class,
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
    )
    if _verbosity["quiet"]:
        return
    names = [m["model"] for m in res.models]
    t = Table(title="per layer: mean feature entropy / birth rate (over units and classes)")
    t.add_column("#", justify="right")
    for n in names:
        t.add_column(f"{n}\nFE", justify="right")
        t.add_column(f"{n}\nBR", justify="right")
    by = {(r["model"], r["layer_index"]): r for r in res.layers}
    for i in sorted({r["layer_index"] for r in res.layers}):
        cells = [str(i)]
        for n in names:
            r = by.get((n, i))
            cells += [_fmt(r["feature_entropy"]), _fmt(r["birth_rate"])] if r else ["—", "—"]
        t.add_row(*cells)
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
    c.print(t)
    c.print(s)
    for m in res.models:
        if m.get("note"):
            c.print(f"{m['model']}: {m['note']}")
    c.print(f"wrote {res.layers_csv}, {res.models_csv}" + (f" and {res.png}" if res.png else ""))
