"""`onnx-fe report`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import OptionError
from .app import QUIET, VERBOSE, _debug, _info, _set_verbosity, _split_list, _verbosity, app


def _ints(values: Optional[List[str]], option: str) -> Optional[List[int]]:
    items = _split_list(values)
    if not items:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise OptionError(f"{option} takes layer indices (integers), got {', '.join(items)}") from None


def write_report(results, output=None, **kwargs) -> Path:
    """Run the report with a progress bar unless --quiet; say where it went and how large it is."""
    from ..report.build import report as run_report

    res = run_report(results, output, progress=not _verbosity["quiet"], log=_info, **kwargs)
    _info(f"wrote {res.path} ({res.size / 1e6:.2f} MB)")
    return res.path


@app.command()
def report(
    results: List[Path] = typer.Argument(
        ...,
        help="Results directories of `onnx-fe score` (or their results.h5), or a `compare` output directory; "
        "several are shown side by side.",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="HTML file to write",
        show_default="report.html in the results directory (./report.html for several)",
    ),
    ablation: Optional[List[Path]] = typer.Option(
        None,
        "--ablation",
        help="Directory written by `onnx-fe ablate` whose curves to draw (repeatable)",
        show_default="none",
    ),
    validity: Optional[List[Path]] = typer.Option(
        None,
        "--validity",
        help="Directory written by `onnx-fe validate` to show (repeatable; RESULTS/validity is shown without it)",
        show_default="RESULTS/validity when it exists",
    ),
    heatmap_layer: Optional[List[str]] = typer.Option(
        None,
        "--heatmap-layer",
        help="Layer index(es) for the class × unit heatmap",
        show_default="the last scored layer",
    ),
    gallery: bool = typer.Option(True, "--gallery/--no-gallery", help="Draw the unit gallery (runs the model)"),
    gallery_units: int = typer.Option(3, "--gallery-units", help="Best and worst units shown per layer"),
    gallery_images: int = typer.Option(3, "--gallery-images", help="Images per shown class"),
    gallery_classes: Optional[List[str]] = typer.Option(
        None,
        "--gallery-classes",
        help="Classes whose images the gallery shows",
        show_default="the first and the middle class",
    ),
    gallery_layer: Optional[List[str]] = typer.Option(
        None,
        "--gallery-layer",
        help="Layer index(es) in the gallery",
        show_default="all, or 12 evenly spaced ones",
    ),
    model: Optional[Path] = typer.Option(
        None,
        "--model",
        help="The scored model, when the path stored in the results does not resolve from here",
        show_default="the path stored in the results",
    ),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="The scored data, when the path stored in the results does not resolve from here",
        show_default="the path stored in the results",
    ),
    device: str = typer.Option("cpu", "--device", help="Where the gallery's few maps are computed: cpu, cuda, auto"),
    title: Optional[str] = typer.Option(
        None, "--title", help="Page title", show_default="onnx-fe report: <model file or run names>"
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """One self-contained HTML report (tables, figures, unit gallery) of one or several finished runs."""
    _set_verbosity(quiet, verbose)
    _debug(f"report of {', '.join(str(r) for r in results)}")
    write_report(
        list(results),
        output,
        ablation=list(ablation or []),
        validity=list(validity or []),
        heatmap_layers=_ints(heatmap_layer, "--heatmap-layer"),
        gallery=gallery,
        gallery_units=gallery_units,
        gallery_images=gallery_images,
        gallery_classes=_split_list(gallery_classes),
        gallery_layers=_ints(gallery_layer, "--gallery-layer"),
        model=model,
        data=data,
        device=device,
        title=title,
    )
