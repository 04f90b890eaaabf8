"""Per-map time of the clique (paper-faithful) birth points and β1 curves.

    python benchmarks/bench_clique.py             # tables → stdout and docs/performance.md
    python benchmarks/bench_clique.py --no-write  # tables → stdout only
    python benchmarks/bench_clique.py --engines   # also compare PH engines (those installed)
    python benchmarks/bench_clique.py --real-only # only the real 224² activation maps

One core: the process is pinned to one CPU where the OS allows, BLAS/OpenMP to one thread.

Real activations (first table): the 224×224 maps of a random-init VGG11 (torchvision's
architecture, ``benchmarks/nets.py``, seed 0, small head; built once into the gitignored
``benchmarks/.cache/``): the ReLU output of its first conv, 64 maps an image, on the first
images of each class of the shipped shapes and digits test sets, resized to 224² (bilinear)
and normalised with ImageNet statistics. Digits have flat backgrounds, so their maps hold
large tie groups: the slow tail of the ripser engine. Both engines run on every map, one map
a call, alternating in 3 rounds (best round per map kept, against machine noise); their
birth points are compared on every map.

Synthetic maps (second table), all float32 and square:

* ``relu``: ReLU of Gaussian-filtered white noise (σ = max(1, H/28) px), about
  half exact zeros: the typical early-layer activation;
* ``smooth``: a few smooth blobs (σ = H/8) plus 5 % fine noise, ReLU'd after a
  small offset (about a third zeros): a late-layer-like activation;
* ``uint8``: the ``relu`` maps quantised to 256 levels (many ties; stress case).

The whole run takes about a minute on a 2-core cloud VM (most of it the ripser engine on
the real maps).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_fe.topology.clique import (  # noqa: E402
    clique_betti_curve,
    clique_birth_points,
    clique_birth_points_ripser,
)

SIZES = (7, 14, 28, 56, 112, 224)
# The authors' reference implementation (Perseus-based), seconds per map.
REFERENCE_S = {14: 0.03, 28: 0.18, 56: 3.0, 112: 65.0}
# Maps per birth-point batch and per curve measurement.
BATCH = {7: 2000, 14: 2000, 28: 1000, 56: 600, 112: 200, 224: 60}
CURVES = {7: 300, 14: 100, 28: 20, 56: 6, 112: 2, 224: 1}
BEGIN, END = "<!-- bench_clique:begin -->", "<!-- bench_clique:end -->"
REAL_BEGIN, REAL_END = "<!-- bench_clique_real:begin -->", "<!-- bench_clique_real:end -->"
REAL_PER_CLASS = {"shapes": 1, "digits": 1}  # images per class: 10 + 10 images, 64 maps each
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _filtered_noise(rng, n: int, h: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (periodic), unit variance per map."""
    x = rng.standard_normal((n, h, h))
    f = np.fft.fftfreq(h)
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    y = np.fft.ifft2(np.fft.fft2(x) * g).real
    y -= y.mean(axis=(1, 2), keepdims=True)
    y /= y.std(axis=(1, 2), keepdims=True) + 1e-12
    return y


def make_maps(kind: str, n: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000 * h)
    if kind in ("relu", "uint8"):
        m = np.maximum(_filtered_noise(rng, n, h, max(1.0, h / 28)), 0)
        if kind == "uint8":
            m = np.round(np.clip(m * 64, 0, 255))
    elif kind == "smooth":
        m = _filtered_noise(rng, n, h, h / 8) + 0.05 * rng.standard_normal((n, h, h))
        m = np.maximum(m + 0.4, 0)
    else:
        raise ValueError(kind)
    return m.astype(np.float32)


def _best_per_map(fn, n: int, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n


def time_birth_points(h: int, kind: str, repeats: int = 3) -> tuple[float, float]:
    maps = make_maps(kind, BATCH[h], h)
    clique_birth_points(maps[:8])  # warm-up
    per_map = _best_per_map(lambda: clique_birth_points(maps), len(maps), repeats)
    rate = float(np.mean(clique_birth_points(maps) > 0))
    return per_map, rate


def time_curve(h: int, kind: str = "relu") -> float:
    maps = make_maps(kind, CURVES[h], h, seed=1)
    clique_betti_curve(maps[0])
    return _best_per_map(lambda: [clique_betti_curve(m) for m in maps], len(maps), 1 if h >= 56 else 2)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba
    import ripser

    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()}; "
        f"Python {platform.python_version()}, NumPy {np.__version__}, ripser {ripser.__version__}, "
        f"numba {numba.__version__}; one thread"
    )


def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_ratio(ref: float | None, s: float | None) -> str:
    if ref is None or s is None:
        return "—"
    r = ref / s
    return f"{r:,.0f}×"


def run() -> str:
    rows = []
    for h in SIZES:
        bp = {k: time_birth_points(h, k) for k in ("relu", "smooth", "uint8")}
        curve = time_curve(h)
        ref = REFERENCE_S.get(h)
        slowest = max(bp["relu"][0], bp["smooth"][0])
        rows.append(
            f"| {h}×{h} | {fmt_ms(bp['relu'][0])} | {fmt_ms(bp['smooth'][0])} | {fmt_ms(bp['uint8'][0])} "
            f"| {fmt_ms(curve)} "
            f"| {ref if ref is not None else '—'} | {fmt_ratio(ref, slowest)} | {fmt_ratio(ref, curve)} "
            f"| {bp['relu'][1]:.2f} / {bp['smooth'][1]:.2f} / {bp['uint8'][1]:.2f} |"
        )
        print(rows[-1], flush=True)
    head = (
        "| map | birth points, relu (ms/map) | smooth (ms/map) | uint8, tie-heavy (ms/map) | β1 curve, relu (ms/map) "
        "| reference (s/map) | speed-up, birth points | speed-up, curve | birth rate relu / smooth / uint8 |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    stamp = datetime.date.today().isoformat()
    return (
        f"Measured {stamp} by `python benchmarks/bench_clique.py` on: {machine()}.\n"
        "Birth points: best of 3 runs over one batch of maps, divided by the batch size "
        f"({', '.join(f'{h}: {BATCH[h]}' for h in SIZES)} maps). Speed-ups are the reference time "
        "divided by the slower of the relu and smooth birth-point times (or by the curve time).\n\n"
        f"{head}\n" + "\n".join(rows) + "\n"
    )


def write_doc(table: str, begin: str = BEGIN, end: str = END) -> Path:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Clique birth points\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc


# ----------------------------------------------------------------------------- real activation maps


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def dataset_images(name: str, per_class: int) -> np.ndarray:
    """The first ``per_class`` test images of every class of a shipped data set, as VGG input (N, 3, 224, 224)."""
    from PIL import Image

    root = ROOT / "models" / "data" / name / "test"
    files = [f for c in sorted(p for p in root.iterdir() if p.is_dir()) for f in sorted(c.glob("*.png"))[:per_class]]
    x = []
    for f in files:
        with Image.open(f) as im:
            x.append(np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255)
    x = (np.stack(x) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def real_maps() -> dict[str, np.ndarray]:
    """224² maps (N, 224, 224) by data set: VGG11 (random init) first conv after ReLU."""
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import nets

    from onnx_fe.model.graph import expose, find_units

    model = onnx.load(str(nets.cached("vgg11", seed=0, small_head=True)))
    unit = find_units(model)[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(expose(model, [unit.tap]).SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = {}
    for name, per_class in REAL_PER_CLASS.items():
        x = dataset_images(name, per_class)
        a = np.concatenate([sess.run([unit.tap], {"input": x[i : i + 1]})[0][0] for i in range(len(x))])
        assert a.shape[1:] == (224, 224) and np.isfinite(a).all()
        out[name] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def per_map_times(engines: dict, maps: np.ndarray, rounds: int = 3) -> tuple[dict, dict]:
    """Seconds per map of every engine (best of ``rounds``, engines alternating) and their birth points."""
    best = {k: np.full(len(maps), np.inf) for k in engines}
    out = {k: np.zeros(len(maps), np.int32) for k in engines}
    for _ in range(rounds):
        for k, fn in engines.items():
            for i in range(len(maps)):
                one = maps[i : i + 1]
                t = time.perf_counter()
                out[k][i] = fn(one)[0]
                best[k][i] = min(best[k][i], time.perf_counter() - t)
    return best, out


def run_real() -> str:
    pinned = pin_one_core()
    by_set = real_maps()
    engines = {"ripser (before)": clique_birth_points_ripser, "scan (now)": clique_birth_points}
    for fn in engines.values():
        fn(by_set["shapes"][:2])  # warm-up (numba: load or compile)
    rows, agree, total, rates = [], 0, 0, []
    all_t = {k: [] for k in engines}
    for name, maps in by_set.items():
        t, bp = per_map_times(engines, maps)
        ref = bp["ripser (before)"]
        agree += int((bp["scan (now)"] == ref).sum())
        total += len(maps)
        rates.append(f"{name} {np.mean(ref > 0):.2f}")
        for k in engines:
            all_t[k].append(t[k])
            rows.append(_real_row(f"{name}, {len(maps)} maps", k, t[k]))
        print(rows[-2], rows[-1], sep="\n", flush=True)
    for k in engines:
        rows.append(_real_row(f"**all, {total} maps**", k, np.concatenate(all_t[k])))
    before, now = (np.concatenate(all_t[k]).mean() for k in engines)
    head = (
        "| maps | engine | mean (ms/map) | median | p90 | max | slowest 10 % of maps: share of the time |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    stamp = datetime.date.today().isoformat()
    return (
        f"Measured {stamp} by `python benchmarks/bench_clique.py` on: {machine()}; {pinned}.\n"
        "Maps: VGG11 (random init, `benchmarks/nets.py`, seed 0) first conv after ReLU, 224×224, 64 maps an image, on "
        "the first test images of every class of the shipped data sets (images a class: "
        f"{', '.join(f'{k} {v}' for k, v in REAL_PER_CLASS.items())}), bilinear to 224², ImageNet normalisation. "
        "One map a call, best of 3 alternating rounds per map.\n"
        f"Birth points identical on {agree} / {total} maps; birth rate {', '.join(rates)}. "
        f"Mean per map {before / now:.0f}× lower with the scan.\n\n"
        f"{head}\n" + "\n".join(rows) + "\n"
    )


def _real_row(label: str, engine: str, t: np.ndarray) -> str:
    ms = t * 1e3
    tail = np.sort(ms)[-max(1, len(ms) // 10) :].sum() / ms.sum()
    return (
        f"| {label} | {engine} | {fmt_ms(ms.mean() / 1e3)} | {fmt_ms(np.median(ms) / 1e3)} "
        f"| {fmt_ms(np.percentile(ms, 90) / 1e3)} | {fmt_ms(ms.max() / 1e3)} | {tail:.0%} |"
    )


# ----------------------------------------------------------------------------- engines


def compare_engines() -> None:
    """Same flag filtrations through each installed engine (bars must agree)."""
    from scipy.sparse import coo_matrix

    from onnx_fe.topology.clique import _h1_bars, index_cap

    engines = {"ripser.py (pyRipser core)": lambda i, j, v, n: _h1_bars(i, j, v, n)}
    try:
        from gph import ripser_parallel

        engines["giotto-ph (1 thread)"] = lambda i, j, v, n: ripser_parallel(
            coo_matrix((v, (i, j)), shape=(n, n)), maxdim=1, metric="precomputed", n_threads=1
        )["dgms"][1]
    except ImportError:
        print("giotto-ph not installed: skipped")
    try:
        import gudhi

        def gudhi_bars(i, j, v, n):
            st = gudhi.SimplexTree()
            st.insert_batch(np.arange(n)[None, :], np.zeros(n))
            st.insert_edges_from_coo_matrix(coo_matrix((v, (i, j)), shape=(n, n)))
            st.expansion(2)
            st.compute_persistence(persistence_dim_max=False)
            return st.persistence_intervals_in_dimension(1)

        engines["gudhi SimplexTree"] = gudhi_bars
    except ImportError:
        print("gudhi not installed: skipped")

    def edges(m, limit):
        h = m.shape[0]
        iu, ju = np.triu_indices(h, 1)
        s = np.maximum(m[iu, ju], m[ju, iu])
        r = np.unique(-s, return_inverse=True)[1].ravel() + 1
        keep = r <= limit
        return iu[keep].astype(np.int32), ju[keep].astype(np.int32), r[keep].astype(np.float32)

    def bars(d):
        d = np.asarray(d, dtype=np.float64).reshape(-1, 2)
        return sorted(map(tuple, d[d[:, 0] < d[:, 1]].tolist()))

    rng = np.random.default_rng(0)
    cases = []
    for h in (14, 56, 112, 224):
        u = rng.random((h, h)).astype(np.float32)
        cap = index_cap(h)
        cases.append((f"{h}×{h} distinct, indices ≤ 51", h, edges(u, 51)))
        if h >= 56:
            cases.append((f"{h}×{h} 8 levels, indices ≤ 51", h, edges(np.floor(u * 8), min(51, cap))))
        if h <= 112:
            cases.append((f"{h}×{h} distinct, whole curve", h, edges(u, cap)))
    print("| complex | edges | " + " | ".join(engines) + " |")
    print("| --- | ---: |" + " ---: |" * len(engines))
    for name, h, (i, j, v) in cases:
        cells, ref = [], None
        for label, fn in engines.items():
            if "gudhi" in label and "levels" in name and h >= 224:
                cells.append("skipped (> 1 s)")
                continue
            out = bars(fn(i, j, v, h))
            fn(i, j, v, h)  # second warm-up: first calls set up thread pools and caches
            ref = out if ref is None else ref
            n_runs, t0 = 0, time.perf_counter()
            while n_runs < 200 and time.perf_counter() - t0 < 1.0:
                fn(i, j, v, h)
                n_runs += 1
            dt = (time.perf_counter() - t0) / n_runs
            cells.append(f"{fmt_ms(dt)} ms" + ("" if out == ref else " (bars differ!)"))
        print(f"| {name} | {len(i)} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    ap.add_argument("--engines", action="store_true", help="compare the installed PH engines first")
    ap.add_argument("--real-only", action="store_true", help="only the real 224² activation maps")
    args = ap.parse_args()
    if args.engines:
        compare_engines()
        print()
    t0 = time.perf_counter()
    real = run_real()
    print()
    print(real)
    if not args.no_write:
        print(f"written to {write_doc(real, REAL_BEGIN, REAL_END)}")
    if not args.real_only:
        table = run()
        print()
        print(table)
        if not args.no_write:
            print(f"written to {write_doc(table)}")
    print(f"benchmark took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
