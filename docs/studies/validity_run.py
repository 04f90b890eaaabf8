"""Validity study (docs/preregistration_validity.md): the records of every network, into docs/validity-results/.

    python docs/studies/validity_run.py                   # every record whose network is built (resumes)
    python docs/studies/validity_run.py --sets zoo --seeds 1,2
    python docs/studies/validity_run.py --list            # the networks and whether each record exists

For each network this runs, through the command line a user runs:

    onnx-fe score      MODEL TRAIN -o CACHE/<net>/<method> -m <method> -n 100 -l <eligible layers>   (both methods)
    onnx-fe importance MODEL TEST  -o CACHE/<net>/importance -n 100 -l <eligible layers> [--units-per-layer 32]

and keeps, per network, a small record in ``docs/validity-results/<net>/``: ``units_<method>.csv`` (one row per unit:
the class means of every indicator, as ``onnx-fe rank`` aggregates them), ``importance.csv`` (as written by the
command) and ``card.json`` (model SHA-256, images, commands, versions, times, the unmasked held-out accuracy). A record
whose card matches the model's bytes and the commands is kept, so the step resumes where it stopped. The cache
(``docs/.validity-cache``, git-ignored) holds the full results. Needs only the scoring install and the built networks
(``python -m models.build_seeds`` and ``python -m models.build_thirdparty``). The card records the commit of the
onnx_fe code that made it; to make records with a fixed commit while the code changes, check that commit out in a
``git worktree`` and run this script from outside the repository with ``PYTHONPATH=<worktree>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGE = DOCS / "preregistration_validity.md"
RESULTS = DOCS / "validity-results"
CACHE = DOCS / ".validity-cache"
SEEDS_DIR = ROOT / "models" / "seeds"
THIRD = ROOT / "models" / "thirdparty"
DATA = {"digits_vgg": "digits", "shapes_vgg": "shapes", "shapes_vgg_bn": "shapes", "shapes_resnet": "shapes"}
METHODS = ("cubical", "clique")


def rules() -> dict:
    """The registered JSON block, with every appended amendment block (``prereg-validity-amendment``) merged in."""
    text = PAGE.read_text()
    out: dict = {}
    for _kind, body in re.findall(r"```json (prereg-validity(?:-amendment)?)\n(.*?)\n```", text, flags=re.S):
        patch = json.loads(body)
        patch.pop("date", None)
        patch.pop("reason", None)
        out.update(patch)
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def networks(r: dict) -> list[dict]:
    """Every network of the registration: id, set, family, seed, model path, train / test folders, options."""
    out = []
    for seed in r["seeds"]:
        for fam in r["zoo_families"]:
            data = ROOT / "models" / "data" / DATA[fam]
            base = {"family": fam, "seed": seed, "train": data / "train", "test": data / "test", "options": []}
            out.append(
                {**base, "id": f"s{seed}__{fam}__trained", "set": "zoo", "role": "trained",
                 "model": SEEDS_DIR / f"s{seed}" / fam / r["zoo_models"][fam]}
            )  # fmt: skip
            if fam in r["init_models"]:
                out.append(
                    {**base, "id": f"s{seed}__{fam}__init", "set": "init", "role": "init",
                     "model": SEEDS_DIR / f"s{seed}" / fam / r["init_models"][fam]}
                )  # fmt: skip
    for name in r.get("third_party", []):
        card = json.loads((THIRD / name / "card.json").read_text())
        out.append(
            {
                "id": f"tp__{name}",
                "set": "thirdparty",
                "role": "trained",
                "family": name,
                "seed": None,
                "model": THIRD / name / "model.onnx",
                "train": THIRD / name / "data" / "train",
                "test": THIRD / name / "data" / "test",
                "options": [
                    a for k, v in card["onnx_fe_options"].items() for a in (f"--{k.replace('_', '-')}", str(v))
                ],
            }
        )
    return out


def _input_size(options: list[str]):
    if "--input-size" in options:
        h, w = options[options.index("--input-size") + 1].lower().split("x")
        return int(h), int(w)
    return None


def eligible_units(model: Path, options: list[str], r: dict) -> list:
    """Scorable conv layers with maps of at least min_map_side² and at least min_units units."""
    from onnx_fe.experiments.score import inspect

    side, k = r["min_map_side"], r["min_units"]
    return [
        u
        for u in inspect(model, input_size=_input_size(options))
        if u.scorable and (u.height or 0) >= side and (u.width or 0) >= side and (u.channels or 0) >= k
    ]


def cli(*args: str) -> float:
    """Run the onnx-fe command line (the same interpreter's entry point); returns the wall seconds."""
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "onnx_fe.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return time.perf_counter() - t


def unit_table(results_dir: Path):
    """One row per unit: every indicator's unit value, read exactly as ``onnx-fe validate`` reads it (class means,
    as ``onnx-fe rank`` aggregates them)."""
    import pandas as pd

    from onnx_fe.experiments.validate import INDICATORS, read_indicators

    _, meta, layers = read_indicators(results_dir)
    rows = []
    for lay in layers:
        n = len(lay.values["feature_entropy"])
        for j in range(n):
            row = {"layer": lay.name, "layer_index": lay.index, "unit": j}
            row.update({k: float(lay.values[k][j]) for k in INDICATORS if k in lay.values})
            rows.append(row)
    return pd.DataFrame(rows), meta


def record(net: dict, r: dict, force: bool = False) -> str:
    """Make (or keep) the record of one network; returns what was done."""
    model = Path(net["model"])
    if not model.exists():
        return "not built"
    dest = RESULTS / net["id"]
    digest = sha256(model)
    units = eligible_units(model, net["options"], r)
    layers = [u.index for u in units]
    lflag = ["-l", ",".join(map(str, layers))]
    n_units = sum(u.channels for u in units)
    sample = ["--units-per-layer", str(r["units_per_layer_sample"])] if n_units > r["max_units_all"] else []
    commands = {}
    for method in METHODS:
        params = r["methods"][method]
        mlayers = layers
        if method == "clique":  # the paper's construction is defined on square maps only
            mlayers = [u.index for u in units if u.height == u.width]
        if not mlayers:
            continue
        mflags = ["-m", method]
        for k, v in params.items():
            mflags += [f"--{k.replace('_', '-')}", str(v)]
        commands[method] = ["score", model, net["train"], "-n", "100", "-l", ",".join(map(str, mlayers)), *mflags]
        commands[method] += net["options"]
    commands["importance"] = ["importance", model, net["test"], "-n", "100", *lflag, *sample, *net["options"]]
    shown = {k: [str(a).replace(str(ROOT) + os.sep, "") for a in v] for k, v in commands.items()}
    card_path = dest / "card.json"
    if not force and card_path.exists():
        old = json.loads(card_path.read_text())
        if old.get("model_sha256") == digest and old.get("commands") == shown:
            return "kept"
    cache = CACHE / net["id"]
    seconds = {}
    for what, argv in commands.items():
        seconds[what] = round(cli(*argv, "-o", cache / what, "-q"), 1)
    dest.mkdir(parents=True, exist_ok=True)
    methods_meta = {}
    for method in METHODS:
        if method not in commands:
            (dest / f"units_{method}.csv").unlink(missing_ok=True)
            continue
        table, meta = unit_table(cache / method)
        if meta["model_sha256"] != digest:
            raise SystemExit(f"{cache / method}: scored from another model file than {model}")
        table.to_csv(dest / f"units_{method}.csv", index=False)
        methods_meta[method] = meta
    imp = (cache / "importance" / "importance.csv").read_bytes()
    (dest / "importance.csv").write_bytes(imp)
    meta = {}
    side = cache / "importance" / "importance.json"
    if side.exists():
        meta = json.loads(side.read_text())
    import onnx_fe
    from onnx_fe import __version__ as version

    code = Path(onnx_fe.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "onnx_fe"], cwd=code, capture_output=True, text=True)

    card = {
        "id": net["id"],
        "set": net["set"],
        "family": net["family"],
        "seed": net["seed"],
        "role": net["role"],
        "model": str(model.relative_to(ROOT)),
        "model_sha256": digest,
        "eligible_layers": layers,
        "commands": shown,
        "seconds": seconds,
        "importance_meta": {k: meta[k] for k in ("baseline", "unmasked", "n_images", "output_kind") if k in meta},
        "onnx_fe_version": version,
        "onnx_fe_commit": commit + ("+uncommitted" if dirty.stdout.strip() else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "made": time.strftime("%Y-%m-%d %H:%M"),
    }
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, card_path)  # the card is written last: a record without it is incomplete
    return "made"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="zoo,init,thirdparty")
    ap.add_argument("--seeds", default="")
    ap.add_argument("--only", default="", help="comma-separated network ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    r = rules()
    sets = set(a.sets.split(","))
    seeds = {int(s) for s in a.seeds.split(",") if s}
    only = {s for s in a.only.split(",") if s}
    todo = [
        n
        for n in networks(r)
        if n["set"] in sets and (not seeds or n["seed"] in seeds) and (not only or n["id"] in only)
    ]
    for n in todo:
        if a.list:
            done = (RESULTS / n["id"] / "card.json").exists()
            print(f"{n['id']:40s} {'record' if done else ('built' if Path(n['model']).exists() else 'not built')}")
            continue
        t = time.perf_counter()
        what = record(n, r, force=a.force)
        print(f"{n['id']}: {what} ({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
