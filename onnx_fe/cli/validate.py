"""`onnx-fe validate`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from .app import QUIET, VERBOSE, _console, _info, _set_verbosity, _verbosity, app


def _num(v, digits: int = 2) -> str:
    return f"{v:+.{digits}f}" if isinstance(v, float) and math.isfinite(v) else "–"


@app.command()
def validate(
    results: Path = typer.Argument(..., help="Results directory of `onnx-fe score` (or its results.h5)"),
    importance: Path = typer.Argument(
        ..., help="Directory of `onnx-fe importance` of the same model (or its importance.csv)"
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Directory for validity.csv, validity_bootstrap.csv and validity.json",
        show_default="RESULTS/validity (where `onnx-fe report RESULTS` finds it)",
    ),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples of the units (within each layer)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the cross-validation folds"),
    ci_level: float = typer.Option(0.95, "--ci-level", help="Level of the percentile bootstrap intervals"),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """How well each indicator predicts the units' measured importance: Spearman ρ per layer and pooled, FE's
    partial ρ given activity, and FE's cross-validated gain → validity.csv."""
    from rich.table import Table

    from ..experiments.validate import validate as run_validate

    _set_verbosity(quiet, verbose)
    res = run_validate(results, importance, output, resamples=resamples, seed=seed, ci_level=ci_level, log=_info)
    if _verbosity["quiet"]:
        return
    pct = f"{100 * ci_level:g} %"
    t = Table(
        title=f"pooled within-layer Spearman ρ with {res.target} ({res.method}, {res.n_units} units, "
        f"{pct} CI over {resamples} unit resamples)"
    )
    for col in ("indicator", "expected", "ρ", f"{pct} CI", "units"):
        t.add_column(col, justify="left" if col == "indicator" else "right")
    for r in res.pooled():
        s = r["expected_sign"]
        t.add_row(
            r["indicator"],
            {-1: "−", 1: "+", 0: "none"}[s],
            _num(r["spearman"]),
            f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
            str(r["n_units"]),
        )
    c = _console()
    c.print(t)
    c.print(
        "ρ: rank correlation of the unit values with the measured importance within each layer (−1..1; the sign an "
        "indicator that finds important units should have is 'expected'). fe|birth_rate+mean_activation and "
        "fe_increment ask whether FE says more than activity: a CI that contains 0 says it does not, here."
    )
    c.print(f"wrote {res.path}")
