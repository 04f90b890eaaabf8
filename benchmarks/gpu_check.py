"""Score the demo on CPU and CUDA: device used, agreement, batch-size independence, wall time.

Run where onnxruntime-gpu and a GPU are present:  python benchmarks/gpu_check.py OUTDIR
"""

import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

import onnx_fe

out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check")
model, data = Path("models/demo/model.onnx"), Path("models/demo/data")
report = {}


def bps(res):
    with h5py.File(res.results_h5) as f:
        return {k: f["layers"][k]["birth_points"][()] for k in f["layers"]}


runs = {}
for device in ("cpu", "cuda"):
    for bs in (1, 7, 64):
        t = time.perf_counter()
        r = onnx_fe.score(model, data, out / f"{device}_b{bs}", device=device, batch_size=bs)
        runs[(device, bs)] = (r, time.perf_counter() - t)
        report[f"{device}_b{bs}"] = {"device_used": r.device, "seconds": round(runs[(device, bs)][1], 3)}
ref = bps(runs[("cpu", 64)][0])
for (device, bs), (r, _) in runs.items():
    b = bps(r)
    report[f"{device}_b{bs}"]["identical_to_cpu_b64"] = all(np.array_equal(b[k], ref[k]) for k in ref)
    report[f"{device}_b{bs}"]["maps_differing_from_cpu"] = int(sum((b[k] != ref[k]).sum() for k in ref))
    report[f"{device}_b{bs}"]["csv_identical_to_cpu_b64"] = (
        r.scores_csv.read_bytes() == runs[("cpu", 64)][0].scores_csv.read_bytes()
    )
cuda = [bps(runs[("cuda", bs)][0]) for bs in (1, 7, 64)]
report["cuda_batch_size_independent"] = all(np.array_equal(c[k], cuda[0][k]) for c in cuda for k in ref)
print(json.dumps(report, indent=1))
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
