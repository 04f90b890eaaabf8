"""The whole scoring pipeline: wall time, maps/s, stage breakdown, peak memory and scaling, measured in one run.

    python benchmarks/bench_pipeline.py stages     # demo, ResNet-18, VGG11 at 224²: time per stage, -j 1 and -j 2
    python benchmarks/bench_pipeline.py memory     # peak memory against the number of images; VGG11 at -b 32
    python benchmarks/bench_pipeline.py baseline   # ResNet-18 end to end against older code (--baseline DIR)
    python benchmarks/bench_pipeline.py scaling    # -j 1 → -j 2, cubical and clique, ResNet-18 at 224²
    python benchmarks/bench_pipeline.py plan       # VGG16 per-map and per-image costs (docs/scaling.md's plan)
    python benchmarks/bench_pipeline.py ratio --images 50   # score / plain onnxruntime, per stage (issue 21 targets)
    python benchmarks/bench_pipeline.py ratio --nets resnet18,demo --out t.md --json t.json   # some networks, to files
    python benchmarks/bench_pipeline.py all --write   # all of them; the tables go into docs/performance.md

``--out FILE`` writes the tables (markdown, each with its header line) to FILE, ``--json FILE`` every run's raw
numbers; ``--write`` puts the tables into docs/performance.md instead. ``benchmarks/device_issue21.sh`` runs the
``ratio`` part on another machine into ``$OUT``.

Each part takes one to three minutes on a 2-core machine. Every measurement is a separate ``onnx-fe score`` run in a
fresh process (``--child``), so setup and memory are those a user sees; runs that are compared alternate, twice,
and the best of each is kept, so machine noise hits both sides alike: read the ratios.

- The networks are random-init ONNX exports of torchvision's ResNet-18 and VGG11 built by ``benchmarks/nets.py``
  into the git-ignored ``benchmarks/.cache/``; the demo is ``models/demo``.
- The 224² images are deterministic colour 1/f noise (the power spectrum of natural images), written once to
  ``benchmarks/.cache/pink224/`` (4 classes).
- Stage times are summed over the shards (``ShardResult.seconds``: setup is the worker processes' own plan build,
  load is image decoding, baselines are the means and zero fractions); with -j 2 they add up to about twice the wall
  time. "write" is the driver's time between handing out results.
- Peak memory is sampled over the driver and all its worker processes (every 20 ms in the memory part, every 0.25 s
  elsewhere: the sampler's own CPU time would weigh on 2 cores): the sum of their PSS (shared pages such as the mapped
  weights count once) and the largest single RSS; CPU time (user + system) is summed over the same processes.
- ``baseline`` runs the code at ``--baseline`` (a checkout, e.g. ``git worktree add /tmp/old f3d3a42``) against this
  tree with ``PYTHONPATH``, on the same images and options.
- A run with ``-j`` N > 1 starts the worker pool's fork server before the driver imports the pipeline, as the CLI
  does (``onnx_fe.execution.prestart_for``); the wall time starts after the imports for every run, and
  ``wall_with_import`` (in ``--json``) includes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
DEMO = (ROOT / "models/demo/model.onnx", ROOT / "models/demo/data")


# --------------------------------------------------------------------------------------------------- inputs


def pink_images(n_per_class: int = 16, classes: int = 4, size: int = 224) -> Path:
    """Colour 1/f-noise PNGs (seeded), ``classes`` folders of ``n_per_class``; written once."""
    from PIL import Image

    root = CACHE / "pink224"
    marker = root / f".done-{classes}x{n_per_class}"
    if marker.exists():
        return root
    rng = np.random.default_rng(0)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amp = 1 / np.maximum(np.hypot(fy, fx), 1 / size)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            chans = []
            phase = rng.uniform(0, 2 * np.pi, (size, size // 2 + 1))
            for _ in range(3):  # channels share most of the phase: colour images are correlated across channels
                ph = phase + rng.normal(0, 0.6, phase.shape)
                chans.append(np.fft.irfft2(amp * np.exp(1j * ph), s=(size, size)))
            a = np.stack(chans, -1)
            a = (a - a.min()) / (a.max() - a.min()) * 255
            Image.fromarray(a.astype(np.uint8), "RGB").save(root / f"c{k}" / f"{i:03d}.png")
    marker.touch()
    return root


def net(name: str) -> Path:
    """A random-init export of ``name`` (resnet18, vgg11) in benchmarks/.cache/, built on first use."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import nets

    return nets.build(name, CACHE) if not (CACHE / f"{name}-s0.onnx").exists() else CACHE / f"{name}-s0.onnx"


# --------------------------------------------------------------------------------------------------- one run


class _Peak:
    """Samples the memory of this process and all its descendants: the sum of their PSS (proportional set size:
    pages shared by several processes, such as the mapped weights, count once in all) and the largest RSS."""

    def __init__(self, every: float = 0.02):
        import psutil

        self.proc, self.every = psutil.Process(), every
        self.total = self.largest = 0
        self.cpu: dict[int, float] = {}  # pid → last seen user + system seconds
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            pss, rss = [], []
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    m = p.memory_full_info()
                    pss.append(m.pss)
                    rss.append(m.rss)
                except psutil.Error:
                    continue
                except Exception:  # no smaps (some sandboxes): RSS only, counted as PSS too
                    try:
                        m = p.memory_info()
                    except Exception:
                        continue
                    pss.append(m.rss)
                    rss.append(m.rss)
                try:
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            self.total, self.largest = max(self.total, sum(pss)), max(self.largest, max(rss, default=0))
            time.sleep(self.every)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.total / 1e9, self.largest / 1e9, sum(self.cpu.values())


def plain_child(spec: dict) -> dict:
    """Plain onnxruntime inference of the untapped model on the images a score run would use (same preprocessing,
    batch size and threads: ``threads`` intra-op threads, the cores of ``-j threads``); the images are loaded before
    the clock starts. The denominator of the ``ratio`` part."""
    import onnxruntime as ort

    from onnx_fe.config import ScoreConfig
    from onnx_fe.experiments.score import Plan

    kw = dict(spec["options"])
    threads = kw.pop("workers")
    cfg = ScoreConfig.build(spec["model"], spec["data"], spec["out"], workers=1, **kw)
    plan = Plan.build(cfg)
    n, bs = len(plan.dataset), cfg.batch_size
    x = plan.dataset.load(0, n, plan.preprocess, plan.runner.input_dtype)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(spec["model"]), sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x[:1]})  # first-run allocations and kernel choices, as the score run's probe does
    t = time.perf_counter()
    for s in range(0, n, bs):
        sess.run(None, {name: x[s : s + bs]})
    return {"wall": time.perf_counter() - t, "images": n, "load": os.getloadavg()[0]}


def child(spec: dict) -> dict:
    """Run one score in this process (the code on PYTHONPATH) and report times, maps and peak memory."""
    peak = _Peak(spec.get("every", 0.25))  # the sampler costs CPU itself: often only where memory is measured
    t0 = time.perf_counter()
    import h5py

    import onnx_fe

    stages: dict[str, float] = {}
    kw = dict(spec["options"])
    sharded = (Path(onnx_fe.__file__).parent / "execution" / "dask.py").exists()  # this tree's pipeline
    if sharded:
        try:  # -j N > 1: the pool's fork server loads while this process imports the pipeline, as in the CLI
            from onnx_fe.execution import prestart_for
        except ImportError:  # older code
            prestart_for = None
        if prestart_for is not None and not spec.get("dask"):
            prestart_for(kw.get("workers"))
        import onnx_fe.experiments.score as sm
        from onnx_fe.execution import make_executor

        build = sm.Plan.build.__func__

        def timed_build(cls, *a, **k):
            t = time.perf_counter()
            try:
                return build(cls, *a, **k)
            finally:
                stages["setup"] = stages.get("setup", 0.0) + time.perf_counter() - t

        sm.Plan.build = classmethod(timed_build)

        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

            return wrapper

        for fname in ("_finish", "_write_layers_csv", "write_csv"):  # scores, statistics, tables
            if hasattr(sm, fname):
                setattr(sm, fname, timed("finish", getattr(sm, fname)))
        sm._run_shards = timed("shards", sm._run_shards)  # the whole shard phase, wall time

        class Timed:
            def __init__(self, inner):
                self.inner = inner
                self.slots, self.remote = getattr(inner, "slots", 1), getattr(inner, "remote", False)

            def map(self, *a, **k):
                for r in self.inner.map(*a, **k):
                    for name, s in getattr(r, "seconds", {}).items():
                        stages[name] = stages.get(name, 0.0) + s
                    t = time.perf_counter()
                    yield r
                    stages["write"] = stages.get("write", 0.0) + time.perf_counter() - t

            def close(self):
                self.inner.close()

        cfg = sm.ScoreConfig.build(spec["model"], spec["data"], spec["out"], **kw)
        cluster = None
        if spec.get("dask"):  # a local Dask cluster of that many single-threaded worker processes
            import distributed

            cluster = distributed.LocalCluster(
                n_workers=spec["dask"], threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = distributed.Client(cluster)
            ex = Timed(make_executor(1, client=client))
        else:  # the executor the run itself chooses (the default -j's in-process choice included), timed
            ex = None
            sm.make_executor = lambda *a, **k: Timed(make_executor(*a, **k))
        t1 = time.perf_counter()
        try:
            r = sm.run(cfg, executor=ex)
        finally:
            if ex is not None:
                ex.close()
            if cluster is not None:
                client.close()
                cluster.close()
    else:  # older code: only the wall time
        t1 = time.perf_counter()
        r = onnx_fe.score(spec["model"], spec["data"], spec["out"], **kw)
    wall = time.perf_counter() - t1
    total, largest, cpu = peak.stop()
    with h5py.File(r.results_h5, "r") as f:
        n = len(f["labels"])
        maps = n * sum(int(f["layers"][k].attrs["channels"]) for k in f["layers"])
        # keyed by the conv's name: the layer numbering changed between versions (canonical order)
        bp = {str(f["layers"][k].attrs["name"]): f["layers"][k]["birth_points"][()].tolist() for k in f["layers"]}
    return {
        "wall": wall,
        "wall_with_import": time.perf_counter() - t0,
        "images": n,
        "maps": maps,
        "stages": stages,
        "rss_total": total,
        "rss_largest": largest,
        "cpu": cpu,  # user + system seconds of the driver and all its worker processes, imports included
        "load": os.getloadavg()[0],
        "bp_digest": hashlib.sha256(json.dumps(bp, sort_keys=True).encode()).hexdigest(),
        "csv": r.scores_csv.read_text(),
    }


def run_child(
    model, data, options: dict, code: Path = ROOT, dask: int = 0, every: float = 0.25, plain: bool = False
) -> dict:
    """One ``score`` in a fresh process running the code at ``code`` (on a local Dask cluster of ``dask`` workers);
    memory and CPU time are sampled every ``every`` seconds. ``plain``: plain onnxruntime inference instead
    (:func:`plain_child`)."""
    out = Path(tempfile.mkdtemp(prefix="bench-pipe-"))
    spec = {
        "model": str(model),
        "data": str(data),
        "out": str(out / "o"),
        "options": options,
        "dask": dask,
        "every": every,
        "plain": plain,
    }
    # the code first; what the caller's PYTHONPATH holds (e.g. packages installed with pip --target) after it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p))
    try:
        p = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            cwd=str(out),
        )
        if p.returncode:
            raise RuntimeError(f"child failed ({code}, {options}):\n{p.stderr[-3000:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res


def best_of(runs: dict[str, callable], rounds: int = 2) -> dict[str, dict]:
    """Alternate the runs ``rounds`` times; keep each one's fastest."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            r = fn()
            if name not in best or r["wall"] < best[name]["wall"]:
                best[name] = r
    return best


# --------------------------------------------------------------------------------------------------- parts


def _opts(**kw):
    return {"device": "cpu", **kw}


STAGES = ("setup", "load", "inference", "birth_points", "baselines", "write", "finish")


def part_stages(args) -> str:
    pink = pink_images(max(16, args.images))
    cases = [
        ("demo (32², 200 images)", *DEMO, {"images_per_class": None}),
        (f"ResNet-18 224² ({4 * args.images} images)", net("resnet18"), pink, {"images_per_class": args.images}),
        (
            f"VGG11 224² ({4 * max(1, args.images // 2)} images)",
            net("vgg11"),
            pink,
            {"images_per_class": max(1, args.images // 2)},
        ),
    ]
    lines = [
        "| network | -j | wall (s) | maps/s | "
        + " | ".join(s.replace("_", " ") for s in STAGES)
        + " | peak PSS, all processes (GB) |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in STAGES) + " | ---: |",
    ]
    for label, model, data, kw in cases:
        res = best_of(
            {
                j: (lambda j=j, model=model, data=data, kw=kw: run_child(model, data, _opts(workers=j, **kw)))
                for j in (1, 2)
            },
            args.rounds,
        )
        for j, r in res.items():
            st = r["stages"]
            share = " | ".join(f"{st.get(s, 0):.2f} ({100 * st.get(s, 0) / r['wall'] / j:.0f} %)" for s in STAGES)
            lines.append(
                f"| {label} | {j} | {r['wall']:.2f} | {r['maps'] / r['wall']:,.0f} | {share} | {r['rss_total']:.2f} |"
            )
        assert res[1]["csv"] == res[2]["csv"], f"{label}: -j 1 and -j 2 differ"
        print("\n".join(lines[-2:]), flush=True)
    return "\n".join(lines)


def part_memory(args) -> str:
    pink = pink_images(max(16, args.images))
    lines = [
        "| network | -j | -b | images | wall (s) | peak PSS, all processes (GB) | largest process RSS (GB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    r18 = net("resnet18")
    for n in (1, 16):  # 4 and 64 images
        for j in (1, 2):
            r = run_child(r18, pink, _opts(workers=j, images_per_class=n, batch_size=4), every=0.02)
            lines.append(
                f"| ResNet-18 | {j} | 4 | {r['images']} | {r['wall']:.1f} | {r['rss_total']:.2f} | {r['rss_largest']:.2f} |"
            )
            print(lines[-1], flush=True)
    vgg = net("vgg11")
    vgg_runs = [(j, ROOT, "") for j in (1, 2)]
    if args.baseline:  # the older code on the same run (-j 2 there is threads in one process)
        vgg_runs += [(j, Path(args.baseline), " (landed main)") for j in (1, 2)]
    for j, code, tag in vgg_runs:
        opts = _opts(workers=j, images_per_class=8, batch_size=32)
        if code == ROOT:
            opts["shard_size"] = 32 if j == 1 else 16
        r = run_child(vgg, pink, opts, code, every=0.02)
        lines.append(
            f"| VGG11{tag} | {j} | 32 | {r['images']} | {r['wall']:.1f} | {r['rss_total']:.2f} | {r['rss_largest']:.2f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def part_baseline(args) -> str:
    if not args.baseline:
        raise SystemExit("baseline: give --baseline DIR (a checkout of the older code)")
    pink = pink_images(max(16, args.images))
    model = net("resnet18")
    kw = _opts(images_per_class=args.images)
    runs = {
        "landed main, -j 2 (threads)": lambda: run_child(model, pink, {**kw, "workers": 2}, Path(args.baseline)),
        "this tree, -j 2 (processes)": lambda: run_child(model, pink, {**kw, "workers": 2}),
        "this tree, -j 2, --resamples 0 (no bootstrap CIs)": lambda: run_child(
            model, pink, {**kw, "workers": 2, "resamples": 0}
        ),
    }
    res = best_of(runs, args.rounds)
    (old, o), (new, n) = list(res.items())[:2]
    lines = [
        "| code | wall (s) | maps/s | speed-up | birth points share of wall |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in res.items():
        bp = r["stages"].get("birth_points")
        share = f"{100 * bp / r['wall'] / 2:.0f} % of 2 cores" if bp is not None else "—"
        lines.append(
            f"| {name} | {r['wall']:.2f} | {r['maps'] / r['wall']:,.0f} | {o['wall'] / r['wall']:.2f}× | {share} |"
        )
    same = all(r["bp_digest"] == o["bp_digest"] for r in res.values())
    lines.append("")
    lines.append(
        f"ResNet-18 at 224², {n['images']} images, {n['maps']:,} maps; birth points identical: {'yes' if same else 'NO'}."
    )
    print("\n".join(lines), flush=True)
    return "\n".join(lines)


def part_scaling(args) -> str:
    pink = pink_images(max(16, args.images))
    model = net("resnet18")
    head = [
        "| method | workers | wall, 1 worker (s) | wall (s) | maps/s | speed-up | parallel efficiency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ends, shards = list(head), list(head)
    cpu = [
        "| method | workers | CPU, 1 worker (s) | CPU (s) | CPU ratio | cores used, 1 worker | cores used | "
        "load average (1 min) at the end |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for method in ("cubical", "clique"):
        kw = _opts(images_per_class=args.images, method=method, resamples=0)
        runs = {"-j 1": lambda kw=kw: run_child(model, pink, {**kw, "workers": 1})}
        runs["-j 2"] = lambda kw=kw: run_child(model, pink, {**kw, "workers": 2})
        if not args.no_dask:
            runs["Dask, 2 workers"] = lambda kw=kw: run_child(model, pink, {**kw, "workers": 1}, dask=2)
        res = best_of(runs, args.rounds)
        one = res["-j 1"]
        for name, r in res.items():
            assert r["csv"] == one["csv"], f"{method}: {name} differs from -j 1"
            if name == "-j 1":
                continue
            for rows, t1, t in (
                (ends, one["wall"], r["wall"]),
                (shards, one["stages"]["shards"], r["stages"]["shards"]),
            ):
                rows.append(
                    f"| {method} | {name} | {t1:.2f} | {t:.2f} | {r['maps'] / t:,.0f} | {t1 / t:.2f}× | {t1 / t / 2:.0%} |"
                )
            cpu.append(
                f"| {method} | {name} | {one['cpu']:.1f} | {r['cpu']:.1f} | {r['cpu'] / one['cpu']:.2f} | "
                f"{one['cpu'] / one['wall_with_import']:.2f} | {r['cpu'] / r['wall_with_import']:.2f} | "
                f"{one['load']:.1f} (1 worker), {r['load']:.1f} |"
            )
            print(ends[-1], "|| shards:", shards[-1], "|| cpu:", cpu[-1], flush=True)
    return (
        f"ResNet-18 at 224², {one['images']} images ({one['maps']:,} maps), `--resamples 0` (no bootstrap: the "
        "final statistics run once on the driver, serially, and are timed in the stage table), the same results bit "
        "for bit in every row. End to end (the `score` call: setup, shards, scores and tables):\n\n"
        + "\n".join(ends)
        + "\n\nShard phase only (computing and writing the shards; setup and the final statistics run once on the "
        "driver):\n\n"
        + "\n".join(shards)
        + "\n\nCPU time (user + system, driver and workers, module imports included): the work each layout costs, "
        "whatever share of the cores the machine's other load left it; cores used = CPU time / wall time of the "
        "process, imports included (2.00 would be both cores all the time):\n\n" + "\n".join(cpu)
    )


def part_plan(args) -> str:
    """Per-map and per-image costs on VGG16 at 224², one core, for the paper-scale plan in docs/scaling.md."""
    import onnx_fe
    from onnx_fe.config import ScoreConfig
    from onnx_fe.experiments.score import Plan, compute_shard

    pink = pink_images(max(16, args.images))
    n_img = 4
    lines = [
        "| map size | maps per image | cubical (ms/map) | clique (ms/map) |",
        "| --- | ---: | ---: | ---: |",
    ]
    costs = {}
    for method in ("cubical", "clique"):
        cfg = ScoreConfig.build(
            net("vgg16"), pink, "/tmp/unused", images_per_class=1, method=method, device="cpu", threads=1, workers=1
        )
        plan = Plan.build(cfg)
        compute_shard(plan, 0, 1, 1)  # warm-up (engine load)
        best = None
        for _ in range(args.rounds):
            r = compute_shard(plan, 0, n_img, 1)
            if best is None or sum(r.seconds.values()) < sum(best.seconds.values()):
                best = r
        costs[method] = {k: v / n_img for k, v in best.seconds.items()}
        outs = dict(zip(plan.runner.outputs, plan.runner.run(plan.dataset.load(0, 2, plan.preprocess, np.float32))))
        by_size: dict[int, list] = {}
        for u in plan.units:
            by_size.setdefault(u.height, []).append(outs[u.tap].reshape(-1, u.height, u.width))
        for size, parts in sorted(by_size.items(), reverse=True):
            maps = np.concatenate(parts)[:256]
            t = min(
                _timed(lambda m=maps, me=method: onnx_fe.birth_points(m, method=me, workers=1))
                for _ in range(args.rounds)
            )
            n_per_image = sum(p.shape[0] for p in parts) // 2
            costs.setdefault("sizes", {}).setdefault(size, {"maps": n_per_image})[method] = 1e3 * t / len(maps)
    for size, c in costs["sizes"].items():
        lines.append(f"| {size}×{size} | {c['maps']:,} | {c['cubical']:.3f} | {c['clique']:.3f} |")
    total = sum(c["maps"] for c in costs["sizes"].values())
    lines += [
        "",
        f"{total:,} maps per image. One core, per image (`compute_shard` on {n_img} images, best of "
        f"{args.rounds}; stages as in the pipeline table):",
        "",
        "| method | load | inference | birth points | baselines | total (s/image) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in ("cubical", "clique"):
        c = costs[method]
        tot = sum(v for k, v in c.items() if k != "encode")
        lines.append(
            f"| {method} | {c['load']:.3f} | {c['inference']:.3f} | {c['birth_points']:.3f} | "
            f"{c['baselines']:.3f} | {tot:.3f} |"
        )
    print("\n".join(lines), flush=True)
    return "\n".join(lines)


RATIO_STAGES = ("setup", "load", "inference", "birth_points", "baselines", "write", "finish")


def part_ratio(args) -> str:
    """``score`` wall over plain onnxruntime inference (same images, batch and threads), per stage, for ResNet-18
    and VGG11 at 224², -j 1 and -j 2; the demo's default -j against -j 1. Every run is a fresh process; the runs
    of a network alternate, ``rounds`` times, best kept."""
    pink = pink_images(max(16, args.images))
    chosen = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = sorted(set(chosen) - {"resnet18", "vgg11", "demo"})
    if unknown:
        raise SystemExit(f"--nets: unknown {', '.join(unknown)} (resnet18, vgg11, demo)")
    nets = [
        (label, net(name), per_class)
        for name, label, per_class in (
            ("resnet18", "ResNet-18 224²", args.images),
            ("vgg11", "VGG11 224²", max(1, args.images // 4)),
        )
        if name in chosen
    ]
    lines = [
        "| network | images | -j | plain inference (s) | score (s) | **score / plain** | "
        + " | ".join(s.replace("_", " ") for s in RATIO_STAGES)
        + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in RATIO_STAGES) + " |",
    ]
    notes = []
    for label, model, per_class in nets:
        kw = _opts(images_per_class=per_class)
        runs = {}
        for j in (1, 2):
            runs[f"plain {j}"] = lambda j=j, model=model, kw=kw: run_child(
                model, pink, {**kw, "workers": j}, plain=True
            )
            runs[f"score {j}"] = lambda j=j, model=model, kw=kw: run_child(model, pink, {**kw, "workers": j})
        runs["score 1 --no-hrank"] = lambda model=model, kw=kw: run_child(
            model, pink, {**kw, "workers": 1, "hrank": False}
        )
        res = best_of(runs, args.rounds)
        RAW.setdefault("ratio", {})[label] = {name: _raw(r) for name, r in res.items()}
        for j, name in ((1, "score 1"), (1, "score 1 --no-hrank"), (2, "score 2")):
            p, r = res[f"plain {j}"], res[name]
            st = r["stages"]
            # stage seconds are summed over the workers: divided by -j they are shares of the wall
            per = " | ".join(f"{st.get(s, 0) / j / p['wall']:.2f}" for s in RATIO_STAGES)
            tag = f"{j}, --no-hrank" if "hrank" in name else f"{j}"
            lines.append(
                f"| {label} | {r['images']} | {tag} | {p['wall']:.2f} | {r['wall']:.2f} | **{r['wall'] / p['wall']:.2f}×** "
                f"| {per} |"
            )
            print(lines[-1], flush=True)
        assert res["score 1"]["csv"] == res["score 2"]["csv"], f"{label}: -j 1 and -j 2 differ"
        s1, s2 = res["score 1"], res["score 2"]
        notes.append(
            f"{label}: `-j 1` → `-j 2` {s1['wall'] / s2['wall']:.2f}× end to end "
            f"(shard phase {s1['stages']['shards'] / s2['stages']['shards']:.2f}×; with the imports, as a CLI call, "
            f"{s1['wall_with_import'] / s2['wall_with_import']:.2f}×; plain inference 1 → 2 threads "
            f"{res['plain 1']['wall'] / res['plain 2']['wall']:.2f}×); scores.csv identical."
        )
    if "demo" in chosen:
        demo = best_of(
            {
                "-j 1": lambda: run_child(*DEMO, _opts(images_per_class=None, workers=1)),
                "default -j": lambda: run_child(*DEMO, _opts(images_per_class=None)),
            },
            max(2, args.rounds),
        )
        RAW.setdefault("ratio", {})["demo"] = {name: _raw(r) for name, r in demo.items()}
        assert demo["-j 1"]["csv"] == demo["default -j"]["csv"]
        notes.append(
            f"Demo (200 images of 32²): default `-j` ({os.cpu_count()} cores) {demo['default -j']['wall']:.2f} s "
            f"against `-j 1` {demo['-j 1']['wall']:.2f} s: {demo['default -j']['wall'] / demo['-j 1']['wall']:.2f}× "
            "the `-j 1` wall; scores.csv identical."
        )
    body = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    print(body, flush=True)
    return body


RAW: dict = {}  # every part's raw results, for --json


def _raw(r: dict) -> dict:
    """A run's numbers without the scores table (kept for the identity checks only)."""
    return {k: v for k, v in r.items() if k != "csv"}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


PARTS = {
    "stages": part_stages,
    "memory": part_memory,
    "baseline": part_baseline,
    "scaling": part_scaling,
    "plan": part_plan,
    "ratio": part_ratio,
}


def machine() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def write_docs(sections: dict[str, str]) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text()
    for name, body in sections.items():
        begin, end = f"<!-- bench_pipeline:{name}:begin -->", f"<!-- bench_pipeline:{name}:end -->"
        block = f"{begin}\n{body}\n{end}"
        if begin in text:
            text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _, block=block: block, text, flags=re.S)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", nargs="?", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--images", type=int, default=2, help="images per class (4 classes) for the 224² networks")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of compared runs (best kept)")
    ap.add_argument("--baseline", help="a checkout of older code to compare with (part baseline)")
    ap.add_argument("--write", action="store_true", help="put the tables into docs/performance.md")
    ap.add_argument("--no-dask", action="store_true", help="scaling: leave out the Dask LocalCluster rows")
    ap.add_argument("--tag", default="", help="suffix of the docs block's name (keeps several runs of one part)")
    ap.add_argument("--nets", default="resnet18,vgg11,demo", help="ratio: the networks (resnet18, vgg11, demo)")
    ap.add_argument("--out", help="write the tables (markdown) to this file")
    ap.add_argument("--json", help="write every run's raw numbers (JSON) to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(plain_child(spec) if spec.get("plain") else child(spec)))
        return
    parts = list(PARTS) if args.part == "all" else [args.part]
    if "baseline" in parts and not args.baseline:
        parts.remove("baseline")
    out = {}
    for p in parts:
        t = time.perf_counter()
        body = PARTS[p](args)
        flags = f" --images {args.images}" if p in ("stages", "baseline", "scaling", "ratio") else ""
        flags += f" --rounds {args.rounds}" if p != "memory" else ""
        flags += " --no-dask" if args.no_dask and p == "scaling" else ""
        flags += f" --nets {args.nets}" if p == "ratio" and args.nets != "resnet18,vgg11,demo" else ""
        out[p + args.tag] = (
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `python benchmarks/bench_pipeline.py {p}{flags}` on "
            f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end ({time.perf_counter() - t:.0f} s).\n\n{body}"
        )
        print(f"\n[{p}: {time.perf_counter() - t:.0f} s]\n", flush=True)
    if args.write:
        write_docs(out)
    if args.out:
        text = "\n\n".join(f"<!-- bench_pipeline:{name} -->\n{body}" for name, body in out.items()) + "\n"
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "argv": sys.argv[1:], **RAW}, indent=1) + "\n")


if __name__ == "__main__":
    main()
