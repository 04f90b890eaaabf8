"""`onnx-fe compare`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import DataOptions, MethodOptions, PreprocessOptions, RunnerOptions, ScoreConfig
from ..errors import OnnxFeError
from .app import QUIET, VERBOSE, _console, _fmt, _log, _set_verbosity, _verbosity, app
from .options import BATCH, LAYERS, METHOD, RUNNER, WAIT, WORKERS, images_group, options, preprocess_group


@app.command()
@options(METHOD, images_group(), preprocess_group(), RUNNER)
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
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    method: MethodOptions,
    images: DataOptions,
    preprocess: PreprocessOptions,
    runner: RunnerOptions,
):
    """Score several networks on the same data; per-layer feature entropy and birth rate side by side."""
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
            c.print(f"{m['model']}: {m['note']}", markup=False, highlight=False)
    c.print(f"wrote {res.layers_csv}, {res.models_csv}" + (f" and {res.png}" if res.png else ""))
