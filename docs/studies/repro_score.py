"""Reproduction v2, scoring of the confirmatory networks (seeds 1-5) into docs/repro-results/s<seed>/.

    python docs/studies/repro_score.py                  # every record whose network is built; waits for none
    python docs/studies/repro_score.py --follow         # keep going while models/build_seeds.py is still training
    python docs/studies/repro_score.py --seeds 1 -j 2

One record per network × image set × method (repro_data.score_record); a record that exists and was made from the
same model bytes, images and method is kept, so the step resumes where it stopped. Needs only the scoring install.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import repro_data as D

RESULTS = D.ROOT / "docs" / "repro-results"
SEEDS_DIR = D.ROOT / "models" / "seeds"
METHODS = ("cubical", "clique")
FOLDER = {
    "digits": D.ROOT / "models/data/digits",
    "shapes": D.ROOT / "models/data/shapes",
}
PRE = {
    "digits": {"scale": 1 / 255, "mean": [0.0], "std": [1.0], "color": "gray"},
    "shapes": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "color": "rgb"},
}
LAST_ELIGIBLE = 3  # conv 3 (8x8) of the shapes VGG and VGG-BN
GENA = ("genA_n6000", "genA_n2000", "genA_n600", "genA_n200")
GENB = tuple(f"genB_{r:.1f}" for r in (0.0, 0.2, 0.4, 0.6, 0.8))


def jobs(seed: int) -> list[dict]:
    """Every record of one seed: name, unit (the build unit it needs), model file, data, split, layers."""
    out = []

    def add(unit, role, model, data, split, layers=None):
        for method in METHODS:
            out.append(
                {
                    "name": f"{unit}__{role}__{split}__{method}",
                    "unit": unit,
                    "model": model,
                    "data": data,
                    "split": split,
                    "layers": layers,
                    "method": method,
                }
            )

    for unit, data in (("digits_vgg", "digits"), ("shapes_vgg", "shapes")):
        conv, init = ("converged", "init") if unit == "digits_vgg" else ("epoch_10", "epoch_00")
        for role, model in (("converged", conv), ("init", init), ("rescaled", "rescaled")):
            add(unit, role, model, data, "test")
        add(unit, "converged", conv, data, "train")  # claim 6: the ranking comes from the training split
    for unit, data in (
        ("shapes_vgg_bn", "shapes"),
        ("shapes_resnet", "shapes"),
        ("depthnet_digits", "digits"),
        ("depthnet_shapes", "shapes"),
    ):
        for role in ("converged", "init"):
            add(unit, role, role, data, "test")
    for unit, data in (
        ("digits_vgg", "digits"),
        ("shapes_vgg", "shapes"),
        ("shapes_vgg_bn", "shapes"),
        ("shapes_resnet", "shapes"),
    ):  # claim 2's secondary control: the converged network's `onnx-fe randomize --seed <seed>` twin
        add(unit, "randomize", "randomize", data, "test")
    for ep in range(0, 10):  # claim 4 (epoch 10 = the converged record on train, all eligible layers)
        add("shapes_vgg", f"epoch_{ep:02d}", f"epoch_{ep:02d}", "shapes", "train", [LAST_ELIGIBLE])
    for unit in GENA + GENB:
        add(unit, "converged", "converged", "shapes", "train", [LAST_ELIGIBLE])
    for j in out:
        j["seed"] = seed
        j["out"] = RESULTS / f"s{seed}" / f"{j['name']}.npz"
    return out


def ablation_jobs(seed: int) -> list[dict]:
    """Claim 6: one ablation record per family, after both methods' training-split records exist."""
    out = []
    for unit, data in (("digits_vgg", "digits"), ("shapes_vgg", "shapes")):
        need = [RESULTS / f"s{seed}" / f"{unit}__converged__{sp}__{m}.npz" for m in METHODS for sp in ("train", "test")]
        out.append(
            {
                "name": f"{unit}__ablation__test",
                "kind": "ablation",
                "unit": unit,
                "data": data,
                "seed": seed,
                "needs": need,
                "model": "converged" if unit == "digits_vgg" else "epoch_10",
                "out": RESULTS / f"s{seed}" / f"{unit}__ablation__test.npz",
            }
        )
    return out


def cubical_threshold() -> int:
    return int(json.loads((RESULTS / "cubical_rule.json").read_text())["threshold"])


def run_ablation(j: dict) -> tuple[str, float]:
    import repro_claims as RC

    t = time.perf_counter()
    thr = cubical_threshold()
    recs = {}
    for m in METHODS:
        rec = D.load_record(RESULTS / f"s{j['seed']}" / f"{j['unit']}__converged__train__{m}.npz")
        if m == "cubical":
            for layer in rec["layers"]:
                layer["bp"] = D.censor(layer["bp"], thr)
        recs[m] = rec
    test = D.load_record(RESULTS / f"s{j['seed']}" / f"{j['unit']}__converged__test__cubical.npz")
    orders = RC.rankings(recs)
    model = SEEDS_DIR / f"s{j['seed']}" / j["unit"] / f"{j['model']}.onnx"
    D.ablation_record(
        model, FOLDER[j["data"]] / "test", PRE[j["data"]]["color"], test["image_ids"], test["labels"], orders, j["out"]
    )
    return f"s{j['seed']}/{j['name']}", time.perf_counter() - t


def unit_done(seed: int, unit: str) -> bool:
    sys.path.insert(0, str(D.ROOT))
    from models.build_seeds import is_done

    return is_done(seed, unit)


def run_job(j: dict) -> tuple[str, float]:
    t = time.perf_counter()
    udir = SEEDS_DIR / f"s{j['seed']}" / j["unit"]
    if j["model"] == "rescaled":
        src = udir / ("converged.onnx" if j["unit"] == "digits_vgg" else "epoch_10.onnx")
        model = D.rescaled_twin(src, udir / "rescaled.onnx", layer=0, alpha=3.0)
    elif j["model"] == "randomize":
        import onnx_fe

        src = udir / ("epoch_10.onnx" if j["unit"] == "shapes_vgg" else "converged.onnx")
        model = udir / "randomize.onnx"
        onnx_fe.randomize(src, model, seed=j["seed"])
    else:
        model = udir / f"{j['model']}.onnx"
    data = FOLDER[j["data"]] / j["split"]
    card = udir / "card.json"  # the page reads accuracies and losses from a copy beside the records
    dst = RESULTS / f"s{j['seed']}" / "cards" / f"{j['unit']}.json"
    if not dst.exists() or dst.read_bytes() != card.read_bytes():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(card.read_bytes())
    D.score_record(model, data, j["method"], PRE[j["data"]], j["out"], layers=j["layers"])
    return f"s{j['seed']}/{j['name']}", time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--follow", action="store_true", help="wait for networks still being trained")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    todo = [j for s in seeds for j in jobs(s)] + [j for s in seeds for j in ablation_jobs(s)]
    import concurrent.futures as cf
    import multiprocessing as mp

    t0 = time.time()
    running: dict = {}
    with cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as ex:
        while todo or running:
            ready = [
                j
                for j in todo
                if unit_done(j["seed"], j["unit"])
                and all(p.exists() for p in j.get("needs", []))
                and not any(r.get("needs") and r["name"] == j["name"] for r in running.values())
            ]
            for j in ready:
                if len(running) >= 2 * a.jobs:
                    break
                todo.remove(j)
                running[ex.submit(run_ablation if j.get("kind") == "ablation" else run_job, j)] = j
            if not running:
                if not a.follow:
                    print(f"{len(todo)} records wait for networks not built yet")
                    break
                time.sleep(20)
                continue
            done, _ = cf.wait(running, timeout=20, return_when=cf.FIRST_COMPLETED)
            for f in done:
                j = running.pop(f)
                name, secs = f.result()
                print(f"{name}: {secs:.1f}s (elapsed {time.time() - t0:.0f}s)", flush=True)
    print(json.dumps({"seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
