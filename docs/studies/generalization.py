"""Generalisation study (docs/preregistration_generalization.md): docs/generalization.md and its figure.

    python docs/studies/generalization.py            # the page from docs/generalization-results/ (no model needed)
    python docs/studies/generalization.py --results DIR --page FILE --figure FILE [--prereg FILE]

Reads only the records: the build cards (``cards/<network>.json``: family, bits, converged, gap, seconds) and the
tables ``networks_<family>_<method>.csv`` that ``onnx-fe compare --summary`` wrote (generalization_run.py). The two
methods' tables are merged per network (the baseline columns do not depend on the method and must agree). Every
setting comes from the registration with its amendments applied (``generalization_run.registration``). For every
measure it computes τ per dataset, τ_overall, ψ_i per axis and Ψ, each with a bootstrap CI over networks, the 16
primary tests with Holm's correction and their verdicts, and the registered secondary analyses
(``generalization_stats.py``), then writes the page and one figure (the gap against each measure).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalization_stats as gs
from generalization_run import PAGE as PREREG
from generalization_run import RESULTS, ROOT, registration

PAGE = ROOT / "docs" / "generalization.md"
FIGURE = ROOT / "docs" / "img" / "generalization.png"
TOPOLOGICAL = ("fe", "fe_rarefied", "birth_rate")
LABEL = {
    "fe": "FE",
    "fe_rarefied": "rarefied FE",
    "birth_rate": "birth rate",
    "mean_activation": "mean activation",
    "param_count": "parameter count",
    "path_norm": "path norm",
    "log_spec_prod": "log product of spectral norms",
    "inverse_margin": "inverse margin",
    "pacbayes_flatness": "PAC-Bayes flatness 1/σ²",
    "pacbayes_mag_flatness": "PAC-Bayes magnitude flatness 1/σ′²",
}
FAMILY_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


class RecordError(SystemExit):
    """The records contradict each other or the registration: the page is not written."""


# --------------------------------------------------------------------------- the registration


SECOND_BASE_RULES = {
    None: "complement",  # as registered: every axis at the other level
    "complement of the base in all axes but label noise, which is 0": "complement, label noise 0",  # amendment 1
}
BUDGET_CORE_SECONDS = 3 * 3600 * 2  # the registered CPU budget of the build: 3 h on 2 cores


def second_base(base: str, r: dict) -> str:
    """A family's other base, by the registration's ``second_base`` rule (the complement unless amended)."""
    rule = r.get("second_base")
    if rule not in SECOND_BASE_RULES:
        raise RecordError(f"unknown second_base rule {rule!r}; known: {[k for k in SECOND_BASE_RULES if k]}")
    other = "".join("1" if b == "0" else "0" for b in base)
    if SECOND_BASE_RULES[rule].endswith("label noise 0"):
        i = r["axes"].index("label_noise")
        other = other[:i] + "0" + other[i + 1 :]
    return other


def grid(r: dict) -> dict[str, dict]:
    """The registered networks: for every family, its two bases (:func:`second_base`) and each one's 8 one-axis
    neighbours (name ``<family>_<bits>``)."""
    out = {}
    for fam, f in r["families"].items():
        base = f["base"]
        for b in (base, second_base(base, r)):
            for i in [None, *range(len(b))]:
                bits = b if i is None else b[:i] + ("1" if b[i] == "0" else "0") + b[i + 1 :]
                out[f"{fam}_{bits}"] = {"family": fam, "bits": bits, "dataset": f["dataset"]}
    return out


def measure_names(r: dict) -> list[str]:
    """The page's measures: FE, rarefied FE and birth rate for each method, then the baselines (registered order)."""
    out = [f"{m}_{meth}" for meth in r["methods"] for m in TOPOLOGICAL if m in r["measures"]]
    return out + [m for m in r["measures"] if m not in TOPOLOGICAL]


def base_name(measure: str, r: dict) -> str:
    for meth in r["methods"]:
        if measure.endswith(f"_{meth}") and measure[: -len(meth) - 1] in TOPOLOGICAL:
            return measure[: -len(meth) - 1]
    return measure


def label(measure: str, r: dict) -> str:
    b = base_name(measure, r)
    return LABEL.get(b, b) + (f" ({measure[len(b) + 1 :]})" if b != measure else "")


def h2_baselines(r: dict) -> list[str]:
    """The baselines of H2, as the registration's ``primary.H2`` lists them (``... b in a, b, c``)."""
    m = re.search(r"\bb in (.+)$", r["primary"]["H2"])
    if not m:
        raise RecordError(f"cannot read the baselines of H2 from {r['primary']['H2']!r}")
    names = [x.strip() for x in m.group(1).split(",") if x.strip()]
    bad = [b for b in names if b not in r["measures"] or b in TOPOLOGICAL]
    if bad:
        raise RecordError(f"H2 names {bad}, which are not registered baselines")
    return names


# --------------------------------------------------------------------------- the records


def _num(v) -> float:
    return float("nan") if v in ("", None) else float(v)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def load(results: Path, r: dict) -> dict:
    """Cards and tables: every built network (its card), and one row per converged network with its measures."""
    reg = grid(r)
    cards = {}
    for p in sorted((results / "cards").glob("*.json")):
        c = json.loads(p.read_text())
        if c.get("smoke_max_epochs") is not None:
            raise RecordError(f"{p}: a smoke test's card (smoke_max_epochs) is not a record of the study")
        if c["name"] not in reg or c["family"] != reg[c["name"]]["family"] or c["bits"] != reg[c["name"]]["bits"]:
            raise RecordError(f"{p}: {c['name']!r} is not a registered network")
        cards[c["name"]] = c
    rows = {}
    for name, c in cards.items():
        if c["converged"]:
            rows[name] = {
                "name": name,
                "family": c["family"],
                "dataset": reg[name]["dataset"],
                "bits": c["bits"],
                "gap": float(c["gap"]),
                "recorded": [],
            }
    measures = measure_names(r)
    baselines = [m for m in measures if base_name(m, r) == m]
    for fam in r["families"]:
        for meth in r["methods"]:
            p = results / f"networks_{fam}_{meth}.csv"
            if not p.exists():
                continue
            with open(p, newline="") as f:
                recs = list(csv.DictReader(f))
            for rec in recs:
                name = rec["model"]
                if name not in rows or rows[name]["family"] != fam:
                    why = "not converged" if name in cards else "without a card"
                    raise RecordError(f"{p.name}: {name!r} is {why} or not of {fam} (exclusion rule)")
                row = rows[name]
                if meth in row["recorded"]:
                    raise RecordError(f"{p.name}: {name!r} twice")
                row["recorded"].append(meth)
                for m in measures:
                    if base_name(m, r) != m and m.endswith(f"_{meth}"):
                        row[m] = _num(rec[m])
                for m in baselines:
                    v = _num(rec[m])
                    if m in row and not _same(row[m], v):
                        raise RecordError(f"{name}: {m} is {row[m]!r} in one method's table and {v!r} in {p.name}")
                    row[m] = v
    for row in rows.values():
        for m in measures:
            row.setdefault(m, float("nan"))
    return {"registered": reg, "cards": cards, "rows": list(rows.values()), "measures": measures}


# --------------------------------------------------------------------------- statistics


def groups_of(rows: list[dict], families=None) -> dict[int, list[tuple[int, int]]]:
    """One-axis pairs within each family (networks of different families never form a group)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for fam in sorted({x["family"] for x in rows}):
        if families is not None and fam not in families:
            continue
        idx = [i for i, x in enumerate(rows) if x["family"] == fam]
        for axis, pairs in gs.axis_groups([rows[i]["bits"] for i in idx]).items():
            out.setdefault(axis, []).extend((idx[a], idx[b]) for a, b in pairs)
    return out


def _stats(v, gap, ds, datasets, groups, n_axes, w=None) -> np.ndarray:
    """[τ per dataset..., τ_overall, Ψ, ψ per axis...] of one measure under multiplicities w (NaN: not defined)."""
    w = np.ones(len(v)) if w is None else w
    taus = [gs.kendall_tau_b(v[ds == d], gap[ds == d], w[ds == d]) for d in datasets]
    fin = [t for t in taus if np.isfinite(t)]
    psi, per = gs.psi(v, gap, groups, w)
    return np.array([*taus, float(np.mean(fin)) if fin else np.nan, psi, *(per.get(i, np.nan) for i in range(n_axes))])


def analyse(data: dict, r: dict) -> dict:
    """Point estimates and bootstrap replicates of every measure's statistics."""
    rows, measures = data["rows"], data["measures"]
    datasets = list(dict.fromkeys(f["dataset"] for f in r["families"].values()))
    n_axes = len(r["axes"])
    gap = np.array([x["gap"] for x in rows], dtype=np.float64)
    ds = np.array([x["dataset"] for x in rows])
    groups = groups_of(rows)
    weights = gs.resample_weights(ds, r["resamples"], r["bootstrap_seed"]) if rows else np.zeros((0, 0))
    out = {"datasets": datasets, "groups": groups, "n_axes": n_axes, "measures": {}}
    for m in measures:
        v = np.array([x[m] for x in rows], dtype=np.float64)
        point = _stats(v, gap, ds, datasets, groups, n_axes)
        boot = np.array([_stats(v, gap, ds, datasets, groups, n_axes, w) for w in weights]).reshape(len(weights), -1)
        nd = len(datasets)
        keys = [("tau", d) for d in datasets] + ["tau_overall", "psi"] + [("axis", i) for i in range(n_axes)]
        out["measures"][m] = {
            "n": int(np.isfinite(v).sum() + np.isinf(v).sum()),
            "tau": {d: point[i] for i, d in enumerate(datasets)},
            "tau_overall": point[nd],
            "psi": point[nd + 1],
            "psi_axes": {i: point[nd + 2 + i] for i in range(n_axes)},
            "boot": {
                **{("tau", d): boot[:, i] for i, d in enumerate(datasets)},
                "tau_overall": boot[:, nd],
                "psi": boot[:, nd + 1],
                **{("axis", i): boot[:, nd + 2 + i] for i in range(n_axes)},
            },
            "ci": {k: (float(point[j]), *gs.interval(boot[:, j], r["ci_level"])) for j, k in enumerate(keys)},
            "per_family": {
                fam: gs.psi(v, gap, groups_of(rows, {fam}))[1]
                for fam in r["families"]
                if any(x["family"] == fam for x in rows)
            },
        }
    return out


def tests(st: dict, r: dict, fe: str = "fe", stat: str = "psi") -> list[dict]:
    """H1 per method and H2 per method and baseline for ``fe`` (FE or rarefied FE) and ``stat`` (Ψ or τ_overall),
    with raw and Holm-adjusted bootstrap p-values and the registered verdicts."""
    alpha = r["alpha"]
    out = []
    for meth in r["methods"]:
        f = st["measures"][f"{fe}_{meth}"]
        lo, hi, p = gs.interval(f["boot"][stat], r["ci_level"])
        used = int(np.isfinite(f["boot"][stat]).sum())
        out.append(
            {"h": "H1", "method": meth, "fe": fe, "against": None, "est": f[stat], "lo": lo, "hi": hi, "p": p}
            | {"used": used}
        )
        for b in h2_baselines(r):
            g = st["measures"][b]
            with np.errstate(invalid="ignore"):
                diff = f["boot"][stat] - g["boot"][stat]
            lo, hi, p = gs.interval(diff, r["ci_level"])
            est = f[stat] - g[stat]
            out.append(
                {"h": "H2", "method": meth, "fe": fe, "against": b, "est": est, "lo": lo, "hi": hi, "p": p}
                | {"used": int(np.isfinite(diff).sum())}
            )
    adj = gs.holm([t["p"] for t in out])
    for t, a in zip(out, adj):
        t["p_holm"] = float(a)
        sig = bool(np.isfinite(a) and a < alpha)
        if t["h"] == "H1":
            t["verdict"] = (
                "FE predicts the gap"
                if sig and t["est"] > 0
                else "FE predicts the opposite"
                if sig and t["est"] < 0
                else "not shown"
            )
        else:
            b = LABEL.get(t["against"], t["against"])
            t["verdict"] = (
                f"FE better than {b}"
                if sig and t["est"] > 0
                else f"{b} better than FE"
                if sig and t["est"] < 0
                else "not distinguished"
            )
    return out


# --------------------------------------------------------------------------- formatting


def fnum(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return f"{x:+.{digits}f}".replace("-", "−")


def fci(est, lo, hi) -> str:
    if math.isnan(lo):
        return f"{fnum(est)} [–]"
    return f"{fnum(est)} [{fnum(lo)}, {fnum(hi)}]"


def fp(p: float, b: int) -> str:
    if math.isnan(p):
        return "–"
    if p == 0:
        return f"< {2 / b:.1g}"  # no resample on the other side of 0
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}".rstrip("0").rstrip(".")


def fraw(x: float) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "+∞"
    return f"{x:.4g}"


def build_seconds(card: dict) -> float:
    """A network's build seconds: the card's ``seconds`` (this run of the build), or ``train_seconds`` (every
    training segment) when that is larger, as for a network resumed from its checkpoint."""
    return max(float(card.get("seconds", 0.0)), float(card.get("train_seconds", 0.0)))


def scale(cards: list[dict]) -> tuple[int, int]:
    """The largest number of conv layers and of channels of a layer among these networks (from the cards' settings)."""
    convs, chans = 0, 0
    for c in cards:
        net = c.get("settings", {}).get("net", {})
        if "widths" in net:
            convs, chans = max(convs, len(net["widths"])), max(chans, max(net["widths"]))
        elif "depth" in net:
            convs, chans = max(convs, net["depth"] + net.get("stems", 1)), max(chans, net["width"])
    return convs, chans


# --------------------------------------------------------------------------- figure


def figure(data: dict, st: dict, r: dict, path: Path) -> None:
    """The gap against each measure, one panel a measure, colour by family; +∞ drawn at the panel's right edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, measures = data["rows"], data["measures"]
    fams = list(r["families"])
    ncol = 4
    nrow = max(1, math.ceil(len(measures) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
    gap = np.array([x["gap"] for x in rows], dtype=np.float64)
    fam = np.array([x["family"] for x in rows])
    for k, ax in enumerate(axes.flat):
        if k >= len(measures):
            ax.axis("off")
            continue
        m = measures[k]
        v = np.array([x[m] for x in rows], dtype=np.float64)
        fin = np.isfinite(v)
        logx = bool(fin.any() and (v[fin] > 0).all() and v[fin].max() / v[fin].min() > 100)
        if fin.any():
            lo, hi = float(v[fin].min()), float(v[fin].max())
        else:
            lo, hi = 0.0, 1.0
        edge = hi * 3 if logx else hi + 0.1 * ((hi - lo) or 1.0)
        for j, f in enumerate(fams):
            sel = (fam == f) & fin
            ax.scatter(v[sel], gap[sel], s=14, color=FAMILY_COLOURS[j % 6], label=f, alpha=0.85, lw=0)
            inf = (fam == f) & np.isposinf(v)
            if inf.any():
                ax.scatter(np.full(inf.sum(), edge), gap[inf], s=22, marker=">", color=FAMILY_COLOURS[j % 6], lw=0)
        if np.isposinf(v).any():
            ax.axvline(edge, color="0.7", lw=0.6, ls=":")
            ax.text(edge, 1.0, "+∞", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
        if logx:
            ax.set_xscale("log")
        s = st["measures"][m]
        ax.set_title(f"{label(m, r)}\nΨ {fnum(s['psi'], 2)}, τ {fnum(s['tau_overall'], 2)}", fontsize=8)
        ax.tick_params(labelsize=7)
        if k % ncol == 0:
            ax.set_ylabel("generalisation gap", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False, ncol=1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- page


def _test_table(ts: list[dict], r: dict, b: int, verdict: bool = True) -> list[str]:
    lvl = f"{100 * r['ci_level']:g} %"
    head = f"| hypothesis | method | statistic | estimate [{lvl} CI] | p | p (Holm) |" + (
        " verdict |" if verdict else ""
    )
    out = [head, "|" + " --- |" * (head.count("|") - 1)]
    for t in ts:
        fe = LABEL.get(t["fe"], t["fe"])
        what = fe if t["h"] == "H1" else f"{fe} − {LABEL.get(t['against'], t['against'])}"
        row = f"| {t['h']} | {t['method']} | {what} | {fci(t['est'], t['lo'], t['hi'])} | {fp(t['p'], b)} | "
        row += fp(t["p_holm"], b) + " |"
        if verdict:
            row += f" **{t['verdict']}** |"
        out.append(row)
    return out


def render(data: dict, st: dict, r: dict, primary, by_tau, rarefied, page: Path, fig: Path, seconds: float) -> str:
    rows, cards, reg, measures = data["rows"], data["cards"], data["registered"], data["measures"]
    B = r["resamples"]
    lvl = f"{100 * r['ci_level']:g} %"
    axes = r["axes"]
    n_conv = len(rows)
    built = len(cards)
    excluded = sorted(n for n, c in cards.items() if not c["converged"])
    missing = sorted(set(reg) - set(cards))
    convs, chans = scale([cards[x["name"]] for x in rows])
    limits = (
        f"{n_conv} converged small CNNs of the {r['n_networks']} registered (at most {convs} conv layers, at most "
        f"{chans} channels a layer), two small synthetic or toy datasets (digits 32×32 grey, shapes 64×64 RGB), one "
        "training seed, two levels an axis"
    )
    L = []
    add = L.append
    add("# Which network will generalise? Feature entropy as a generalisation measure (generalisation study)")
    add("")
    if n_conv < r["min_networks"]:
        add(
            f"**This study is below the issue's size: {n_conv} of the {r['n_networks']} registered networks "
            f"converged, fewer than the {r['min_networks']} issue 23 asks for.** The analysis below is run on those "
            f"{n_conv}, as the pre-registration's exclusion rule says."
        )
        add("")
    add(
        "Generated by `python docs/studies/generalization.py` from the records in `docs/generalization-results/` "
        "(build cards and the `networks.csv` tables of `onnx-fe compare --summary`; no model or inference needed). "
        "The design, the measures, the statistics and the verdict rule were fixed before any network was trained, "
        "in [preregistration_generalization.md](preregistration_generalization.md)."
    )
    add("")
    if r["amendments"]:
        add("Amendments applied (appended to the pre-registration, where each gives its reason):")
        for a in r["amendments"]:
            name = f"amendment {a['amendment']}" if a.get("amendment") is not None else "an amendment"
            why = f" ({a['reason']})" if a.get("reason") else ""
            add(f"- {name}, {a['date'] or 'undated'}: changes {', '.join(f'`{k}`' for k in a['keys'])}{why}.")
    else:
        add("Amendments: none.")
    add("")

    # ---- what the numbers say
    add("## What the numbers say")
    add("")
    ranked = sorted(
        (m for m in measures if np.isfinite(st["measures"][m]["psi"])), key=lambda m: -st["measures"][m]["psi"]
    )
    for meth in r["methods"]:
        h1 = next(t for t in primary if t["h"] == "H1" and t["method"] == meth)
        h2 = [t for t in primary if t["h"] == "H2" and t["method"] == meth]
        better = [LABEL[t["against"]] for t in h2 if t["verdict"].startswith("FE better")]
        worse = [LABEL[t["against"]] for t in h2 if t["verdict"].endswith("better than FE")]
        same = [LABEL[t["against"]] for t in h2 if t["verdict"] == "not distinguished"]
        pos = ranked.index(f"fe_{meth}") + 1 if f"fe_{meth}" in ranked else None
        text = (
            f"- **{meth}:** H1 **{h1['verdict']}** (Ψ(FE) = {fci(h1['est'], h1['lo'], h1['hi'])}, "
            f"p (Holm) {fp(h1['p_holm'], B)}). H2: FE ranks networks better than "
            f"{', '.join(better) or 'no baseline'}; worse than {', '.join(worse) or 'no baseline'}; "
            f"not distinguished from {', '.join(same) or 'none'}."
        )
        if pos:
            text += f" By Ψ, FE ({meth}) is number {pos} of the {len(ranked)} measures."
        add(text)
    add(f"- Scale: {limits}. What holds here need not hold for large networks and data.")
    add("")

    # ---- networks
    add("## Networks")
    add("")
    total = sum(build_seconds(c) for c in cards.values())
    fits = "fits" if total <= BUDGET_CORE_SECONDS else "does **not** fit"
    add(
        f"Registered {r['n_networks']}, built {built}, **converged {n_conv}** (training cross-entropy ≤ "
        f"{r['target_train_ce']} within the epoch cap), excluded as not converged {len(excluded)}"
        + (f", not built {len(missing)}" if missing else "")
        + f". The build took {total:,.0f} core-seconds ({total / 3600:.2f} core-hours; one torch thread a network, "
        "each card's `seconds`, or its `train_seconds` over all training segments where a network was resumed): it "
        f"{fits} the registered budget of 3 hours on 2 cores ({BUDGET_CORE_SECONDS:,} core-seconds)"
        + (f"; {len(missing)} networks are not built yet." if missing else ".")
    )
    add("")
    add("| family | built | converged | excluded | build seconds |")
    add("| --- | --- | --- | --- | --- |")
    for fam in r["families"]:
        cs = [c for c in cards.values() if c["family"] == fam]
        conv = sum(c["converged"] for c in cs)
        secs = sum(build_seconds(c) for c in cs)
        add(f"| {fam} | {len(cs)} | {conv} | {len(cs) - conv} | {secs:,.0f} |")
    add("")
    if excluded:
        add(
            "Excluded (not converged; built and carded, left out of every statistic): "
            + ", ".join(
                f"`{n}` (train CE {cards[n]['history'][-1]['train_ce'] if cards[n].get('history') else float('nan'):.3g} "
                f"after {cards[n]['epochs']} epochs)"
                for n in excluded
            )
            + "."
        )
        add("")
    if missing:
        add("Not built: " + ", ".join(f"`{n}`" for n in missing) + ".")
        add("")
    unrec = [
        x["name"] + " (" + ", ".join(m for m in r["methods"] if m not in x["recorded"]) + ")"
        for x in rows
        if len(x["recorded"]) < len(r["methods"])
    ]
    if unrec:
        add("Converged but without a record for a method (their measures of it are missing): " + ", ".join(unrec) + ".")
        add("")
    add("<details><summary>Every built network: its card's numbers</summary>")
    add("")
    add("| network | differs from its base in | converged | epochs | train acc | test acc | gap | seconds |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in [n for n in reg if n in cards]:
        c = cards[n]
        add(
            f"| `{n}` | {c.get('differs_in') or '(base)'} | {'yes' if c['converged'] else '**no**'} | {c['epochs']} | "
            f"{c['train_acc']:.3f} | {c['test_acc']:.3f} | {c['gap']:+.3f} | {build_seconds(c):.0f} |"
        )
    add("")
    add("</details>")
    add("")

    # ---- primary tests
    add(f"## Primary tests (Holm over {len(primary)})")
    add("")
    add(
        f"Ψ is primary, each method on its own. H1: Ψ(FE) > 0 (FE rises with the gap, the paper's claim: lower FE, "
        f"better generalisation). H2: ΔΨ = Ψ(FE) − Ψ(b) for each baseline b. Bootstrap over networks ({B} resamples "
        f"within each dataset, seed {r['bootstrap_seed']}, the same resamples for every measure, so differences are "
        f"paired); two-sided bootstrap p = 2 · min(share ≤ 0, share ≥ 0). **Multiplicity: the {len(primary)} primary "
        f"p-values are corrected together by Holm's step-down procedure at family-wise α = {r['alpha']}**; a verdict "
        "needs a Holm-adjusted p below α. Secondary analyses carry no verdict."
    )
    add("")
    L.extend(_test_table(primary, r, B))
    add("")
    short = [t for t in primary if t["used"] < B]
    if short:
        add(
            f"Resamples in which a statistic is undefined (every group of every axis lost, or a dataset without two "
            f"distinct values) are left out of its CI and p: the tests above used between {min(t['used'] for t in short)}"
            f" and {max(t['used'] for t in primary)} of the {B} resamples. With few groups the bootstrap p-values are "
            "coarse: read them with the group counts of the ψ table."
        )
        add("")

    # ---- where FE stands
    add("## Where FE stands")
    add("")
    add(
        "Every measure ordered by Ψ (a measure predicts generalisation when it rises with the gap: Ψ > 0). Controls "
        "(birth rate, mean activation) have no expected direction."
    )
    add("")
    add(f"| rank | measure | expected direction | Ψ [{lvl} CI] | τ_overall [{lvl} CI] |")
    add("| --- | --- | --- | --- | --- |")
    for i, m in enumerate(ranked + [m for m in measures if m not in ranked], start=1):
        s = st["measures"][m]
        d = "rises with the gap" if r["measures"][base_name(m, r)] else "none (control)"
        name = f"**{label(m, r)}**" if base_name(m, r) == "fe" else label(m, r)
        add(f"| {i} | {name} | {d} | {fci(*s['ci']['psi'][:3])} | {fci(*s['ci']['tau_overall'][:3])} |")
    add("")

    # ---- tau / psi table
    add("## τ and Ψ for every measure")
    add("")
    add(
        "Kendall's τ-b between the measure and the gap over each dataset's converged networks; τ_overall = the mean "
        "of the datasets' τ; Ψ = the mean over axes of ψ_i, the mean τ of the pairs of networks that differ in axis "
        f"i only. {lvl} percentile bootstrap intervals. +∞ (inverse margin with a 10th-percentile margin ≤ 0) ranks "
        "above every finite value; a NaN leaves that network out for that measure. n: networks with a value."
    )
    add("")
    ds_cols = " | ".join(f"τ {d}" for d in st["datasets"])
    add(f"| measure | n | {ds_cols} | τ_overall | Ψ |")
    add("|" + " --- |" * (4 + len(st["datasets"])))
    for m in measures:
        s = st["measures"][m]
        cells = [fci(*s["ci"][("tau", d)][:3]) for d in st["datasets"]]
        add(
            f"| {label(m, r)} | {s['n']} | {' | '.join(cells)} | {fci(*s['ci']['tau_overall'][:3])} | "
            f"{fci(*s['ci']['psi'][:3])} |"
        )
    add("")
    add("### ψ per axis")
    add("")
    ngroups = {i: len(st["groups"].get(i, [])) for i in range(len(axes))}
    flagged = [axes[i] for i in range(len(axes)) if ngroups[i] < 3]
    add(
        f"ψ_i with its {lvl} CI. Groups: pairs of converged networks that differ in that axis only (8 registered an axis)."
        + (f" **Fewer than 3 groups:** {', '.join(flagged)} (ψ there rests on very few pairs)." if flagged else "")
    )
    add("")
    add("| measure | " + " | ".join(f"{a}{' ⚠' if ngroups[i] < 3 else ''}" for i, a in enumerate(axes)) + " |")
    add("|" + " --- |" * (1 + len(axes)))
    add("| groups | " + " | ".join(str(ngroups[i]) for i in range(len(axes))) + " |")
    for m in measures:
        s = st["measures"][m]
        add(f"| {label(m, r)} | " + " | ".join(fci(*s["ci"][("axis", i)][:3]) for i in range(len(axes))) + " |")
    add("")

    # ---- figure
    add("## The gap against each measure")
    add("")
    rel = os.path.relpath(fig, page.parent).replace(os.sep, "/")
    add(f"![The generalisation gap against each measure, one panel a measure, colour by family]({rel})")
    add("")
    add(
        "One point a converged network; colour: family. Log scale where a measure spans more than a factor 100; "
        "+∞ drawn at a panel's right edge (▸)."
    )
    add("")

    # ---- secondary
    add("## Secondary analyses (no verdict)")
    add("")
    add(f"### The primary tests with τ_overall in place of Ψ (Holm over {len(by_tau)}, for reference)")
    add("")
    L.extend(_test_table(by_tau, r, B, verdict=False))
    add("")
    add(f"### Rarefied FE in place of FE (Ψ; Holm over {len(rarefied)}, for reference)")
    add("")
    L.extend(_test_table(rarefied, r, B, verdict=False))
    add("")
    add("### ψ per family")
    add("")
    add("ψ_i within each family alone (2 pairs an axis at most, so each value is −1, −½, 0, ½ or 1).")
    add("")
    for fam in r["families"]:
        if not any(fam in st["measures"][m]["per_family"] for m in measures):
            continue
        add(f"<details><summary>{fam}</summary>")
        add("")
        add("| measure | " + " | ".join(axes) + " |")
        add("|" + " --- |" * (1 + len(axes)))
        for m in measures:
            per = st["measures"][m]["per_family"].get(fam, {})
            add(f"| {label(m, r)} | " + " | ".join(fnum(per.get(i, float("nan")), 2) for i in range(len(axes))) + " |")
        add("")
        add("</details>")
        add("")
    add("### Birth rate and mean activation: their τ with the gap, and what FE's ranking shares with activity")
    add("")
    add(
        "The sign of τ between the controls and the gap, and τ-b between FE and each control over the networks "
        "(mean over the datasets): a large τ with a control means FE orders networks as activity does."
    )
    add("")
    add("| control | τ_overall with the gap | sign | " + " | ".join(f"τ with FE ({m})" for m in r["methods"]) + " |")
    add("|" + " --- |" * (3 + len(r["methods"])))
    ds = np.array([x["dataset"] for x in rows])
    controls = [m for m in measures if not r["measures"][base_name(m, r)]]
    for m in controls:
        s = st["measures"][m]
        t = s["tau_overall"]
        sign = "–" if not np.isfinite(t) else ("+" if t > 0 else "−" if t < 0 else "0")
        with_fe = []
        for meth in r["methods"]:
            fe = f"fe_{meth}"
            if fe not in measures:
                with_fe.append("–")
                continue
            a = np.array([x[fe] for x in rows], dtype=np.float64)
            b = np.array([x[m] for x in rows], dtype=np.float64)
            with_fe.append(fnum(gs.tau_overall(a, b, ds)) if rows else "–")
        add(f"| {label(m, r)} | {fci(*s['ci']['tau_overall'][:3])} | {sign} | {' | '.join(with_fe)} |")
    add("")

    # ---- reading rule
    add("## What README and method.md may say (the reading rule)")
    add("")
    for meth in r["methods"]:
        h1 = next(t for t in primary if t["h"] == "H1" and t["method"] == meth)
        if h1["verdict"] == "FE predicts the gap":
            s = f"“FE predicts generalisation in this benchmark” ({meth})"
        elif h1["verdict"] == "FE predicts the opposite":
            s = f"“in this benchmark, lower FE went with a larger gap, the opposite of the claim” ({meth})"
        else:
            s = f"“FE is not shown to predict generalisation in this benchmark” ({meth})"
        better = [LABEL[t["against"]] for t in primary if t["method"] == meth and t["verdict"].startswith("FE better")]
        worse = [
            LABEL[t["against"]] for t in primary if t["method"] == meth and t["verdict"].endswith("better than FE")
        ]
        if better:
            s += f"; “FE ranks networks better than {', '.join(better)}”"
        if worse:
            s += f"; “{', '.join(worse)} {'ranks' if len(worse) == 1 else 'rank'} networks better than FE”"
        if not better and not worse:
            s += "; FE is not distinguished from any baseline"
        add(f"- {s}.")
    add(f"- Always with the scale limits: {limits}.")
    add("")
    add(f"<sub>Page computed in {seconds:.0f} s.</sub>")
    add("")
    return "\n".join(L)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="the records (default docs/generalization-results)")
    ap.add_argument("--prereg", type=Path, default=PREREG, help="the pre-registration (its block and amendments)")
    ap.add_argument("--page", type=Path, default=PAGE, help="the page to write (default docs/generalization.md)")
    ap.add_argument("--figure", type=Path, default=FIGURE, help="the figure (default docs/img/generalization.png)")
    a = ap.parse_args(argv)
    t0 = time.time()
    r = registration(a.prereg)
    data = load(a.results, r)
    if not data["rows"]:
        raise RecordError(f"{a.results}: no converged network with a card; nothing to report")
    st = analyse(data, r)
    primary = tests(st, r)
    if len(primary) != r["n_primary_tests"]:
        raise RecordError(f"{len(primary)} primary tests, but the registration counts {r['n_primary_tests']}")
    by_tau = tests(st, r, stat="tau_overall")
    rarefied = tests(st, r, fe="fe_rarefied")
    figure(data, st, r, a.figure)
    _write(a.page, render(data, st, r, primary, by_tau, rarefied, a.page, a.figure, time.time() - t0))
    print(f"wrote {a.page} and {a.figure} ({len(data['rows'])} converged networks, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
