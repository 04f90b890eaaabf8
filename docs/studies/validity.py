"""Validity study (docs/preregistration_validity.md): docs/validity.md and its figure from the committed records.

    python docs/studies/validity.py              # the page from docs/validity-results/ (no model, no inference)
    python docs/studies/validity.py --rebuild    # first make the missing records (validity_run.py), then the page

Every per-network statistic is computed by the package's own code (``onnx_fe.experiments.validate.compute``, the
function behind ``onnx-fe validate``) from the per-unit tables of the records; this script only combines networks
(``validity_stats.py``: the registered t-interval, Holm, verdicts) and writes the page.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validity_run as R
import validity_stats as VS

from onnx_fe.experiments import validate as VAL

OUT = R.DOCS / "validity.md"
FIG = R.DOCS / "img" / "validity.png"
SUMMARY = R.RESULTS / "summary.json"
METHODS = R.METHODS
HYP = ("H1", "H2", "H3")
HYP_TEXT = {
    "H1": "FE predicts importance better than mean activation (−ρ(FE) − ρ(mean activation))",
    "H2": "FE carries information beyond birth rate and mean activation (−partial ρ)",
    "H3": "FE improves a cross-validated prediction from the activity statistics (gain in ρ)",
}


# --------------------------------------------------------------------------- per network


def load_record(rec_dir: Path, method: str, fe_column: str = "feature_entropy", target: str = "delta_loss"):
    """The joined layers (validate's _Layer objects, restricted to units with a target) and their targets."""
    units = pd.read_csv(rec_dir / f"units_{method}.csv")
    imp = pd.read_csv(rec_dir / "importance.csv")
    df = units.merge(imp[["layer_index", "unit", target]], on=["layer_index", "unit"], how="inner")
    layers, targets = [], []
    for idx, g in df.groupby("layer_index", sort=True):
        g = g.sort_values("unit")
        vals = {k: g[k].to_numpy(dtype=np.float64) for k in VAL.INDICATORS if k in g}
        if fe_column != "feature_entropy":
            vals["feature_entropy"] = g[fe_column].to_numpy(dtype=np.float64)
        layers.append(VAL._Layer(int(idx), str(g["layer"].iloc[0]), vals))
        targets.append(g[target].to_numpy(dtype=np.float64))
    return layers, targets


def network_stats(rec_dir: Path, method: str, rules: dict, full: bool = True, **kw) -> dict:
    """validity rows, the pooled replicates, and the three registered effects with their replicates.

    ``full``: every indicator (``onnx-fe validate``'s ``compute``); otherwise only what the three effects need
    (the sensitivity variants), with the same functions, resamples and seed."""
    layers, targets = load_record(rec_dir, method, **kw)
    if full:
        rows, reps, notes = VAL.compute(
            layers,
            targets,
            target=kw.get("target", "delta_loss"),
            method=method,
            resamples=rules["resamples"],
            seed=rules["seed"],
            ci_level=rules["ci_level"],
        )
        pooled = {r["indicator"]: r for r in rows if r["layer_index"] == "all"}
    else:
        V, level = VAL.V, rules["ci_level"]
        idx = V.resample_indices([len(t) for t in targets], rules["resamples"], rules["seed"])
        col = lambda k: [lay.values[k] for lay in layers]
        est = {
            "feature_entropy": V.correlation(col("feature_entropy"), targets, idx, level).pooled,
            "mean_activation": V.correlation(col("mean_activation"), targets, idx, level).pooled,
            VAL.PARTIAL: V.partial_correlation(
                col("feature_entropy"),
                targets,
                [[lay.values[c] for c in VAL.PARTIAL_COVARIATES] for lay in layers],
                idx,
                level,
            ).pooled,
            VAL.INCREMENT: V.incremental_gain(
                targets,
                [[lay.values[b] for b in VAL.BASE_FEATURES] for lay in layers],
                col("feature_entropy"),
                idx,
                seed=rules["seed"],
                level=level,
            ),
        }
        pooled = {k: {"spearman": e.value, "n_units": e.n_units} for k, e in est.items()}
        reps = {k: e.replicates for k, e in est.items()}
        rows, notes = [], []
    e = {
        "H1": (
            -pooled["feature_entropy"]["spearman"] - pooled["mean_activation"]["spearman"],
            -reps["feature_entropy"] - reps["mean_activation"],
        ),
        "H2": (-pooled[VAL.PARTIAL]["spearman"], -reps[VAL.PARTIAL]),
        "H3": (pooled[VAL.INCREMENT]["spearman"], reps[VAL.INCREMENT]),
    }
    return {"rows": rows, "reps": reps, "effects": e, "notes": notes, "pooled": pooled}


# --------------------------------------------------------------------------- combination


def combine_groups(groups: dict, effect_of, level: float):
    """groups: {group key: [network stats]}; each group's effect (and replicate) = the mean over its networks."""
    eff, reps = [], []
    for nets in groups.values():
        vals = [effect_of(n) for n in nets]
        eff.append(float(np.mean([v[0] for v in vals])) if vals else math.nan)
        reps.append(np.mean([v[1] for v in vals], axis=0))
    if not eff:
        return VS.combine([], np.zeros((0, 1)), level)
    return VS.combine(eff, np.vstack(reps), level)


def fmt(v, d=3):
    return "–" if v is None or not np.isfinite(v) else f"{v:+.{d}f}"


def fmt_p(p):
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


# --------------------------------------------------------------------------- the page


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rebuild", action="store_true", help="make the missing records first (needs the networks)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rules = R.rules()
    if a.rebuild:
        R.main([])
    nets = [n for n in R.networks(rules) if (R.RESULTS / n["id"] / "card.json").exists()]
    cards = {n["id"]: json.loads((R.RESULTS / n["id"] / "card.json").read_text()) for n in nets}
    level = rules["ci_level"]

    stats = {}  # (id, method, variant) -> network stats
    variants = {"primary": {}, "rarefied": {"fe_column": "fe_rarefied"}, "top1": {"target": "delta_top1"}}
    for n in nets:
        for m in METHODS:
            if not (R.RESULTS / n["id"] / f"units_{m}.csv").exists():
                continue  # clique on a network without square maps
            for vname, kw in variants.items():
                if vname != "primary" and n["set"] == "init":
                    continue
                stats[(n["id"], m, vname)] = network_stats(R.RESULTS / n["id"], m, rules, vname == "primary", **kw)

    def by(set_name, method, variant="primary", family=None, group="seed"):
        groups: dict = {}
        for n in nets:
            if n["set"] != set_name or (family and n["family"] != family):
                continue
            if (n["id"], method, variant) not in stats:
                continue
            key = n["seed"] if group == "seed" else n["id"]
            groups.setdefault(key, []).append(stats[(n["id"], method, variant)])
        return groups

    # ---- primary tests: H x method x set, Holm over all of them
    primary = []
    for s in ("zoo", "thirdparty"):
        for m in METHODS:
            for h in HYP:
                g = by(s, m, group="seed" if s == "zoo" else "id")
                c = combine_groups(g, lambda st, h=h: st["effects"][h], level)
                primary.append({"set": s, "method": m, "hypothesis": h, "c": c})
    adj = VS.holm([p["c"].p for p in primary])
    for p, q in zip(primary, adj):
        p["p_holm"] = float(q)
        p["verdict"] = VS.verdict(p["c"].m, float(q), 1, rules["alpha"])

    # ---- secondary: per family and per third-party network
    secondary = []
    for m in METHODS:
        for fam in rules["zoo_families"]:
            for h in HYP:
                c = combine_groups(by("zoo", m, family=fam), lambda st, h=h: st["effects"][h], level)
                secondary.append(
                    {"what": fam, "method": m, "hypothesis": h, "m": c.m, "low": c.low, "high": c.high, "p": c.p}
                )
        for n in nets:
            if n["set"] != "thirdparty":
                continue
            if (n["id"], m, "primary") not in stats:
                continue
            for h in HYP:
                val, rep = stats[(n["id"], m, "primary")]["effects"][h]
                lo, hi = VAL.V.percentile_ci(rep, level)
                secondary.append(
                    {"what": n["id"], "method": m, "hypothesis": h, "m": val, "low": lo, "high": hi,
                     "p": VS.bootstrap_p(val, rep)}
                )  # fmt: skip
    adj2 = VS.holm([r["p"] for r in secondary])
    for r, q in zip(secondary, adj2):
        r["p_holm"] = float(q)
        r["verdict"] = VS.verdict(r["m"], float(q), 1, rules["alpha"])

    # ---- every indicator's pooled rho, combined like the effects (zoo over seeds; third-party over networks)
    indicator_rows = []
    for s in ("zoo", "thirdparty", "init"):
        for m in METHODS:
            grp = by(s, m, group="seed" if s in ("zoo", "init") else "id")
            for k in [*VAL.INDICATORS, VAL.PARTIAL, VAL.INCREMENT]:
                have = [st for nets_ in grp.values() for st in nets_ if k in st["pooled"]]
                if not have:
                    continue
                c = combine_groups(
                    grp,
                    lambda st, k=k: (st["pooled"][k]["spearman"], st["reps"][k]) if k in st["pooled"] else (math.nan, np.full(rules["resamples"], np.nan)),
                    level,
                )  # fmt: skip
                indicator_rows.append(
                    {"set": s, "method": m, "indicator": k, "rho": c.m, "low": c.low, "high": c.high,
                     "expected_sign": VAL.EXPECTED_SIGN[k], "groups": c.n}
                )  # fmt: skip

    # ---- per zoo family: the main indicators, combined over the family's seeds
    family_rows = []
    for fam in rules["zoo_families"]:
        for m in METHODS:
            grp = by("zoo", m, family=fam)
            for k in FAMILY_INDICATORS:
                c = combine_groups(grp, lambda st, k=k: (st["pooled"][k]["spearman"], st["reps"][k]), level)
                family_rows.append(
                    {"family": fam, "method": m, "indicator": k, "rho": c.m, "low": c.low, "high": c.high}
                )

    # ---- sensitivity: rarefied FE and delta_top1
    sens = []
    for vname in ("rarefied", "top1"):
        for s in ("zoo", "thirdparty"):
            for m in METHODS:
                for h in HYP:
                    g = by(s, m, vname, group="seed" if s == "zoo" else "id")
                    c = combine_groups(g, lambda st, h=h: st["effects"][h], level)
                    sens.append(
                        {
                            "variant": vname,
                            "set": s,
                            "method": m,
                            "hypothesis": h,
                            "m": c.m,
                            "low": c.low,
                            "high": c.high,
                            "p": c.p,
                        }
                    )

    write_page(
        rules, nets, cards, stats, primary, secondary, indicator_rows, sens, family_rows, time.perf_counter() - t0
    )
    figure(nets, stats, indicator_rows)
    SUMMARY.write_text(
        json.dumps(
            {
                "primary": [
                    {"set": p["set"], "method": p["method"], "hypothesis": p["hypothesis"], "m": p["c"].m,
                     "ci_low": p["c"].low, "ci_high": p["c"].high, "p": p["c"].p, "p_holm": p["p_holm"],
                     "n": p["c"].n, "verdict": p["verdict"]}
                    for p in primary
                ],
                "networks": sorted(n["id"] for n in nets),
            },
            indent=1,
            allow_nan=True,
        )
        + "\n"
    )  # fmt: skip
    print(f"wrote {OUT.relative_to(R.ROOT)} ({time.perf_counter() - t0:.0f} s)")
    return 0


def figure(nets, stats, indicator_rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [*VAL.INDICATORS]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, m in zip(axes, METHODS):
        for k, ind in enumerate(order):
            for s, color, dy in (("zoo", "C0", -0.15), ("thirdparty", "C3", 0.15)):
                rows = [r for r in indicator_rows if r["set"] == s and r["method"] == m and r["indicator"] == ind]
                for r in rows:
                    if np.isfinite(r["rho"]):
                        lo = r["low"] if np.isfinite(r["low"]) else r["rho"]
                        hi = r["high"] if np.isfinite(r["high"]) else r["rho"]
                        ax.errorbar(r["rho"], k + dy, xerr=[[r["rho"] - lo], [hi - r["rho"]]], fmt="o", color=color,
                                    ms=5, capsize=2, label=None)  # fmt: skip
                for n in nets:
                    if n["set"] != s:
                        continue
                    st = stats.get((n["id"], m, "primary"))
                    if st and ind in st["pooled"] and np.isfinite(st["pooled"][ind]["spearman"]):
                        ax.plot(st["pooled"][ind]["spearman"], k + dy, ".", color=color, alpha=0.25, ms=4)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_yticks(range(len(order)), order)
        if ax is axes[0]:  # the y axis is shared: invert it once
            ax.invert_yaxis()
        ax.set_xlabel("pooled within-layer Spearman ρ with Δloss")
        ax.set_title(f"{m}")
        ax.set_xlim(-1, 1)
    axes[0].plot([], [], "o", color="C0", label="zoo, 20 networks (mean, 95 % CI over seeds)")
    axes[0].plot([], [], "o", color="C3", label="third-party (mean, 95 % CI over networks)")
    axes[0].plot([], [], ".", color="0.4", alpha=0.5, label="one network")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    FIG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG, dpi=110, metadata={"Software": None})
    plt.close(fig)


BASELINES = ("mean_activation", "apoz", "weight_l1", "hrank", "activation_std")
FAMILY_INDICATORS = ("feature_entropy", "fe_reference", "birth_rate", "mean_activation", "activation_std")
SET_NAME = {"zoo": "In the zoo", "thirdparty": "In the third-party classifiers"}


def reading(primary, indicator_rows) -> list[str]:
    """What the numbers say, one bullet per set × method, worded by the registered reading rule (no more than the
    tables under it)."""
    out = []
    for s in ("zoo", "thirdparty"):
        for m in METHODS:
            rows = {r["indicator"]: r for r in indicator_rows if r["set"] == s and r["method"] == m}
            fe = rows.get("feature_entropy")
            if fe is None or not np.isfinite(fe["rho"]):
                continue
            ci = f"ρ = {fmt(fe['rho'], 2)} [{fmt(fe['low'], 2)}, {fmt(fe['high'], 2)}]"
            if np.isfinite(fe["low"]) and fe["low"] > 0:
                fe_text = f"units with **higher** FE matter more ({ci}): the opposite of the paper's reading"
            elif np.isfinite(fe["high"]) and fe["high"] < 0:
                fe_text = f"units with lower FE matter more ({ci}), as the paper reads it"
            else:
                fe_text = f"FE's order of units is not shown to be related to importance ({ci})"
            best = max(
                (rows[b] for b in BASELINES if b in rows and np.isfinite(rows[b]["rho"])),
                key=lambda r: r["rho"] * r["expected_sign"],
                default=None,
            )
            best_text = ""
            if best is not None:
                best_text = (
                    f"; the best cheap statistic, `{best['indicator']}`, has ρ = {fmt(best['rho'], 2)} "
                    f"[{fmt(best['low'], 2)}, {fmt(best['high'], 2)}]"
                )
            verdicts = {p["hypothesis"]: p["verdict"] for p in primary if p["set"] == s and p["method"] == m}
            said = []
            for h, yes, no in (
                ("H1", "FE read the paper's way (low FE = important) orders units by importance better than mean activation does", "FE read the paper's way (low FE = important) orders units by importance worse than mean activation does"),
                ("H2", "FE carries information about importance beyond birth rate and mean activation", "FE's information beyond birth rate and mean activation points the other way"),
                ("H3", "adding FE improves a cross-validated prediction of importance", "adding FE makes the cross-validated prediction worse"),
            ):  # fmt: skip
                v = verdicts.get(h, "inconclusive")
                said.append(f"{h} {v}: " + (yes if v == "reproduced" else no if v == "contradicted" else "not shown"))
            out.append(f"- **{SET_NAME[s]}, {m}:** {fe_text}{best_text}. " + "; ".join(said) + ".")
    return out


def write_page(rules, nets, cards, stats, primary, secondary, indicator_rows, sens, family_rows, seconds) -> None:
    L = []
    add = L.append
    n_zoo = sum(n["set"] == "zoo" for n in nets)
    n_tp = sum(n["set"] == "thirdparty" for n in nets)
    n_init = sum(n["set"] == "init" for n in nets)
    add("# Does feature entropy say more than activity? (validity study)")
    add("")
    add(
        "Generated by `python docs/studies/validity.py` from the records in `docs/validity-results/` "
        "(no model or inference needed); the rules were fixed in advance in "
        "[preregistration_validity.md](preregistration_validity.md). Ground truth is each unit's `delta_loss`: the "
        "increase of the held-out cross-entropy when that unit alone is zeroed (`onnx-fe importance`). Indicators "
        "come from `onnx-fe score` on the training images, and every per-network number is what `onnx-fe validate` "
        "computes."
    )
    add("")
    add(
        f"Networks with a record: {n_zoo} zoo (4 families × seeds), {n_init} random-init twins, {n_tp} third-party "
        "classifiers."
    )
    add("")
    add("## What the numbers say")
    add("")
    L.extend(reading(primary, indicator_rows))
    add("")
    add(
        "Scale: small networks trained on small synthetic data sets (digits 32², shapes 64²) and three third-party "
        "classifiers of two designs on generated images; importance is the effect of removing one unit at a time, "
        "which misses what units do together."
    )
    add("")
    add("## Verdicts (primary tests, Holm over 12)")
    add("")
    add("| set | method | hypothesis | effect m | 95 % CI | p | p (Holm) | n | verdict |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in primary:
        c = p["c"]
        add(
            f"| {p['set']} | {p['method']} | {p['hypothesis']} | {fmt(c.m)} | [{fmt(c.low)}, {fmt(c.high)}] | "
            f"{fmt_p(c.p)} | {fmt_p(p['p_holm'])} | {c.n} | **{p['verdict']}** |"
        )
    add("")
    for h in HYP:
        add(f"- {h}: {HYP_TEXT[h]}. Positive = the paper's direction.")
    add(
        "- n: seeds (zoo; each seed's effect is the mean of its 4 networks) or networks (third-party). The CI is "
        "the registered t-interval with the unit-bootstrap variance; a verdict other than inconclusive needs the "
        "Holm-adjusted p below 0.05."
    )
    add("")
    add("## Every indicator against importance")
    add("")
    add(
        "Pooled within-layer Spearman ρ of each indicator with `delta_loss` (the mean of the networks' values, 95 % CI "
        "as above). The expected sign is the one an indicator that finds important units should have: negative "
        "for FE (low FE = effective unit, the paper's reading), positive for mean activation."
    )
    add("")
    for s, title in (
        ("zoo", "Zoo (trained, seeds 1–5)"),
        ("thirdparty", "Third-party classifiers"),
        ("init", "Random-init twins (digits_vgg, shapes_vgg)"),
    ):
        rows = [r for r in indicator_rows if r["set"] == s]
        if not rows:
            continue
        add(f"### {title}")
        add("")
        add("| indicator | expected sign | ρ cubical | 95 % CI | ρ clique | 95 % CI |")
        add("| --- | --- | --- | --- | --- | --- |")
        for k in [*VAL.INDICATORS, VAL.PARTIAL, VAL.INCREMENT]:
            cu = next((r for r in rows if r["indicator"] == k and r["method"] == "cubical"), None)
            cl = next((r for r in rows if r["indicator"] == k and r["method"] == "clique"), None)
            if cu is None and cl is None:
                continue
            sign = {1: "+", -1: "−", 0: "none"}[(cu or cl)["expected_sign"]]
            cell = lambda r: (fmt(r["rho"]), f"[{fmt(r['low'])}, {fmt(r['high'])}]") if r else ("–", "–")
            a, b = cell(cu), cell(cl)
            add(f"| `{k.replace('|', chr(92) + '|')}` | {sign} | {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
        add("")
    add("### Zoo, family by family")
    add("")
    add(
        "The same ρ for each zoo family (mean over its five seeds, 95 % CI over seeds with the unit-bootstrap "
        "variance); not a registered test."
    )
    add("")
    add("| family | method | " + " | ".join(f"`{k}`" for k in FAMILY_INDICATORS) + " |")
    add("| --- | --- | " + " | ".join("---" for _ in FAMILY_INDICATORS) + " |")
    for fam in rules["zoo_families"]:
        for m in METHODS:
            cells = []
            for k in FAMILY_INDICATORS:
                r = next(r for r in family_rows if r["family"] == fam and r["method"] == m and r["indicator"] == k)
                cells.append(f"{fmt(r['rho'], 2)} [{fmt(r['low'], 2)}, {fmt(r['high'], 2)}]")
            add(f"| {fam} | {m} | " + " | ".join(cells) + " |")
    add("")
    add("![pooled ρ of every indicator with Δloss](img/validity.png)")
    add("")
    add("## Secondary: per family and per third-party network (Holm within this table)")
    add("")
    add("| network(s) | method | hypothesis | effect | 95 % CI | p | p (Holm) | verdict |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in secondary:
        add(
            f"| {r['what']} | {r['method']} | {r['hypothesis']} | {fmt(r['m'])} | [{fmt(r['low'])}, {fmt(r['high'])}] | "
            f"{fmt_p(r['p'])} | {fmt_p(r['p_holm'])} | {r['verdict']} |"
        )
    add("")
    add("## Per network")
    add("")
    add(
        "Each network's pooled within-layer ρ with `delta_loss` and its percentile bootstrap CI over units "
        "(what `onnx-fe validate` prints for it), and its three effects (positive = the paper's direction)."
    )
    add("")
    add("| network | method | units | ρ FE | ρ mean activation | ρ activation std | ρ HRank | H1 | H2 | H3 |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in nets:
        for m in METHODS:
            st = stats.get((n["id"], m, "primary"))
            if st is None:
                continue
            p = st["pooled"]

            def rc(k, p=p):
                r = p.get(k)
                return "–" if r is None else f"{fmt(r['spearman'], 2)} [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"

            eff = st["effects"]
            cis = {h: VAL.V.percentile_ci(eff[h][1], rules["ci_level"]) for h in HYP}
            add(
                f"| {n['id']} | {m} | {p['feature_entropy']['n_units']} | {rc('feature_entropy')} | "
                f"{rc('mean_activation')} | {rc('activation_std')} | {rc('hrank')} | "
                + " | ".join(f"{fmt(eff[h][0], 2)} [{fmt(cis[h][0], 2)}, {fmt(cis[h][1], 2)}]" for h in HYP)
                + " |"
            )
    add("")
    add("## Sensitivity (registered, no verdict): rarefied FE in place of FE; Δtop-1 as the target")
    add("")
    add("| variant | set | method | hypothesis | effect | 95 % CI | p |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sens:
        add(
            f"| {r['variant']} | {r['set']} | {r['method']} | {r['hypothesis']} | {fmt(r['m'])} | "
            f"[{fmt(r['low'])}, {fmt(r['high'])}] | {fmt_p(r['p'])} |"
        )
    add("")
    add("## Networks")
    add("")
    add(
        "| network | held-out top-1 | units | layers | SHA-256 (first 12) | score cubical / clique, importance (s) "
        "| onnx_fe commit |"
    )
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for n in nets:
        c = cards[n["id"]]
        st = stats[(n["id"], "cubical", "primary")]
        units = st["pooled"]["feature_entropy"]["n_units"]
        top1 = c.get("importance_meta", {}).get("unmasked", {}).get("top1")
        sec = c.get("seconds", {})
        add(
            f"| {n['id']} | {top1:.3f} | {units} | {','.join(map(str, c['eligible_layers']))} | "
            f"`{c['model_sha256'][:12]}` | {sec.get('cubical', 0):.0f} / {sec.get('clique', 0):.0f}, "
            f"{sec.get('importance', 0):.0f} | {c.get('onnx_fe_commit', '–')[:8]} |"
            if top1 is not None
            else f"| {n['id']} | – | {units} | – | `{c['model_sha256'][:12]}` | – | – |"
        )
    add("")
    add(
        "onnx_fe commit: the code that made the record (a dash: a record made from the working tree before the "
        "runner recorded it). Seconds are wall times on a 2-core machine shared with other jobs."
    )
    add("")
    add(f"Page computed in {seconds:.0f} s.")
    add("")
    OUT.write_text("\n".join(L))


if __name__ == "__main__":
    raise SystemExit(main())
