"""The `onnx-fe` command line: one module per command; they only parse, call the API, report and exit."""

from . import ablate, compare, inspect, randomize, rank, report, score
from .app import app, main

__all__ = ["app", "main"]
