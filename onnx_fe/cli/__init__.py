"""The `onnx-fe` command line: one module per command; they only parse, call the API, report and exit.

``main`` imports the commands itself, so that Ctrl-C while they load (typer, rich, numpy, …) still ends with one
line instead of a traceback.
"""

import sys

INTERRUPTED = "interrupted; no result was completed (run the same command again to resume)"


def _load():
    from . import (  # registers the commands
        ablate,
        compare,
        importance,
        inspect,
        prune,
        randomize,
        rank,
        report,
        score,
        validate,
    )
    from .app import app, main

    return app, main


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and a non-zero exit, never a traceback."""
    try:
        _, run = _load()
    except KeyboardInterrupt:
        sys.stderr.write(f"onnx-fe: error: {INTERRUPTED}\n")
        return 130
    return run(argv)


def __getattr__(name):
    if name == "app":
        return _load()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
