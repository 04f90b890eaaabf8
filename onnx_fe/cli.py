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
SCALE = typer.Option(1 / 255, "--scale", help="Pixel scale before mean/std.")
MEAN = typer.Option(None, "--mean", help="Mean to subtract: one value or one per channel, comma-separated.")
STD = typer.Option(None, "--std", help="Std to divide by: one value or one per channel.")
SEED = typer.Option(0, "--seed", help="Seed of the per-class image choice.")
BATCH = typer.Option(32, "--batch-size", "-b", help="Images per inference batch.")
WORKERS = typer.Option(None, "--workers", "-j", help="Threads for birth points [all cores].")
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
    threshold: Optional[int] = typer.Option(None, "--threshold", help="Last step that counts as a birth point [cubical 75, clique 50]."),
    max_edge_density: Optional[float] = typer.Option(None, "--max-edge-density", help="clique: edge density cap [0.8]."),
    images_per_class: int = typer.Option(100, "--images-per-class", "-n", help="Images per class (chosen deterministically)."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", help="Only these classes (comma-separated or repeated)."),
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


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def _console():
    from rich.console import Console

    return Console(stderr=False, width=max(120, Console().width))


def _log(msg: str) -> None:
    """Warnings and notes are shown unless --quiet; the rest only with --verbose."""
    (_info if msg.startswith(("warning", "note")) else _debug)(msg)


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


@app.command()
def rank(
    results: Path = typer.Argument(..., help="Results directory of `onnx-fe score` (or its results.h5)."),
    by: str = typer.Option("feature_entropy", "--by", help="feature_entropy (the reference rule), ineffectiveness, "
                           "mean_activation, apoz, weight_l1 or random."),
    seed: int = typer.Option(0, "--seed", help="Seed of --by random."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", help="Aggregate over these classes only (default: all)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output: a .csv/.json path or a directory "
                                          "(default: RESULTS/ranking-<by>.csv and .json)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Rank each layer's units by importance from stored scores (no inference) → CSV + JSON (rank 0 = most important)."""
    from rich.table import Table

    from .ranking import rank as run_rank
    from .ranking import results_file

    _set_verbosity(quiet, verbose)
    r = run_rank(results, by=by, seed=seed, classes=_split_list(classes))
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
        t.add_row(str(lr.layer_index), lr.layer, str(lr.channels), str(lr.n_tied), " ".join(map(str, lr.order[:k])),
                  (("… " if lr.channels > k + rest else "") + " ".join(map(str, lr.order[-rest:]))) if rest else "")
    c = _console()
    c.print(t)
    c.print("tied: units whose score equals another unit's; among them the lower unit index ranks first")
    c.print(f"wrote {csv_path} and {json_path}")


@app.command()
def ablate(
    model: Path = typer.Argument(..., help="ONNX model file (first output: logits or probabilities, (N, classes))."),
    data: Path = typer.Argument(..., help="Labelled data: ImageFolder or .npz; class index k must be output index k."),
    ranking: Optional[Path] = typer.Option(None, "--ranking", "-r", help="A ranking CSV/JSON from `onnx-fe rank`, "
                                           "or a results directory (rankings are then computed for --by)."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", "-l", help="Layer(s) to ablate, each on its own: "
                                              "index, name or glob (default: the last ranked layer)."),
    steps: Optional[int] = typer.Option(None, "--steps", "-s", help="Evaluate at this many evenly spaced numbers "
                                        "of removed units (default: every unit)."),
    by: Optional[List[str]] = typer.Option(None, "--by", help="Indicators to compare, comma-separated or repeated "
                                           "(default: feature_entropy, mean_activation, apoz, weight_l1, random)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random ranking."),
    random_repeats: int = typer.Option(1, "--random-repeats", help="Random rankings (seeds seed, seed+1, …) to average."),
    images_per_class: Optional[int] = typer.Option(None, "--images-per-class", "-n", help="Images per class (default: all)."),
    input_size: Optional[str] = INPUT_SIZE,
    scale: Optional[float] = typer.Option(None, "--scale", help="Pixel scale (default: the ranking's scoring run's, else 1/255)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Mean to subtract (default: the scoring run's, else 0)."),
    std: Optional[str] = typer.Option(None, "--std", help="Std to divide by (default: the scoring run's, else 1)."),
    color: Optional[str] = COLOR,
    layout: str = LAYOUT,
    batch_size: int = BATCH,
    device: str = DEVICE,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output directory "
                                          "(default: onnx-fe-results/<model name>/ablation)."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw ablation.png (no matplotlib needed)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Cumulative ablation: zero ranked units (graph rewrite) and plot accuracy vs units removed."""
    from rich.table import Table

    from .ablation import ablate as run_ablate
    from .data import parse_floats, parse_size

    _set_verbosity(quiet, verbose)
    res = run_ablate(
        model, data, ranking, output, layers=layer, steps=steps, by=_split_list(by), seed=seed,
        random_repeats=random_repeats, images_per_class=images_per_class, input_size=parse_size(input_size),
        layout=layout, color=color, scale=scale, mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
        batch_size=batch_size, device=device, plot=not no_plot, progress=not _verbosity["quiet"], log=_log)
    if _verbosity["quiet"]:
        return
    b = res.baseline
    t = Table(title=f"cumulative ablation — unablated top-1 {b['top1']:.4f} on {b['n_images']} images "
                    "(AUC = mean top-1 over the fraction of units removed)")
    for col in ("#", "layer", "indicator", "AUC most important first", "AUC least important first", "gap",
                "top-1 at half removed (most / least first)"):
        t.add_column(col, justify="left" if col in ("layer", "indicator") else "right")
    for s in res.summary:
        t.add_row(str(s["layer_index"]), s["layer"], s["by"] + (f" ×{s['repeats']}" if s["repeats"] > 1 else ""),
                  _fmt(s["auc_top1_most_first"]), _fmt(s["auc_top1_least_first"]), _fmt(s["auc_gap"]),
                  f"{_fmt(s['top1_half_removed_most_first'])} / {_fmt(s['top1_half_removed_least_first'])}")
    c = _console()
    c.print(t)
    c.print(f"wrote {res.csv}, {res.summary_csv}" + (f" and {res.png}" if res.png else ""))


@app.command()
def compare(
    paths: List[Path] = typer.Argument(..., help="ONNX models, then the data (ImageFolder directory or .npz)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output directory "
                                          "(default: onnx-fe-results/compare); each model is scored into a sub-folder."),
    layers: Optional[List[str]] = typer.Option(None, "--layers", "-l", help="Layers to score in every model: index, "
                                               "name or glob (default: all scorable)."),
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

    from .comparison import compare as run_compare
    from .data import parse_floats, parse_size

    _set_verbosity(quiet, verbose)
    if len(paths) < 2:
        raise OnnxFeError("compare needs one or more models followed by the data")
    res = run_compare(
        paths[:-1], paths[-1], output, accuracy=not no_accuracy, plot=not no_plot, log=_debug,
        progress=not _verbosity["quiet"], layers=layers, method=method, images_per_class=images_per_class, seed=seed,
        input_size=parse_size(input_size), layout=layout, color=color, scale=scale,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"), batch_size=batch_size, device=device,
        workers=workers)
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
        s.add_row(m["model"], str(m["layers"]), m["last_layer"], _fmt(m["last_feature_entropy"]),
                  _fmt(m["last_birth_rate"]), _fmt(m["top1"]), str(m["n_images"]))
    c = _console()
    c.print(t)
    c.print(s)
    for m in res.models:
        if m.get("note"):
            c.print(f"{m['model']}: {m['note']}")
    c.print(f"wrote {res.layers_csv}, {res.models_csv}" + (f" and {res.png}" if res.png else ""))


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
