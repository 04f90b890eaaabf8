"""Cost of ``onnx-fe importance`` on ResNet-18 at 224², 100 images: per unit per layer, whole network, and the
speed-ups of prefix reuse and K-unit stacking against the naive run, measured in one process.

    python benchmarks/bench_importance.py                   # prints the tables (Markdown)
    python benchmarks/bench_importance.py --write           # and puts them into docs/performance.md
    python benchmarks/bench_importance.py --units 2 --ratio-layers 0,5,10,15

- The network is the random-init ResNet-18 of ``benchmarks/nets.py`` (cost does not depend on the weights); the
  images are the 224² colour 1/f-noise PNGs of ``bench_pipeline.py`` (4 classes × 25 = 100 images).
- Every layer is measured on a seeded sample of units (``sample_units``, seed 0), on all 100 images in batches of
  32, with one onnxruntime thread (the work of ``-j 1``; ``-j N`` shards images over N such processes). For each
  layer: the prefix (once per batch), the unmasked reference run of the suffix (once per batch), and the suffix runs
  for the sampled units, as the command runs them on the CPU (one unit per run: ``STACK_BYTES_CPU`` is 0).
- The whole-network figure is an extrapolation, labelled as such: per layer, its number of units × the measured
  time per unit, plus its prefix and reference time, plus one plain pass of the model (the unmasked loss).
- The speed-ups compare, on a few layers and the same sampled units, three ways of measuring one unit: the naive
  one (the whole masked model, ``add_unit_masks`` with a (1, C, 1, 1) mask, one unit per run), the split graph
  with one unit per suffix run (K = 1, the command on the CPU), and the split graph with stacking (K from the
  64 MB budget the command uses on CUDA, ``STACK_BYTES``). Runs alternate, best of two, so machine noise hits all
  three alike: read the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _plan(model, data, units: int):
    import onnx_fe.experiments.importance as imp

    cfg = imp.ImportanceConfig.build(model, data, images_per_class=25, workers=1, threads=1, device="cpu")
    base = imp.Plan.build(cfg.score, lean=False)
    plan = imp.ImportancePlan(base, None)
    kind, probs, _ = imp._decide(plan)
    plan.spec = imp.Spec(
        kind, probs, tuple((u.index, imp.sample_units(u.channels, units, 0, u.index)) for u in base.units)
    )
    return plan


def _batches(plan, batch=32):
    ds = plan.dataset
    out = []
    for s in range(0, len(ds), batch):
        e = min(len(ds), s + batch)
        out.append((s, ds.load(s, e, plan.base.preprocess, plan.base.runner.input_dtype), ds.labels[s:e]))
    return out


def _split_time(plan, u, chosen, batches) -> dict:
    """Seconds of prefix, reference run and unit runs of one layer over all batches (the command's own code)."""
    import onnx_fe.experiments.importance as imp

    lr = plan.layer(u)
    res = imp.ImportanceShard(0, 0)
    res.seconds = {"prefix": 0.0, "suffix": 0.0, "reference": 0.0}
    t = time.perf_counter()
    for s, x, y in batches:
        imp._measure(plan, lr, chosen, x, y, len(x), s, res)
    wall = time.perf_counter() - t
    sec = res.seconds
    units = sec["suffix"] - sec["reference"]
    k = max(1, min(len(chosen), imp.stack_budget("cpu") // max(1, _block_bytes(plan, lr, batches[0][1]))))
    return {
        "wall": wall,
        "prefix": sec["prefix"],
        "reference": sec["reference"],
        "units": units,
        "per_unit": units / len(chosen),
        "k": k if lr.batchable else 1,
    }


def _block_bytes(plan, lr, x) -> int:
    if lr.prefix is None:
        return x.nbytes
    outs = lr.prefix.session.run(lr.prefix_outputs, {plan.model.input_name: x})
    return sum(a.nbytes for a in outs)


def _naive_time(plan, u, chosen, batches) -> float:
    """Seconds to measure the units with the whole masked model, one unit per run (no split, no stacking)."""
    from onnx_fe.model.masks import add_unit_masks
    from onnx_fe.model.runner import make_runner

    lm = plan.model
    masked, info = add_unit_masks(lm.model, [u.tap])
    mask = info[u.tap][0]
    r = make_runner(dataclasses.replace(lm, model=masked), [], device="cpu", threads=1, keep_outputs=True)
    out = lm.model.graph.output[0].name
    t = time.perf_counter()
    for c in chosen:
        m = np.ones((1, u.channels, 1, 1), np.float32)
        m[0, c] = 0
        for _, x, _ in batches:
            r.session.run([out], {lm.input_name: x, mask: m})
    return time.perf_counter() - t


def measure(units: int, ratio_layers: list[int]) -> dict:
    import nets
    from bench_pipeline import pink_images

    import onnx_fe.experiments.importance as imp

    model = nets.cached("resnet18")
    data = pink_images(25, 4)
    plan = _plan(model, data, units)
    batches = _batches(plan)
    t = time.perf_counter()
    for _, x, _ in batches:
        plan.forward(x)
    plain = time.perf_counter() - t
    layers = []
    chosen = dict(plan.spec.units)
    for u in plan.base.units:
        r = _split_time(plan, u, chosen[u.index], batches)
        r.update(
            index=u.index, name=u.name, channels=u.channels, size=f"{u.height}×{u.width}", sampled=len(chosen[u.index])
        )
        layers.append(r)
        print(
            f"layer {u.index:2d} {u.name:28s} {u.channels:4d} units: {r['per_unit']:.2f} s/unit (K={r['k']})",
            flush=True,
        )
    ratios = []
    for idx in ratio_layers:
        u = next(v for v in plan.base.units if v.index == idx)
        times = {"naive": [], "split": [], "stacked": []}
        for _ in range(2):
            times["naive"].append(_naive_time(plan, u, chosen[idx], batches))
            times["split"].append(_split_time(plan, u, chosen[idx], batches)["units"])  # the default: K = 1
            old = imp.STACK_BYTES_CPU
            imp.STACK_BYTES_CPU = imp.STACK_BYTES  # stacking as on CUDA
            try:
                times["stacked"].append(_split_time(plan, u, chosen[idx], batches)["units"])
            finally:
                imp.STACK_BYTES_CPU = old
        best = {k: min(v) / len(chosen[idx]) for k, v in times.items()}
        ratios.append({"index": idx, "name": u.name, "channels": u.channels, **best})
        print(f"ratio layer {idx}: {best}", flush=True)
    return {"plain": plain, "layers": layers, "ratios": ratios, "units": units, "n_images": len(plan.dataset)}


def table(m: dict) -> str:
    from bench_pipeline import machine

    rows = [
        "| # | layer | units | map | sampled | K | prefix s | reference s | s per unit | all units s (extrapolated) |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = m["plain"]
    for r in m["layers"]:
        full = r["channels"] * r["per_unit"] + r["prefix"] + r["reference"]
        total += full
        rows.append(
            f"| {r['index']} | {r['name']} | {r['channels']} | {r['size']} | {r['sampled']} | {r['k']} | "
            f"{r['prefix']:.2f} | {r['reference']:.2f} | {r['per_unit']:.2f} | {full:.0f} |"
        )
    n_units = sum(r["channels"] for r in m["layers"])
    ratio = [
        "| # | layer | units | naive s/unit | split, K = 1 s/unit | split + stacked s/unit | prefix reuse | stacking | split + stacked vs naive |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in m["ratios"]:
        ratio.append(
            f"| {r['index']} | {r['name']} | {r['channels']} | {r['naive']:.2f} | {r['split']:.2f} | "
            f"{r['stacked']:.2f} | {r['naive'] / r['split']:.2f}× | {r['split'] / r['stacked']:.2f}× | "
            f"{r['naive'] / r['stacked']:.2f}× |"
        )
    return "\n".join(
        [
            f"Measured by `python benchmarks/bench_importance.py --units {m['units']}` on {machine()}; "
            f"{m['n_images']} images, batches of 32, one onnxruntime thread.",
            "",
            *rows,
            "",
            f"Plain pass of the model over the {m['n_images']} images (the unmasked loss): {m['plain']:.1f} s. "
            f"**Whole network, all {n_units} units, extrapolated** from the sampled units: {total:.0f} s "
            f"= {total / 3600:.1f} h on one core (÷ N with `-j N` on N free cores).",
            "",
            *ratio,
        ]
    )


def write_docs(body: str) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text()
    begin, end = "<!-- bench_importance:begin -->", "<!-- bench_importance:end -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Ground-truth importance (onnx-fe importance)\n\n" + block + "\n"
    doc.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=2, help="sampled units per layer")
    ap.add_argument("--ratio-layers", default="0,5,10,15", help="layers of the speed-up comparison")
    ap.add_argument("--write", action="store_true", help="put the tables into docs/performance.md")
    args = ap.parse_args(argv)
    m = measure(args.units, [int(v) for v in args.ratio_layers.split(",") if v])
    body = table(m)
    print(body)
    if args.write:
        write_docs(body)


if __name__ == "__main__":
    main()
