"""What the statistics and the control cost in `score`, and what `compare`'s network-level statistics cost.

    python benchmarks/bench_statistics.py            # prints the tables and updates docs/performance.md
    python benchmarks/bench_statistics.py --no-write # prints them only
    python benchmarks/bench_statistics.py --rounds 1 # quicker

For the demo (`models/demo`, 200 images), the digits VGG (`models/digits_vgg/converged`, its 450 test images) and
the shapes ResNet (`models/shapes_resnet/converged`, 12 layers, 720 units, its 500 test images),
in one process, each run into a fresh output folder, CPU, default workers, rounds interleaved so that machine noise
hits every variant alike (after one warm-up run that is not counted):

* `score --resamples 0` (no bootstrap; rarefied FE and the noise null are still computed),
* `score` with the defaults (1000 resamples),
* `score --control random-init` (the defaults, plus writing and scoring the random-init twin).

Inside each run the time spent in the per-cell statistics (`cell_statistics`) and in writing layers.csv (noise null
and layer rows) is measured by wrapping those functions, with the noise-null cache cleared before each run, so the
"statistics share" is measured directly, not only as a difference of two noisy wall times. Then `compare` of the
converged digits VGG against its initial weights (scores reused) times the network-level bootstrap (1000 resamples)
and permutation test (999 permutations).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import onnx_fe
import onnx_fe.experiments.score as score_mod
import onnx_fe.scores.compare as compare_mod
import onnx_fe.scores.statistics as stats_mod

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "demo": (ROOT / "models/demo/model.onnx", ROOT / "models/demo/data"),
    "digits VGG": (ROOT / "models/digits_vgg/converged/model.onnx", ROOT / "models/data/digits/test"),
    "shapes ResNet": (ROOT / "models/shapes_resnet/converged/model.onnx", ROOT / "models/data/shapes/test"),
}
VARIANTS = {
    "resamples 0": {"resamples": 0},
    "default": {},
    "control random-init": {"control": "random-init"},
}


@contextmanager
def timed(module, name, acc):
    """Wrap module.name so that its cumulated wall time lands in acc[name]."""
    fn = getattr(module, name)

    def wrapper(*a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
            acc[name + "_cpu"] = acc.get(name + "_cpu", 0.0) + time.process_time() - c0

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, fn)


def clear_caches():
    for f in (
        stats_mod._noise_null,
        stats_mod._rarefy_row,
        stats_mod._theta_row,
        stats_mod._x_log_x,
        stats_mod._resample_weights_cached,
    ):
        f.cache_clear()


def one_score(model, data, opts, tmp):
    out = Path(tempfile.mkdtemp(dir=tmp))
    acc = {}
    clear_caches()
    with timed(score_mod, "cell_statistics", acc), timed(score_mod, "_write_layers_csv", acc):
        t0, c0 = time.perf_counter(), time.process_time()
        res = onnx_fe.score(model, data, out, device="cpu", **opts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(out)
    assert not res.reused
    return {
        "wall": wall,
        "cpu": cpu,
        "cell_statistics": acc.get("cell_statistics", 0.0),
        "layers_csv": acc.get("_write_layers_csv", 0.0),
        "cell_statistics_cpu": acc.get("cell_statistics_cpu", 0.0),
        "layers_csv_cpu": acc.get("_write_layers_csv_cpu", 0.0),
    }


def machine() -> str:
    import importlib.metadata as md

    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at the start), Python {platform.python_version()}, "
        f"NumPy {np.__version__}, onnxruntime {ort.__version__}, cripser {md.version('cripser')}"
    )


def main(rounds: int) -> tuple[str, dict]:
    header = machine()
    tmp = tempfile.mkdtemp(prefix="bench_stats_")
    raw = {c: {v: [] for v in VARIANTS} for c in CASES}
    try:
        one_score(*CASES["demo"], {"resamples": 0}, tmp)  # warm-up: imports, first sessions (not counted)
        for r in range(rounds):
            for case, (model, data) in CASES.items():
                for variant, opts in VARIANTS.items():
                    m = one_score(model, data, opts, tmp)
                    raw[case][variant].append(m)
                    print(f"round {r} {case:10s} {variant:20s} {m['wall']:.2f} s", file=sys.stderr)
        # compare: network-level statistics on reused scores
        out = Path(tmp) / "cmp"
        models = [ROOT / "models/digits_vgg/converged/model.onnx", ROOT / "models/digits_vgg/random/model.onnx"]
        data = ROOT / "models/data/digits/test"
        onnx_fe.compare(models, data, out, device="cpu", plot=False, accuracy=False, permutations=0)
        acc = {}
        with timed(compare_mod, "compare_networks", acc):
            t0 = time.perf_counter()
            onnx_fe.compare(models, data, out, device="cpu", plot=False, accuracy=False)
            cmp_wall = time.perf_counter() - t0
        acc_b = {}
        with timed(compare_mod, "compare_networks", acc_b):
            onnx_fe.compare(models, data, out, device="cpu", plot=False, accuracy=False, permutations=0)
        raw["compare"] = {
            "wall_with_reused_scores": cmp_wall,
            "compare_networks": acc["compare_networks"],
            "compare_networks_without_permutations": acc_b["compare_networks"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return table(header, raw, rounds), raw


def median_of(ms, key="wall"):
    """The median over the rounds (robust to the odd slow or fast round of a shared machine)."""
    return float(np.median([m[key] for m in ms]))


def table(header, raw, rounds) -> str:
    lines = [
        "<!-- bench_statistics:begin (written by benchmarks/bench_statistics.py) -->",
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/bench_statistics.py` on: {header}. "
        f"{rounds} interleaved rounds per variant; CPU, default workers, fresh output folder each run.",
        "",
        "| model | score, `--resamples 0` (s) | score, defaults (s) | of which per-cell statistics (s) | "
        "of which layers.csv + noise null (s) | statistics' share of the default run, wall (CPU) | "
        "defaults − resamples 0 | `--control random-init` (s) | control / defaults |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in CASES:
        r0, rd, rc = (raw[case][v] for v in VARIANTS)
        med = lambda xs: float(np.median(xs))
        stats = [m["cell_statistics"] + m["layers_csv"] for m in rd]
        share = med([x / m["wall"] for x, m in zip(stats, rd)])
        share_cpu = med([(m["cell_statistics_cpu"] + m["layers_csv_cpu"]) / m["cpu"] for m in rd])
        extra = (median_of(rd) - median_of(r0)) / median_of(rd)
        lines.append(
            f"| {case} | {median_of(r0):.2f} | {median_of(rd):.2f} | {med([m['cell_statistics'] for m in rd]):.2f} | "
            f"{med([m['layers_csv'] for m in rd]):.2f} | {100 * share:.0f} % ({100 * share_cpu:.0f} %) | "
            f"{100 * extra:+.0f} % | {median_of(rc):.2f} | {median_of(rc) / median_of(rd):.2f} |"
        )
    lines += [
        "",
        "Every number is the median over the rounds; a share is the median of each default run's own ratio (wall, "
        "and in brackets process CPU time: the statistics' CPU time over the whole run's, which other processes on "
        "the machine disturb less).",
    ]
    c = raw["compare"]
    lines += [
        "",
        "`compare` of the converged digits VGG against its initial weights, 450 images, scores reused: "
        f"{c['wall_with_reused_scores']:.2f} s in all, of which {c['compare_networks']:.2f} s network-level "
        f"statistics for both models (1000 bootstrap resamples and 999 permutations; "
        f"{c['compare_networks_without_permutations']:.2f} s without permutations).",
        "<!-- bench_statistics:end -->",
    ]
    return "\n".join(lines)


def write(md: str) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text()
    pat = re.compile(r"<!-- bench_statistics:begin.*?<!-- bench_statistics:end -->", re.S)
    text = pat.sub(lambda _: md, text) if pat.search(text) else text.rstrip() + "\n\n## Statistics\n\n" + md + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    md, raw = main(a.rounds)
    print(md)
    out = ROOT / "benchmarks" / "results" / "bench_statistics.json"
    out.write_text(json.dumps(raw, indent=1))
    if not a.no_write:
        write(md)
