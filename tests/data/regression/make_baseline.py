"""Write the regression baseline: birth points and scores.csv of three runs, from whatever onnx-fe is installed.

Made once from the commit before the restructure (issue 9, d41e687) with
``python tests/data/regression/make_baseline.py``; tests/test_regression.py recomputes the same runs with the
current code and compares bit for bit. Re-run it only when a change of results is intended and documented.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

# name → (model, data, score keyword arguments); small enough for CI, covering both methods and a residual net
RUNS = {
    "demo_cubical": ("models/demo/model.onnx", "models/demo/data", {"method": "cubical"}),
    "digits_vgg_clique": (
        "models/digits_vgg/converged/model.onnx",
        "models/data/digits/test",
        {"method": "clique", "images_per_class": 8},
    ),
    "shapes_resnet_cubical": (
        "models/shapes_resnet/converged/model.onnx",
        "models/data/shapes/test",
        {"method": "cubical", "images_per_class": 8},
    ),
}


def run(name: str, out: Path):
    import onnx_fe

    model, data, kw = RUNS[name]
    return onnx_fe.score(ROOT / model, ROOT / data, out, device="cpu", **kw)


def birth_points(h5: Path) -> dict[str, np.ndarray]:
    """Birth points keyed by the conv's ONNX node name (stable whatever the layer numbering)."""
    with h5py.File(h5, "r") as f:
        return {str(f["layers"][k].attrs["name"]): f["layers"][k]["birth_points"][()] for k in sorted(f["layers"])}


def main() -> None:
    import onnx_fe

    meta = {"onnx_fe": onnx_fe.__version__, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            r = run(name, Path(tmp) / name)
            np.savez_compressed(HERE / f"{name}_birth_points.npz", **birth_points(r.results_h5))
            with open(r.scores_csv, "rb") as src, gzip.GzipFile(HERE / f"{name}_scores.csv.gz", "wb", mtime=0) as dst:
                shutil.copyfileobj(src, dst)
            meta["runs"][name] = {"model": RUNS[name][0], "data": RUNS[name][1], **RUNS[name][2]}
    (HERE / "baseline.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", ", ".join(sorted(p.name for p in HERE.iterdir() if p.suffix in (".npz", ".gz"))), file=sys.stderr)


if __name__ == "__main__":
    main()
