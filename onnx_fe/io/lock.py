"""Output directories: created with one-line errors, and locked so that one run at a time writes into each.

The lock is ``fcntl.flock`` on ``<output>/.onnx-fe.lock``, taken before anything else is written there and
held until the run ends (the kernel drops it when the process dies, however it dies). The file stays in place
(removing it would let two runs lock two different files); it holds the pid of the run holding the lock, so a
refused run can say which one it waits for. A second run into the same directory is refused with one line, or,
with ``wait=True``, waits until the first one is done.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import OnnxFeError

LOCK_NAME = ".onnx-fe.lock"


def os_reason(e: OSError) -> str:
    """The reason of an OSError without its repr noise ("No space left on device")."""
    return e.strerror or str(e) or type(e).__name__


def make_output_dir(out) -> Path:
    """Create the output directory (and its parents), or refuse with one line saying why it cannot be."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise OnnxFeError(f"output {out} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
    except OnnxFeError:
        raise
    except FileExistsError:
        raise OnnxFeError(f"cannot create output directory {out}: a path component is a file") from None
    except OSError as e:
        raise OnnxFeError(f"cannot create output directory {out}: {os_reason(e)}") from None
    return out


def default_output(model, root="onnx-fe-results") -> Path:
    """``<root>/<model stem>-<8 hex digits>``: the digits hash the model file's resolved path, so that two
    different files (every zoo model is a ``model.onnx``) never share a default output directory, while the
    same file always gets the same one (and its finished results are reused)."""
    import hashlib

    p = Path(model).resolve()
    return Path(root) / f"{p.stem}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip().split()[0]
        return f"pid {int(pid)}"
    except (OSError, ValueError, IndexError):
        return "pid unknown"


@contextmanager
def output_lock(out, wait: bool = False, log=None):
    """Hold the output directory's lock (creating the directory) for the duration of the block.

    ``wait=False``: refuse with one line naming the holder when another run holds it; ``wait=True``: wait for it
    (Ctrl-C still interrupts)."""
    import fcntl

    out = make_output_dir(out)
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OnnxFeError(f"cannot write to output directory {out}: {os_reason(e)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OnnxFeError(f"cannot lock output directory {out}: {os_reason(e)}") from None
            if not wait:
                raise OnnxFeError(
                    f"output directory {out} is in use by another onnx-fe run ({_holder(path)}); wait for it to "
                    "finish, pass --wait, or choose another --output"
                ) from None
            if log is not None:
                log(f"note: waiting for the onnx-fe run using {out} ({_holder(path)}) to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only informative; a full disk must not stop the run here
        yield out
    finally:
        os.close(fd)  # releases the lock
