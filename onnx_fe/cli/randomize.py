"""`onnx-fe randomize`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import QUIET, VERBOSE, _debug, _info, _set_verbosity, app


@app.command()
def randomize(
    model: Path = typer.Argument(..., help="ONNX model file."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the twin (.onnx)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weight draw; the same seed gives a bit-identical file."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Write an untrained twin: same graph, convs re-drawn He-normal, biases 0, BatchNormalization at identity."""
    from ..model.randomize import randomize as run_randomize

    _set_verbosity(quiet, verbose)
    rep = run_randomize(model, output, seed=seed)
    for d in rep.draws:
        _debug(f"  {d.tensor}: shape {d.shape}, fan-in {d.fan_in}, std {d.std:.4g} ({', '.join(d.convs)})")
    for line in rep.lines():
        _info(line)
    _info(f"twin written to {rep.output}" + (f" (weights in {rep.external_data})" if rep.external_data else ""))
