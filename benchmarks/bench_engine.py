"""The early-stop cubical engine against a bare cripser call, on real activation maps, in one run.

    python benchmarks/bench_engine.py                  # prints the tables and updates docs/performance.md
    python benchmarks/bench_engine.py --no-write       # prints them only
    python benchmarks/bench_engine.py --nets DIR       # where nets.py is, if not in benchmarks/

Maps: the ReLU outputs of every conv of a random-init VGG11 (torchvision's architecture, built by ``nets.py`` with
onnx + NumPy) on 224² inputs, which gives maps of 224², 112², 56² and 28². The inputs are images of the shipped
shapes data set, resized to 224² and normalised with ImageNet statistics. Without ``nets.py`` the benchmark falls
back to smoothed Gaussian noise through a ReLU and says so.

One core (the process is pinned to one CPU where the OS allows): per-map time of

- bare cripser: ``cripser.computePH(map as float64, maxdim=1, top_dim=True)`` alone, nothing else;
- onnx-fe: ``birth_points(maps, workers=1)``, the public path with the default engine (finite check, keys, sort,
  scan, step), on the whole batch.

Rounds alternate between the two so machine noise hits both alike; the best of 3 rounds is kept. The two engines'
birth points are compared on every map. Then 1 → 2 cores: ``birth_points(maps, workers=w)`` on the maps of a size,
repeated to about 0.5 s a run (the thread chunking of ``birth_points``), with the process's CPU time, to show
whether a second core was free.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import cripser
import numba
import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from onnx_fe import birth_points
from onnx_fe.model.graph import expose, find_units

ROOT = Path(__file__).resolve().parents[1]
SIZES = (28, 56, 112, 224)
IMAGES = 2  # 2 images: 128 maps at 224², 256 at 112², 1024 at 56², 2048 at 28²


def shapes_images(k: int) -> np.ndarray:
    files = sorted(glob.glob(str(ROOT / "models/data/shapes/test/*/*.png")))
    pick = [files[i] for i in np.linspace(0, len(files) - 1, k).astype(int)]
    x = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255 for f in pick]
    )
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def vgg11_maps(nets_dir: Path | None) -> tuple[dict[int, np.ndarray], str] | None:
    """float32 maps (N, n, n) by size from a random-init VGG11, or None without nets.py."""
    for d in [nets_dir, Path(__file__).resolve().parent]:
        if d is not None and (Path(d) / "nets.py").is_file():
            sys.path.insert(0, str(d))
            break
    try:
        import nets
    except ImportError:
        return None
    model = nets.make("vgg11", seed=0, small_head=True)
    taps = [u.tap for u in find_units(model) if u.scorable]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "vgg11.onnx"
        p.write_bytes(expose(model, taps).SerializeToString())
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        outs = sess.run(taps, {"input": shapes_images(IMAGES)})
    by: dict[int, list] = {}
    for o in outs:
        by.setdefault(o.shape[-1], []).append(o.reshape(-1, *o.shape[-2:]))
    src = (
        f"ReLU outputs of the {len(taps)} convs of a random-init VGG11 (`nets.make('vgg11', seed=0)`, He-normal "
        f"weights) on {IMAGES} shapes images resized to 224²"
    )
    return {n: np.ascontiguousarray(np.concatenate(by[n]), dtype=np.float32) for n in SIZES}, src


def noise_maps() -> tuple[dict[int, np.ndarray], str]:
    rng = np.random.default_rng(0)
    out = {}
    for n, count in zip(SIZES, (2048, 1024, 256, 128)):
        a = rng.normal(size=(count, n + 4, n + 4))
        c = np.cumsum(np.cumsum(np.pad(a, ((0, 0), (1, 0), (1, 0))), 1), 2)
        box = c[:, 5:, 5:] - c[:, :-5, 5:] - c[:, 5:, :-5] + c[:, :-5, :-5]
        out[n] = np.maximum(box, 0).astype(np.float32)
    return out, "FALLBACK (nets.py not found): 5×5 box-smoothed Gaussian noise through a ReLU, not real activations"


def timed(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def bare_cripser(maps64: np.ndarray) -> None:
    for x in maps64:
        cripser.computePH(x, maxdim=1, top_dim=True)


def ours_one_worker(maps: np.ndarray) -> np.ndarray:
    return birth_points(maps, workers=1)


def one_core(maps: dict[int, np.ndarray]) -> list[tuple]:
    rows = []
    for n in SIZES:
        m32 = maps[n]
        m64 = m32.astype(np.float64)
        bare, ours = [], []
        for _ in range(3):
            bare.append(timed(bare_cripser, m64))
            ours.append(timed(ours_one_worker, m32))
        b, o = min(bare) / len(m32), min(ours) / len(m32)
        got = birth_points(m32, workers=1)
        same32 = int((got == birth_points(m32, engine="cripser")).sum())
        same64 = int((birth_points(m64) == birth_points(m64, engine="cripser")).sum())
        rate = float((got > 0).mean())
        rows.append((n, len(m32), b * 1e3, o * 1e3, b / o, same32 + same64, 2 * len(m32), rate))
        print(
            f"{n:>4}²  {len(m32):>5} maps  bare cripser {b * 1e3:7.3f} ms/map  onnx-fe {o * 1e3:7.3f} ms/map  "
            f"{b / o:5.1f}× faster  agree {same32 + same64}/{2 * len(m32)}  birth rate {rate:.2f}",
            flush=True,
        )
    return rows


def scaling(maps: dict[int, np.ndarray]) -> list[tuple]:
    rows = []
    for n in SIZES:
        m = maps[n]
        reps = max(1, int(np.ceil(0.5 / timed(ours_one_worker, m))))  # about 0.5 s a run on one core
        m = np.concatenate([m] * reps)
        res = {}
        for _ in range(3):
            for w in (1, 2):
                c0, t0 = time.process_time(), time.perf_counter()
                r = birth_points(m, workers=w)
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                if w not in res or dt < res[w][0]:
                    res[w] = (dt, cpu, r)
        assert np.array_equal(res[1][2], res[2][2])
        t1, t2 = res[1][0], res[2][0]
        rows.append((n, len(m), t1 * 1e3, t2 * 1e3, t1 / t2, res[2][1] / t2, res[2][1] / res[1][1]))
        print(
            f"{n:>4}²  {len(m)} maps  1 worker {t1 * 1e3:8.1f} ms  2 workers {t2 * 1e3:8.1f} ms  ×{t1 / t2:.2f}  "
            f"(CPU/wall with 2: {res[2][1] / t2:.2f}; CPU time 2 vs 1 worker: {res[2][1] / res[1][1]:.2f})",
            flush=True,
        )
    return rows


def gil_check(maps: np.ndarray) -> float:
    """Rate of a Python loop in this thread while the kernel runs in another, over its rate alone (0 if held)."""
    from onnx_fe.topology.early import early_birth_points

    def loop(stop) -> float:
        k, t0 = 0, time.perf_counter()
        while not stop():
            k += 1
        return k / (time.perf_counter() - t0)

    t_end = time.perf_counter() + 0.3
    alone = loop(lambda: time.perf_counter() > t_end)
    done = threading.Event()
    started = threading.Event()

    def work():
        started.set()
        early_birth_points(maps)
        done.set()

    th = threading.Thread(target=work)
    th.start()
    started.wait()
    during = loop(done.is_set)
    th.join()
    return during / alone


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", type=Path, default=None, help="directory holding nets.py (default: benchmarks/)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = ap.parse_args(argv)

    got = vgg11_maps(args.nets)
    maps, source = got if got is not None else noise_maps()
    print(source, flush=True)
    birth_points(maps[SIZES[0]][:2])  # compile (or load the cache) outside the timings
    birth_points(maps[SIZES[0]][:2].astype(np.float64))

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load0 = os.getloadavg()
    if cpus:
        os.sched_setaffinity(0, {cpus[-1]})
    try:
        rows = one_core(maps)
    finally:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
    load1 = os.getloadavg()
    scale = scaling(maps) if (cpus is None or len(cpus) >= 2) else []
    gil = gil_check(np.concatenate([maps[56]] * 4))
    print(f"Python loop rate while the kernel runs in another thread / alone: {gil:.2f}", flush=True)
    load2 = os.getloadavg()

    lines = [
        "<!-- engine:begin (written by benchmarks/bench_engine.py) -->",
        "## Cubical engine: early stop against a bare cripser call",
        "",
        f"Measured {datetime.date.today()} by `python benchmarks/bench_engine.py` on: {platform.machine()}, "
        f"{os.cpu_count()} cores, {platform.system()}; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"numba {numba.__version__}, cripser {getattr(cripser, '__version__', '?')}, onnxruntime {ort.__version__}, "
        f"onnx {onnx.__version__}.",
        f"Maps: {source}.",
        "",
        "One core (process pinned to one CPU). *bare cripser* is `cripser.computePH(map, maxdim=1, top_dim=True)` on "
        "the float64 map and nothing else; *onnx-fe* is `birth_points(maps, workers=1)` with the default engine "
        "(`early`) on the whole float32 batch, everything included. Best of 3 alternating rounds, per map. "
        "*agree* counts maps where the early and cripser engines give the same birth point, float32 and float64 input.",
        "",
        "| map | maps | bare cripser (ms/map) | onnx-fe, early engine (ms/map) | faster | agree | birth rate |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {n}×{n} | {cnt} | {b:.3f} | {o:.4f} | {r:.1f}× | {s}/{t} | {rate:.2f} |"
        for n, cnt, b, o, r, s, t, rate in rows
    ]
    if scale:
        lines += [
            "",
            "1 → 2 cores: `birth_points(maps, workers=w)` on the maps of a size, repeated to about 0.5 s on one core "
            "(threads over chunks; the kernel runs without the GIL). Best of 3 alternating rounds. *CPU/wall* is the process's CPU time over wall time "
            "with 2 workers: near 2 when both cores were free, lower when other processes held them. *CPU time 2 / 1* "
            "is the CPU time the work took with 2 workers over that with 1 (same run): near 1 means threads add no "
            "work and do not slow each other down, so the wall speed-up is set by how many cores are free.",
            "",
            "| map | maps | 1 worker (ms) | 2 workers (ms) | speed-up | CPU/wall, 2 workers | CPU time 2 / 1 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {n}×{n} | {cnt} | {a:.1f} | {b:.1f} | {r:.2f}× | {u:.2f} | {c:.2f} |" for n, cnt, a, b, r, u, c in scale
        ]
    lines += [
        "",
        f"GIL: a Python loop in the main thread, while the kernel runs on {4 * len(maps[56])} maps of 56² in another "
        f"thread, kept {gil:.2f} of the rate it has alone (0 if the kernel held the GIL; 0.5 when the two threads "
        "share one core).",
        "",
        f"Load average (1 min) before / after the one-core part / at the end: {load0[0]:.2f} / {load1[0]:.2f} / "
        f"{load2[0]:.2f}.",
        "<!-- engine:end -->",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        doc = ROOT / "docs/performance.md"
        text = doc.read_text()
        pat = re.compile(r"<!-- engine:begin.*?<!-- engine:end -->", re.S)
        if pat.search(text):
            text = pat.sub(lambda _: section, text)
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        doc.write_text(text)
        print(f"updated {doc}", file=sys.stderr)
    return section


if __name__ == "__main__":
    main()
