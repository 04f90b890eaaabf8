"""Generalisation study (docs/preregistration_generalization.md): the records, into docs/generalization-results/.

    python docs/studies/generalization_run.py            # every family whose networks are built (resumes)
    python docs/studies/generalization_run.py --list     # the families, their networks and what exists

STUB (issue 23): the steps are fixed, the runs are not made yet. For each family and method it runs, through the
command line a user runs,

    onnx-fe compare <the family's converged models> models/data/<dataset>/train -n 50 -m <method> [-l <layers>]
        --summary --permutations 0 --no-plot -o docs/.generalization-cache/<family>/<method>

and keeps ``networks_<family>_<method>.csv`` (the command's networks.csv) and each network's build card
(``cards/<network>.json``, copied from models/genzoo/) in docs/generalization-results/. Not-converged networks are not
scored (exclusion rule) but their cards are kept.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "preregistration_generalization.md"
RESULTS = ROOT / "docs" / "generalization-results"
CACHE = ROOT / "docs" / ".generalization-cache"
ZOO = ROOT / "models" / "genzoo"


def registration() -> dict:
    """The JSON block of the pre-registration (amendments: none yet)."""
    text = PAGE.read_text()
    return json.loads(re.search(r"```json prereg-generalization\n(.*?)```", text, re.S).group(1))


def cards() -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(ZOO.glob("*/card.json"))}


def commands(r: dict, family: str, method: str, models: list[Path]) -> list[str]:
    f = r["families"][family]
    args = ["compare", *map(str, models), str(ROOT / r["scoring_images"][f["dataset"]])]
    args += ["-n", str(r["scoring_images"]["images_per_class"]), "-m", method]
    for k, v in r["methods"][method].items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    if f["layers"] != "all":
        args += ["-l", f["layers"]]
    return [*args, "--summary", "--permutations", "0", "--no-plot", "-q", "-o", str(CACHE / family / method)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    r = registration()
    built = cards()
    for family in r["families"]:
        nets = {n: c for n, c in built.items() if c["family"] == family}
        ok = [ZOO / n / "model.onnx" for n, c in nets.items() if c["converged"]]
        print(f"{family}: {len(nets)} built, {len(ok)} converged")
        if a.list or not ok:
            continue
        (RESULTS / "cards").mkdir(parents=True, exist_ok=True)
        for n in nets:
            shutil.copyfile(ZOO / n / "card.json", RESULTS / "cards" / f"{n}.json")
        for method in r["methods"]:
            subprocess.run([sys.executable, "-m", "onnx_fe.cli", *commands(r, family, method, ok)], check=True)
            shutil.copyfile(CACHE / family / method / "networks.csv", RESULTS / f"networks_{family}_{method}.csv")


if __name__ == "__main__":
    main()
