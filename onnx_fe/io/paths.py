"""Output paths: the checks every command that writes a file makes before writing, and atomic file writes.

- :func:`check_output` refuses an empty ``--output`` (``-o ''``), which would otherwise mean the current directory.
- :func:`refuse_input` refuses an output that is one of the command's inputs: the same path, a symbolic link to it
  or a hard link to it (the same inode), so that writing the output never destroys an input.
- :func:`write_atomic` writes a whole file (``<name>.partial``, then renamed), with a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OnnxFeError, OptionError
from .lock import os_reason


def empty_output_message(option: str = "--output") -> str:
    return f"{option} is empty; give a path (use . for the current directory)"


def check_output(value, option: str = "--output"):
    """``value`` unless it is an empty path (``-o ''``), which is refused with one line."""
    if value is not None and isinstance(value, (str, bytes)) and len(value) == 0:
        raise OptionError(empty_output_message(option))
    return value


def same_file(a, b) -> bool:
    """Whether two paths name the same file: the same device and inode (so hard and symbolic links count).
    False when either does not exist or cannot be looked at."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_input(output, *inputs, what: str = "output") -> None:
    """Refuse (one line) an output file that is one of the inputs, under any name."""
    for p in inputs:
        if p is not None and same_file(output, p):
            how = "" if Path(os.path.abspath(output)) == Path(os.path.abspath(p)) else f" ({output} is a link to it)"
            raise OnnxFeError(f"{what} is the input {p}{how}; writing it would destroy the input: choose another file")


def make_parent(path) -> Path:
    """Create the directory a file will be written into, or refuse with one line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OnnxFeError(f"cannot write {path}: a path component is a file") from None
    except OSError as e:
        raise OnnxFeError(f"cannot write {path}: {os_reason(e)}") from None
    return path


def write_atomic(path, data: str | bytes, encoding: str = "utf-8") -> None:
    """Write a whole file atomically (``<name>.partial``, then renamed over ``path``); a failure leaves no half file
    and raises one line."""
    path = make_parent(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        if isinstance(data, str):
            data = data.encode(encoding)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OnnxFeError(f"cannot write {path}: {os_reason(e)}") from None
