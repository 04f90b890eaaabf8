"""The `onnx-fe` command line: parses options, calls the API, reports, exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import OnnxFeError

try:  # typer >= 0.20 vendors click
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # older typer re-uses click
    from click.exceptions import ClickException as _UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Feature entropy of every convolutional unit of an ONNX CNN (Zhao & Zhang, ICLR 2022).",
)

_verbosity = {"quiet": False, "verbose": False}


def _err(msg: str) -> None:
    sys.stderr.write(f"onnx-fe: error: {msg}\n")


def _info(msg: str) -> None:
    if not _verbosity["quiet"]:
        sys.stderr.write(msg + "\n")


def _debug(msg: str) -> None:
    if _verbosity["verbose"] and not _verbosity["quiet"]:
        sys.stderr.write(msg + "\n")


LAYERS = typer.Option(None, "--layers", "-l", help="Layers to score: index, name or glob; comma-separated or repeated.")
INPUT_SIZE = typer.Option(None, "--input-size", help="HxW to resize images to; required when the model's spatial dims are dynamic.")
LAYOUT = typer.Option("auto", "--layout", help="Model input layout: auto, nchw or nhwc.")
COLOR = typer.Option(None, "--color", help="rgb, bgr or gray (default: from the model's channel count).")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA if it really loads, else CPU), cpu or cuda.")
QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Say more about what is done.")


def _set_verbosity(quiet: bool, verbose: bool) -> None:
    _verbosity["quiet"] |= quiet
    _verbosity["verbose"] |= verbose


@app.callback()
def _root(
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    _verbosity["quiet"], _verbosity["verbose"] = quiet, verbose


@app.command()
def score(
    model: Path = typer.Argument(..., help="ONNX model file."),
    data: Path = typer.Argument(..., help="ImageFolder directory (one sub-folder per class) or .npz with x, y[, classes]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output directory [default: onnx-fe-results/<model name>]."),
    layers: Optional[List[str]] = LAYERS,
    method: str = typer.Option("cubical", "--method", "-m", help="cubical (default) or clique (the paper's construction)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="cubical: steps of the size-normalised filtration [100]."),
    threshold: Optional[int] = typer.Option(None, "--threshold", help="Last step that counts as a birth point [50]."),
    max_edge_density: Optional[float] = typer.Option(None, "--max-edge-density", help="clique: edge density cap [0.8]."),
    images_per_class: int = typer.Option(100, "--images-per-class", "-n", help="Images per class (chosen deterministically)."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", help="Only these classes (comma-separated or repeated)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-class image choice."),
    input_size: Optional[str] = INPUT_SIZE,
    scale: float = typer.Option(1 / 255, "--scale", help="Pixel scale before mean/std."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Mean to subtract: one value or one per channel, comma-separated."),
    std: Optional[str] = typer.Option(None, "--std", help="Std to divide by: one value or one per channel."),
    color: Optional[str] = COLOR,
    layout: str = LAYOUT,
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per inference batch."),
    device: str = DEVICE,
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Threads for birth points [all cores]."),
    keep_activations: bool = typer.Option(False, "--keep-activations", help="Also store every unit's maps in results.h5."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Score every conv unit: birth points, feature entropy per class → results.h5 + scores.csv."""
    from .data import parse_floats, parse_size
    from .pipeline import score as run_score

    _set_verbosity(quiet, verbose)

    result = run_score(
        model, data, output, layers=layers, method=method, resolution=resolution, threshold=threshold,
        max_edge_density=max_edge_density, images_per_class=images_per_class, classes=classes, seed=seed,
        input_size=parse_size(input_size), layout=layout, color=color, scale=scale,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"), batch_size=batch_size, device=device,
        workers=workers, keep_activations=keep_activations, progress=not _verbosity["quiet"], log=_debug,
    )
    if _verbosity["quiet"]:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"feature entropy per layer (mean over units and classes) — device: {result.device}")
    for col in ("#", "layer", "chain", "units", "map", "feature entropy", "birth rate"):
        t.add_column(col, justify="right" if col in ("#", "units", "feature entropy", "birth rate") else "left")
    for r in result.summary:
        t.add_row(str(r["layer_index"]), r["layer"], r["chain"], str(r["units"]), r["size"],
                  f"{r['feature_entropy']:.3f}", f"{r['birth_rate']:.3f}")
    c = Console(stderr=False, width=max(120, Console().width))
    c.print(t)
    c.print(f"wrote {result.scores_csv} and {result.results_h5}" + (" (reused)" if result.reused else ""))


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

    from .data import parse_size
    from .pipeline import inspect as run_inspect

    _set_verbosity(quiet, verbose)

    units = run_inspect(model, input_size=parse_size(input_size), layout=layout, color=color)
    t = Table(title=str(model))
    for col in ("#", "name", "chain", "channels", "output", "scorable"):
        t.add_column(col)
    for u in units:
        t.add_row(str(u.index), u.name, u.chain_str, str(u.channels), f"{u.height}×{u.width}",
                  "yes" if u.scorable else f"no: {u.reason}")
    Console(width=max(120, Console().width)).print(t)
    if not units:
        _info("no Conv layer in this model")


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and a non-zero exit, never a traceback."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="onnx-fe")
        return rv if isinstance(rv, int) else 0
    except OnnxFeError as e:
        _err(str(e))
        return 2
    except typer.Exit as e:
        return e.exit_code
    except _UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `onnx-fe`: help was asked for in effect
            sys.stderr.write(e.format_message() + "\n")
            return 0
        _err(e.format_message())
        return 2
    except (KeyboardInterrupt, typer.Abort):
        _err("interrupted; no result was completed (run the same command again to resume)")
        return 130
    except MemoryError:
        _err("out of memory; try a smaller --batch-size")
        return 1


if __name__ == "__main__":
    sys.exit(main())
