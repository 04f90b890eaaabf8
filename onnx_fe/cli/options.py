"""Shared CLI option groups that parse straight into the settings objects of :mod:`onnx_fe.config`.

A group is a set of Typer options and a builder. ``@options(PREPROCESS, RUNNER)`` adds the group's options to a
command's signature (Typer reads ``__signature__``) and hands the command one built object per group, so every
command that takes, say, preprocessing options takes the same ones, with the same help and the same checks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, List, Optional

import typer

from ..config import DataOptions, MethodOptions, PreprocessOptions, RunnerOptions, StatisticsOptions


@dataclass(frozen=True)
class OptionGroup:
    name: str  # the command's parameter that receives the built object
    params: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]


def _p(name: str, annotation, option) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def options(*groups: OptionGroup):
    """Decorator: add the groups' options to the command and pass it one built object per group."""

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        names = {g.name for g in groups}
        own = [p for p in sig.parameters.values() if p.name not in names]
        extra = [p for g in groups for p in g.params]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for g in groups:
                kwargs[g.name] = g.build(**{p.name: kwargs.pop(p.name) for p in g.params})
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + extra)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
        return wrapper

    return deco


def preprocess_group(*, from_run: bool = False) -> OptionGroup:
    """Image preprocessing. ``from_run``: unset options default to the scoring run's (ablate)."""
    d = "the scoring run's" if from_run else ""
    return OptionGroup(
        "preprocess",
        (
            _p(
                "input_size",
                Optional[str],
                typer.Option(
                    None,
                    "--input-size",
                    help="HxW to resize images to; required when the model's spatial dims are dynamic",
                    show_default=d or "the model's",
                    rich_help_panel="Preprocessing",
                ),
            ),
            _p(
                "layout",
                str,
                typer.Option(
                    "auto", "--layout", help="Model input layout: auto, nchw or nhwc", rich_help_panel="Preprocessing"
                ),
            ),
            _p(
                "color",
                Optional[str],
                typer.Option(
                    None,
                    "--color",
                    help="rgb, bgr or gray",
                    show_default=d or "from the model's channels",
                    rich_help_panel="Preprocessing",
                ),
            ),
            _p(
                "scale",
                Optional[str],
                typer.Option(
                    None,
                    "--scale",
                    help="Pixel scale before mean/std, e.g. 1/255",
                    show_default=d or "1/255; 1 for integer model inputs",
                    rich_help_panel="Preprocessing",
                ),
            ),
            _p(
                "mean",
                Optional[str],
                typer.Option(
                    None,
                    "--mean",
                    help="Mean to subtract: one value or one per channel, comma-separated",
                    show_default=d or "0",
                    rich_help_panel="Preprocessing",
                ),
            ),
            _p(
                "std",
                Optional[str],
                typer.Option(
                    None,
                    "--std",
                    help="Std to divide by: one value or one per channel",
                    show_default=d or "1",
                    rich_help_panel="Preprocessing",
                ),
            ),
        ),
        PreprocessOptions.build,
    )


RUNNER = OptionGroup(
    "runner",
    (
        _p(
            "device",
            str,
            typer.Option(
                "auto",
                "--device",
                help="auto (CUDA if it really loads, else CPU), cpu or cuda",
                rich_help_panel="Execution",
            ),
        ),
    ),
    RunnerOptions.build,
)


def images_group(default_per_class: int | None = 100) -> OptionGroup:
    return OptionGroup(
        "images",
        (
            _p(
                "images_per_class",
                Optional[int],
                typer.Option(
                    default_per_class,
                    "--images-per-class",
                    "-n",
                    help="Images per class, chosen deterministically",
                    show_default=True if default_per_class is not None else "all",
                    rich_help_panel="Images",
                ),
            ),
            _p(
                "classes",
                Optional[List[str]],
                typer.Option(
                    None,
                    "--classes",
                    help="Only these classes, comma-separated or repeated",
                    show_default="all",
                    rich_help_panel="Images",
                ),
            ),
            _p(
                "seed",
                int,
                typer.Option(0, "--seed", help="Seed of the per-class image choice", rich_help_panel="Images"),
            ),
        ),
        DataOptions.build,
    )


METHOD = OptionGroup(
    "method",
    (
        _p(
            "method",
            str,
            typer.Option(
                "cubical",
                "--method",
                "-m",
                help="cubical, or clique (the paper's construction)",
                rich_help_panel="Method",
            ),
        ),
        _p(
            "resolution",
            Optional[int],
            typer.Option(
                None,
                "--resolution",
                help="cubical: steps of the size-normalised filtration",
                show_default="100",
                rich_help_panel="Method",
            ),
        ),
        _p(
            "threshold",
            Optional[int],
            typer.Option(
                None,
                "--threshold",
                help="Last step that counts as a birth point",
                show_default="cubical 75, clique 50",
                rich_help_panel="Method",
            ),
        ),
        _p(
            "max_edge_density",
            Optional[float],
            typer.Option(
                None,
                "--max-edge-density",
                help="clique: edge density cap",
                show_default="0.8",
                rich_help_panel="Method",
            ),
        ),
        _p(
            "engine",
            Optional[str],
            typer.Option(
                None,
                "--engine",
                help="cubical: early (exact early-stop kernel) or cripser (full diagram); same birth points",
                show_default="early",
                rich_help_panel="Method",
            ),
        ),
    ),
    MethodOptions.build,
)

LAYERS = typer.Option(
    None,
    "--layers",
    "-l",
    help="Layers to score: index, name or glob; comma-separated or repeated",
    show_default="all scorable",
)
BATCH = typer.Option(
    32,
    "--batch-size",
    "-b",
    help="Images per inference batch (memory is bounded by it)",
    rich_help_panel="Execution",
)
WAIT = typer.Option(
    False,
    "--wait",
    help="If another onnx-fe run is writing into the output directory, wait for it instead of stopping",
    rich_help_panel="Execution",
)
WORKERS = typer.Option(
    None,
    "--workers",
    "-j",
    help="Local worker processes (inference and birth points; 1: all in this process)",
    show_default="the cores this process may use",
    rich_help_panel="Execution",
)


STATISTICS = OptionGroup(
    "statistics",
    (
        _p(
            "ci_level",
            str,
            typer.Option(
                "0.95", "--ci-level", help="Coverage of every confidence interval", rich_help_panel="Statistics"
            ),
        ),
        _p(
            "resamples",
            int,
            typer.Option(
                1000,
                "--resamples",
                help="Bootstrap resamples over images (0: no intervals)",
                rich_help_panel="Statistics",
            ),
        ),
        _p(
            "bootstrap_seed",
            int,
            typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap resamples", rich_help_panel="Statistics"),
        ),
        _p(
            "rarefy_k",
            int,
            typer.Option(
                10,
                "--rarefy-k",
                help="Birth points per draw of the rarefied FE (cells with fewer births get NaN)",
                rich_help_panel="Statistics",
            ),
        ),
    ),
    StatisticsOptions.build,
)

CONTROL = typer.Option(
    None,
    "--control",
    help="random-init: also score an untrained twin of the model (onnx-fe randomize) on the same images; "
    "layers.csv then gives trained − control per layer",
    show_default="none",
    rich_help_panel="Statistics",
)
CONTROL_SEED = typer.Option(0, "--control-seed", help="Seed of the random-init twin", rich_help_panel="Statistics")
SHARD = typer.Option(
    None,
    "--shard-size",
    help="Images per unit of work (results never depend on it)",
    show_default="the batch size, less when there are few images per worker",
    rich_help_panel="Execution",
)
SCHEDULER = typer.Option(
    None,
    "--scheduler",
    help="Run the shards on this Dask cluster, e.g. tcp://HOST:8786 (needs the dask extra; see docs/scaling.md)",
    show_default="none: local processes",
    rich_help_panel="Execution",
)
CLUSTER = typer.Option(
    None,
    "--cluster",
    help="slurm: start Dask workers as SLURM jobs through dask-jobqueue and run the shards on them (needs the slurm "
    "extra; see docs/scaling.md)",
    show_default="none",
    rich_help_panel="Execution",
)
CLUSTER_OPTION = typer.Option(
    None,
    "--cluster-option",
    help="KEY=VALUE for --cluster slurm, repeatable: jobs, queue, account, walltime, cores, processes, memory, "
    "job_extra_directives, wait, ... (docs/scaling.md)",
    show_default="1 job of 1 core, 2GB, 01:00:00",
    rich_help_panel="Execution",
)
