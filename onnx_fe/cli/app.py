"""The Typer application, shared options, output helpers and the entry point that turns errors into one line."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from ..errors import REPORT_HINT, OnnxFeError

try:  # typer >= 0.20 vendors click
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # older typer re-uses click
    from click.exceptions import ClickException as _UsageError


def _hide_flag_types() -> None:
    """Show no ``<bool>`` type beside flags (--quiet, --help, …) in --help: a flag takes no value."""
    try:
        from typer.core import TyperOption
    except ImportError:  # older typer: nothing to patch
        return
    if getattr(TyperOption, "_onnx_fe_flags", False) or not hasattr(TyperOption, "display_type_rich"):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich
    TyperOption._onnx_fe_flags = True


_hide_flag_types()

INTERRUPTED = "interrupted; no result was completed (run the same command again to resume)"

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
INPUT_SIZE = typer.Option(
    None,
    "--input-size",
    help="HxW to resize images to; required when the model's spatial dims are dynamic",
    show_default="the model's",
)
LAYOUT = typer.Option("auto", "--layout", help="Model input layout: auto, nchw or nhwc")
COLOR = typer.Option(None, "--color", help="rgb, bgr or gray", show_default="from the model's channels")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA if it really loads, else CPU), cpu or cuda.")
SCALE = typer.Option(1 / 255, "--scale", help="Pixel scale before mean/std.")
MEAN = typer.Option(None, "--mean", help="Mean to subtract: one value or one per channel, comma-separated.")
STD = typer.Option(None, "--std", help="Std to divide by: one value or one per channel.")
SEED = typer.Option(0, "--seed", help="Seed of the per-class image choice.")
BATCH = typer.Option(32, "--batch-size", "-b", help="Images per inference batch.")
WORKERS = typer.Option(
    None, "--workers", "-j", help="Threads for birth points", show_default="the cores this process may use"
)
QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Say more about what is done")


def _set_verbosity(quiet: bool, verbose: bool) -> None:
    _verbosity["quiet"] |= quiet
    _verbosity["verbose"] |= verbose


@app.callback()
def _root(
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    _verbosity["quiet"], _verbosity["verbose"] = quiet, verbose


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and a non-zero exit, never a traceback."""
    try:
        _refuse_empty_output(sys.argv[1:] if argv is None else argv)
        rv = app(args=argv, standalone_mode=False, prog_name="onnx-fe")
        if rv == 130:  # Typer turns Ctrl-C (KeyboardInterrupt) into Exit(130) before it gets here
            _err(INTERRUPTED)
            return 130
        return rv if isinstance(rv, int) else 0
    except OnnxFeError as e:
        _err(str(e))
        return 2
    except typer.Exit as e:
        if e.exit_code == 130:
            _err(INTERRUPTED)
        return e.exit_code
    except _UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `onnx-fe`: help was asked for in effect
            sys.stderr.write(e.format_message() + "\n")
            return 0
        _err(e.format_message())
        return 2
    except (KeyboardInterrupt, typer.Abort):
        _err(INTERRUPTED)
        return 130
    except MemoryError:
        _err("out of memory; try a smaller --batch-size")
        return 1
    except Exception as e:  # anything else is a bug in onnx-fe, not the user's mistake
        _err(f"internal error: {type(e).__name__}: {_one_line(str(e))} — {REPORT_HINT} ({_save_traceback()})")
        return 70


def _refuse_empty_output(argv) -> None:
    """``-o ''`` (or ``--output=``): refused before Typer turns the empty path into the current directory."""
    from ..io.paths import check_output

    args = [str(a) for a in argv]
    for i, a in enumerate(args):
        if a == "--":
            return
        if a == "--output=" or (a in ("-o", "--output") and i + 1 < len(args) and args[i + 1] == ""):
            check_output("", "-o" if a == "-o" else "--output")


def _one_line(msg: str, limit: int = 300) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _save_traceback() -> str:
    """Write the current exception's traceback to a temporary file; return where it is."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="onnx-fe-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        return f"traceback in {path}"
    except OSError:
        return "the traceback could not be saved"


if __name__ == "__main__":
    sys.exit(main())
