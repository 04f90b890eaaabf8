"""Errors.

Every error caused by the user's input (model, data, options, results files, the machine's resources) is an
:class:`OnnxFeError`: the CLI prints its message on one line and exits with status 2, and the API raises it with the
same message. Anything else that escapes is a bug in onnx-fe: the CLI says so on one line, writes the traceback to a
file and asks for a report (:data:`REPORT_HINT`).
"""

REPORT_HINT = (
    "this is a bug in onnx-fe; please report it on the onnx-fe issue tracker with the command and the traceback file"
)


class OnnxFeError(Exception):
    """An error caused by the user's input (model, data, options), not by a bug."""


class OptionError(OnnxFeError, ValueError):
    """An option or argument has a wrong value or type."""


class ModelError(OnnxFeError):
    """The model cannot be read, has no scorable conv, or fails in onnxruntime."""


class DataError(OnnxFeError):
    """The data cannot be read or does not fit the model."""


class ResultsError(OnnxFeError):
    """A results file or output directory cannot be read, written or trusted."""


class InvalidMapError(OptionError):
    """Maps or parameters that cannot be filtered (NaN, ±inf, wrong shape, bad parameter)."""
