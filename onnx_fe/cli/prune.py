"""`onnx-fe prune`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import PreprocessOptions
from .app import QUIET, VERBOSE, _debug, _info, _set_verbosity, app
from .options import options, preprocess_group


@app.command()
@options(preprocess_group())
def prune(
    model: Path = typer.Argument(..., help="ONNX model file (never written to)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="The pruned model (.onnx); the removed channels go to the same name with .csv."
    ),
    units: Optional[List[str]] = typer.Option(
        None, "--units", help="Remove these units (and the channels coupled to them): LAYER_INDEX:UNIT,..."
    ),
    ranking: Optional[Path] = typer.Option(
        None, "--ranking", "-r", help="A ranking file written by `onnx-fe rank` (RANKING.csv or .json)."
    ),
    by: Optional[str] = typer.Option(None, "--by", help="The indicator to use when the ranking file holds several."),
    ratio: Optional[float] = typer.Option(
        None, "--ratio", help="Remove this fraction of every prunable group's channels, the lowest-ranked first."
    ),
    global_ratio: Optional[float] = typer.Option(
        None,
        "--global-ratio",
        help="Remove the lowest-ranked channels across all layers (one threshold on the within-layer rank) "
        "until the MACs have dropped by this fraction.",
    ),
    round_to: Optional[int] = typer.Option(
        None,
        "--round-to",
        help="With --ratio/--global-ratio: keep every pruned layer's channel count a multiple of N "
        "(fewer channels removed where needed; no layer loses all).",
    ),
    layers: Optional[List[str]] = typer.Option(
        None, "--layers", "-l", help="With --ranking: prune only the groups of these layers (index, name or glob)."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Run the original with the removed units masked beside the pruned model; report the gap.",
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Images for --verify (ImageFolder or .npz)", show_default="standard-normal inputs"
    ),
    images_per_class: Optional[int] = typer.Option(
        None, "--images-per-class", "-n", help="--data: images per class", show_default="all"
    ),
    samples: int = typer.Option(8, "--samples", help="--verify without --data: random inputs to compare on."),
    runs: int = typer.Option(10, "--latency-runs", help="Timed runs of each model (median); 0: no latency."),
    threads: int = typer.Option(1, "--threads", help="onnxruntime threads for the latency and --verify."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    *,
    preprocess: PreprocessOptions,
):
    """Remove conv channels and everything that depends on them: a smaller ONNX model (structural pruning)."""
    from ..experiments.prune import prune as run_prune

    _set_verbosity(quiet, verbose)
    res = run_prune(
        model,
        output,
        units=units,
        ranking=ranking,
        ratio=ratio,
        global_ratio=global_ratio,
        layers=layers,
        by=by,
        round_to=round_to,
        verify=verify,
        data=data,
        input_size=preprocess.input_size,
        layout=preprocess.layout,
        color=preprocess.color,
        scale=preprocess.scale,
        mean=preprocess.mean,
        std=preprocess.std,
        images_per_class=images_per_class,
        verify_samples=samples,
        latency_runs=runs,
        threads=threads,
    )
    for g in res.groups:
        state = "pruned as one" if g.id in res.pruned_groups else ("kept whole" if g.prunable else "unprunable")
        line = f"  {g.describe()}: {state}" + (f" ({g.reason})" if g.reason else "")
        (_info if g.id in res.pruned_groups and len(g.layers) > 1 else _debug)(line)
    unprunable = [g for g in res.groups if not g.prunable]
    if unprunable:
        _info(f"{len(unprunable)} group(s) cannot be pruned (-v lists them): e.g. {unprunable[0].reason}")
    for line in res.lines():
        _info(line)
    _info(
        f"pruned model written to {res.output}"
        + (f" (weights in {res.external_data})" if res.external_data else "")
        + f"; removed channels in {res.csv}"
    )
