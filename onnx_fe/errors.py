"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class OnnxFeError(Exception):
    """An error caused by the user's input (model, data, options), not by a bug."""
