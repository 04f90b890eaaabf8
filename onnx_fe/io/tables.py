"""CSV tables written atomically (a reader never sees half a file)."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def write_rows_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    """Write dict rows as a CSV atomically (floats as repr, so they round-trip exactly)."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([repr(v) if isinstance(v, float) else v for v in (r.get(c, "") for c in cols)])
    os.replace(tmp, path)
