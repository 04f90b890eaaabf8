"""Generalisation study (docs/preregistration_generalization.md): the records, into docs/generalization-results/.

    python docs/studies/generalization_run.py            # every family whose networks are built (resumes)
    python docs/studies/generalization_run.py --list     # the families, their networks and what exists
    python docs/studies/generalization_run.py --zoo /tmp/zoo --results /tmp/res --cache /tmp/cache   # elsewhere

For each family and method it runs, through the command line a user runs,

    onnx-fe compare <the family's converged models> models/data/<dataset>/train -n 50 -m <method> [-l <layers>]
        --summary --permutations 0 --no-plot -o docs/.generalization-cache/<family>/<method>

and keeps ``networks_<family>_<method>.csv`` (the command's networks.csv) and each network's build card
(``cards/<network>.json``, copied from models/genzoo/) in docs/generalization-results/. Not-converged networks are not
scored (exclusion rule) but their cards are kept. A family and method whose table already holds exactly the family's
converged networks is not run again (resume); ``--force`` runs it anyway. The settings come from the registration,
with the amendments appended to the pre-registration applied (:func:`registration`).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "preregistration_generalization.md"
RESULTS = ROOT / "docs" / "generalization-results"
CACHE = ROOT / "docs" / ".generalization-cache"
ZOO = ROOT / "models" / "genzoo"

_BLOCK = re.compile(r"```json (prereg-generalization(?:-amendment)?)[ \t]*\n(.*?)```", re.S)


def _merge(base: dict, patch: dict) -> dict:
    """``base`` with ``patch``'s keys replacing its own; a dict replacing a dict is merged key by key in turn."""
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def registration(page: Path | None = None) -> dict:
    """The registered JSON block with every appended ``prereg-generalization-amendment`` block applied in page order.

    An amendment lists only the keys it changes (a nested object changes only the keys it lists; ``amendment`` (its
    number), ``date`` and ``reason`` are its own and not settings). ``"amendments"`` lists the applied ones: number,
    date, reason and the keys they changed."""
    text = (page or PAGE).read_text()
    blocks = _BLOCK.findall(text)
    if not blocks or blocks[0][0] != "prereg-generalization":
        raise SystemExit(f"{page or PAGE}: the registered 'prereg-generalization' JSON block is missing or not first")
    if sum(kind == "prereg-generalization" for kind, _ in blocks) != 1:
        raise SystemExit(f"{page or PAGE}: more than one registered block (changes go into amendment blocks)")
    r = json.loads(blocks[0][1])
    r["amendments"] = []
    for _kind, body in blocks[1:]:
        patch = json.loads(body)
        note = {k: patch.pop(k, None) for k in ("amendment", "date", "reason")} | {"keys": sorted(patch)}
        r = _merge(r, patch)
        r["amendments"] = [*r["amendments"], note]
    return r


def check_package(r: dict) -> None:
    """The measures' constants that compare --summary does not take as options must be the registration's."""
    from onnx_fe.scores import generalization as G

    s = r["sharpness"]
    have = {
        "delta": G.SHARPNESS_DELTA,
        "draws": G.SHARPNESS_DRAWS,
        "steps": G.SHARPNESS_STEPS,
        "sigma_range_additive": list(G.SIGMA_RANGE["additive"]),
        "sigma_range_multiplicative": list(G.SIGMA_RANGE["multiplicative"]),
        "seed": 0,
    }
    bad = [f"sharpness {k}: registered {s.get(k)!r}, package {v!r}" for k, v in have.items() if s.get(k) != v]
    if r["margin_quantile"] != G.MARGIN_QUANTILE:
        bad.append(f"margin_quantile: registered {r['margin_quantile']}, package {G.MARGIN_QUANTILE}")
    if bad:
        raise SystemExit("the registration and onnx_fe disagree: " + "; ".join(bad))


def cards(zoo: Path = ZOO) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(zoo.glob("*/card.json"))}


def commands(r: dict, family: str, method: str, models: list[Path], cache: Path = CACHE) -> list[str]:
    """The arguments of ``onnx-fe`` that make one family's table for one method."""
    f = r["families"][family]
    args = ["compare", *map(str, models), str(ROOT / r["scoring_images"][f["dataset"]])]
    args += ["-n", str(r["scoring_images"]["images_per_class"]), "-m", method]
    for k, v in r["methods"][method].items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    if f["layers"] != "all":
        args += ["-l", f["layers"]]
    return [*args, "--summary", "--permutations", "0", "--no-plot", "-q", "-o", str(cache / family / method)]


def _table_models(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    with open(path) as f:
        return [row["model"] for row in csv.DictReader(f)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="only say what is built and recorded")
    ap.add_argument("--zoo", type=Path, default=ZOO, help="the built networks (default models/genzoo)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the records (default docs/generalization-results)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="compare's outputs (default docs/.generalization-cache)")
    ap.add_argument("--family", default="", help="comma-separated families (default: all)")
    ap.add_argument("--force", action="store_true", help="run a family and method again even if its table is done")
    a = ap.parse_args(argv)
    r = registration()
    check_package(r)
    built = cards(a.zoo)
    families = [x for x in a.family.split(",") if x] or list(r["families"])
    for family in families:
        if family not in r["families"]:
            raise SystemExit(f"unknown family {family!r}; registered: {', '.join(r['families'])}")
        nets = {n: c for n, c in built.items() if c["family"] == family}
        ok = [a.zoo / n / "model.onnx" for n, c in nets.items() if c["converged"]]
        print(f"{family}: {len(nets)} built, {len(ok)} converged", flush=True)
        if a.list or not ok:
            continue
        (a.results / "cards").mkdir(parents=True, exist_ok=True)
        for n in nets:
            shutil.copyfile(a.zoo / n / "card.json", a.results / "cards" / f"{n}.json")
        for method in r["methods"]:
            dest = a.results / f"networks_{family}_{method}.csv"
            if not a.force and _table_models(dest) == [p.parent.name for p in ok]:
                print(f"  {method}: recorded", flush=True)
                continue
            t0 = time.time()
            cmd = [sys.executable, "-m", "onnx_fe.cli", *commands(r, family, method, ok, a.cache)]
            subprocess.run(cmd, check=True)
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(a.cache / family / method / "networks.csv", tmp)
            tmp.replace(dest)
            print(f"  {method}: {len(ok)} networks in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
