#!/usr/bin/env bash
# Issue 21 on a quiet many-core machine: `onnx-fe score` against plain onnxruntime inference of the same images,
# -j 1 against -j 2 (ResNet-18 and VGG11 at 224²), and the demo's default -j against -j 1.
#
#   OUT=/some/dir bash benchmarks/device_issue21.sh        # from anywhere; the tables go to $OUT
#
# Installs nothing: this checkout runs from PYTHONPATH. It needs python3 with numpy, onnx, onnxruntime, h5py, typer,
# rich, numba, scipy, threadpoolctl, Pillow and psutil (cripser, ripser and distributed are not used by these runs).
# Settings (environment): IMAGES images per class (default 50: ResNet-18 200 images, VGG11 48), ROUNDS alternations
# for ResNet-18 and the demo (default 2, best kept), ROUNDS_VGG for VGG11 (default 1), BUDGET seconds (default 400):
# VGG11 is left out when the ResNet-18 part leaves too little of it. PYTHON: the interpreter (default python3).
#
# What comes back in $OUT: environment.txt (versions, cores, load), bench.log (everything printed, with the elapsed
# seconds), ratio_resnet18.md / .json (ResNet-18 and the demo), ratio_vgg11.md / .json; the .md files are the
# tables of docs/performance.md "Scoring against plain inference", the .json files every run's raw numbers
# (wall with and without imports, stage seconds, CPU seconds, peak memory, load average).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-benchmarks/results/device_issue21}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
IMAGES=${IMAGES:-50}
ROUNDS=${ROUNDS:-2}
ROUNDS_VGG=${ROUNDS_VGG:-1}
BUDGET=${BUDGET:-400}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LOG="$OUT/bench.log"
: >"$LOG"
t0=$SECONDS
log() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$LOG"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "environment"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/environment.txt" | tee -a "$LOG"
import importlib, os, platform, sys

print("python", sys.version.split()[0], platform.machine(), "cores", os.cpu_count(), "load", os.getloadavg())
missing = []
for name in ("numpy", "onnx", "onnxruntime", "h5py", "typer", "rich", "numba", "scipy", "threadpoolctl", "PIL", "psutil"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as e:
        missing.append(f"{name} ({e})")
if missing:
    sys.exit("missing: " + "; ".join(missing))
import onnxruntime

print("onnxruntime providers", onnxruntime.get_available_providers())
import onnx_fe

print("onnx_fe from", onnx_fe.__file__)
EOF

log "preparing (not timed): the networks and images in benchmarks/.cache, the compiled kernels"
"$PY" - "$IMAGES" <<'EOF' 2>&1 | tee -a "$LOG"
import sys

sys.path.insert(0, "benchmarks")
import bench_pipeline as b

print(b.net("resnet18"), b.net("vgg11"), b.pink_images(max(16, int(sys.argv[1]))))
EOF
# numba compiles the engines and the bootstrap on first use and caches them: one small run in this process and one
# through the pool, so that no timed run compiles
"$PY" -m onnx_fe.cli score models/demo/model.onnx models/demo/data -o "$work/w1" -n 2 -j 1 --device cpu -q 2>&1 | tee -a "$LOG"
"$PY" -m onnx_fe.cli score models/demo/model.onnx models/demo/data -o "$work/w2" -n 2 -j 2 --device cpu -q 2>&1 | tee -a "$LOG"

log "ratio: ResNet-18 224² ($((IMAGES * 4)) images) and the demo, $ROUNDS rounds"
t1=$SECONDS
"$PY" benchmarks/bench_pipeline.py ratio --nets resnet18,demo --images "$IMAGES" --rounds "$ROUNDS" \
    --out "$OUT/ratio_resnet18.md" --json "$OUT/ratio_resnet18.json" 2>&1 | tee -a "$LOG"
took=$((SECONDS - t1))
# one VGG11 round costs about what one ResNet-18 round does (docs/performance.md): half the part above at 2 rounds
need=$((took * ROUNDS_VGG / (ROUNDS > 0 ? ROUNDS : 1)))
if ((SECONDS - t0 + need > BUDGET)); then
    log "VGG11 left out: about $need s more would pass BUDGET=$BUDGET s"
else
    log "ratio: VGG11 224² ($((IMAGES / 4 > 0 ? IMAGES / 4 * 4 : 4)) images), $ROUNDS_VGG round(s)"
    "$PY" benchmarks/bench_pipeline.py ratio --nets vgg11 --images "$IMAGES" --rounds "$ROUNDS_VGG" \
        --out "$OUT/ratio_vgg11.md" --json "$OUT/ratio_vgg11.json" 2>&1 | tee -a "$LOG"
fi
log "done"
