"""The page docs/generalization.md from the records in docs/generalization-results/ (STUB, issue 23).

    python docs/studies/generalization.py

Reads the cards (gap, converged) and the networks_<family>_<method>.csv tables, merges the two methods' tables per
network (the baseline columns must agree: they do not depend on the method), and computes for every measure of the
registration τ per dataset, τ_overall, ψ_i per axis and Ψ with bootstrap CIs over networks, the 16 primary tests
with Holm's correction and their verdicts (generalization_stats.py). Writing the page and its figure is still to do.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalization_stats as gs
from generalization_run import RESULTS, registration


def table() -> tuple[list[dict], list[str]]:
    """One row per converged network: its card's gap and axes, and every measure of both methods."""
    r = registration()
    rows = {}
    for p in sorted((RESULTS / "cards").glob("*.json")):
        c = json.loads(p.read_text())
        if c["converged"] and c.get("smoke_max_epochs") is None:
            rows[c["name"]] = {"name": c["name"], "family": c["family"], "bits": c["bits"], "gap": c["gap"]}
            rows[c["name"]]["dataset"] = c["settings"]["dataset"]
    for p in sorted(RESULTS.glob("networks_*_*.csv")):
        method = p.stem.rsplit("_", 1)[1]
        with open(p) as f:
            for rec in csv.DictReader(f):
                row = rows.get(rec["model"]) or rows.get(Path(rec["path"]).parent.name)
                if row is None:
                    continue
                for k, v in rec.items():
                    if k.endswith(f"_{method}") or k in r["measures"]:
                        row[k] = float(v) if v not in ("", None) else float("nan")
    measures = [f"{m}_{meth}" for meth in r["methods"] for m in ("fe", "fe_rarefied", "birth_rate")]
    measures += [m for m in r["measures"] if m not in ("fe", "fe_rarefied", "birth_rate")]
    return list(rows.values()), measures


def analyse(rows: list[dict], measures: list[str]) -> dict:
    r = registration()
    gap = np.array([x["gap"] for x in rows])
    ds = np.array([x["dataset"] for x in rows])
    groups = _groups(rows)
    w = gs.resample_weights(ds, r["resamples"], r["bootstrap_seed"])
    out = {}
    for m in measures:
        v = np.array([x.get(m, np.nan) for x in rows])
        psi, per = gs.psi(v, gap, groups)
        out[m] = {
            "tau_overall": gs.tau_overall(v, gap, ds),
            "psi": psi,
            "psi_axes": per,
            "psi_ci": gs.bootstrap(lambda ww, v=v: gs.psi(v, gap, groups, ww)[0], w, r["ci_level"]),
        }
    return out


def _groups(rows: list[dict]) -> dict[int, list[tuple[int, int]]]:
    """One-axis pairs within each family (networks of different families are never a group)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for fam in sorted({x["family"] for x in rows}):
        idx = [i for i, x in enumerate(rows) if x["family"] == fam]
        for axis, pairs in gs.axis_groups([rows[i]["bits"] for i in idx]).items():
            out.setdefault(axis, []).extend((idx[a], idx[b]) for a, b in pairs)
    return out


def main():
    rows, measures = table()
    print(f"{len(rows)} converged networks with records")
    if not rows:
        return
    for m, s in analyse(rows, measures).items():
        print(
            f"{m:28s} tau {s['tau_overall']:+.3f}  Psi {s['psi']:+.3f}  CI {s['psi_ci'][0]:+.2f}..{s['psi_ci'][1]:+.2f}"
        )


if __name__ == "__main__":
    main()
