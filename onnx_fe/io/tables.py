"""CSV tables written atomically (a reader never sees half a file)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import OnnxFeError
from .lock import os_reason


def write_rows_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    """Write dict rows as a CSV atomically (floats as repr, so they round-trip exactly; never -0.0)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in rows:
                w.writerow([repr(v + 0.0) if isinstance(v, float) else v for v in (r.get(c, "") for c in cols)])
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OnnxFeError(f"cannot write {path}: {os_reason(e)}") from None
