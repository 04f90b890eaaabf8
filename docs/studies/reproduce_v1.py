"""Reproduce the paper's claims on the committed models: writes docs/reproduction_v1.md and docs/img/repro_*.png.

    python docs/studies/reproduce_v1.py            # everything (cached scores are reused)
    python docs/studies/reproduce_v1.py --fresh    # recompute every score

Needs only the scoring install plus matplotlib and pandas (`pip install -e ".[test]"`). Scores are cached in
docs/.repro-cache/ (git-ignored), one onnx-fe output folder per model × data × method × parameters, so a re-run
only redoes what changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import onnx_fe
from onnx_fe.topology import CUBICAL_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
IMG = DOCS / "img"
CACHE = DOCS / ".repro-cache"
METHODS = {"cubical": {}, "clique": {}}  # filled with the chosen parameters in main()
TIMES: dict[str, float] = {}


@dataclass
class Model:
    name: str
    path: Path
    pre: dict  # scale, mean, std, color, layout
    info: dict


def load_index() -> list[dict]:
    p = ROOT / "models" / "index.json"
    if not p.exists():
        sys.exit("models/index.json is missing: build the zoo first (python -m models.build)")
    data = json.loads(p.read_text())
    return data["models"] if isinstance(data, dict) and "models" in data else data


def model_from_entry(e: dict) -> Model:
    pre = e.get("preprocessing", {})
    return Model(name=e.get("name") or Path(e["path"]).stem, path=ROOT / e["path"], pre=pre, info=e)


def score(model: Model, data: Path, method: str, tag: str, **kw) -> Path:
    """Score (or reuse) and return the results.h5 path."""
    params = dict(METHODS[method])
    params.update({k: v for k, v in kw.items() if k in ("threshold", "resolution", "max_edge_density")})
    extra = {k: v for k, v in kw.items() if k not in params}
    key = f"{model.name}__{tag}__{method}__" + "_".join(f"{k}{v}" for k, v in sorted(params.items()))
    pre = model.pre
    scale = extra.pop("scale", pre.get("scale", 1 / 255))
    t = time.perf_counter()
    r = onnx_fe.score(
        model.path,
        data,
        CACHE / key,
        method=method,
        scale=scale,
        mean=tuple(pre.get("mean", (0.0,))),
        std=tuple(pre.get("std", (1.0,))),
        color=pre.get("color"),
        images_per_class=extra.pop("images_per_class", 100),
        device="cpu",
        **params,
        **extra,
    )
    if not r.reused:
        TIMES[key] = time.perf_counter() - t
    return r.results_h5


def layer_stats(h5: Path) -> list[dict]:
    """Per layer: name, FE (K,C), BR (K,C), mean activation per unit, APoZ per unit, weight L1 per unit."""
    out = []
    with h5py.File(h5, "r") as f:
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            out.append(
                {
                    "index": int(g.attrs["index"]),
                    "name": str(g.attrs["name"]),
                    "size": int(g.attrs["height"]),
                    "fe": g["feature_entropy"][()],
                    "br": g["birth_rate"][()],
                    "bp": g["birth_points"][()],
                    "mean_act": g["mean_activation"][()].astype(np.float64).mean(axis=0),
                    "l1_act": np.abs(g["mean_activation"][()].astype(np.float64)).mean(axis=0),
                    "apoz": g["zero_fraction"][()].astype(np.float64).mean(axis=0),
                    "w_l1": g["weight_l1"][()],
                }
            )
    return out


# ---------------------------------------------------------------- helpers on ONNX graphs (framework-independent)


def rescaled_twin(src: Path, dst: Path, layer: int, alpha: float) -> Path:
    """Conv ``layer`` × alpha, the next conv's weights × 1/alpha (the ONNX edit of docs/studies/repro_data.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import repro_data

    return repro_data.rescaled_twin(src, dst, layer=layer, alpha=alpha)


# ---------------------------------------------------------------- statistics and output helpers


def mean_std(x) -> str:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return f"{x.mean():.3f} ± {x.std():.3f}" if x.size else "—"


def cohens_d(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    s = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / s) if s > 0 else float("nan")


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def pearson(x, y) -> float:
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1])


def table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if np.isfinite(v) else "—"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def savefig(fig, name: str) -> str:
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"![{name}](img/{name})"


class Zoo:
    def __init__(self):
        self.entries = [model_from_entry(e) for e in load_index()]

    def get(self, group: str, role: str) -> Model | None:
        for m in self.entries:
            if m.info.get("group") == group and m.info.get("role") == role:
                return m
        return None

    def group(self, group: str) -> list[Model]:
        return [m for m in self.entries if m.info.get("group") == group]

    def data(self, m: Model, split: str) -> Path:
        return ROOT / m.info["data_folders"][split]


MIN_SIZE = 8  # 4×4 maps have few birth points (0.1–11 % of maps) and, with clique, only one possible birth point


def last_layer_index(path: Path) -> int:
    """The last conv layer whose maps are at least MIN_SIZE × MIN_SIZE (the paper's last layer of VGG16 is 14×14)."""
    units = [u for u in onnx_fe.inspect(path) if u.scorable and min(u.height, u.width) >= MIN_SIZE]
    return units[-1].index


def informative(stats: list[dict]) -> list[dict]:
    return [s for s in stats if s["size"] >= MIN_SIZE]


VERDICTS: list[str] = []

# Notes from the audit of issue 13 (docs/audit_issue13.md, 2026-11-24). They annotate verdicts and choices that this
# script's rules produce but the data do not support; the pre-registered rerun (docs/preregistration.md) replaces them.
AUDIT_NOTE = [
    "> **Audit note (2026-11-24, issue 13).** Several verdicts above claim more than these data support. The rules "
    "were written into this script, but the quantity (raw FE) and the cubical threshold were not fixed before the "
    "data were seen. [preregistration.md](preregistration.md) fixes both for a rerun on new training seeds, with a "
    "control for every claim and a verdict only from a 95 % CI (reproduced, contradicted or inconclusive; no "
    '"partly"). Until then read the verdicts on this page as exploratory. Measured in '
    "[audit_issue13.md](audit_issue13.md#numbers-behind-the-notes-on-reproduction_v1mds-verdicts):",
    ">",
    '> - **Claim 3, "reproduced", is not supported.** The rule was any ρ < 0. The random-init networks fall with depth '
    "as much (ρ = −1.00 for digits with both methods, and for shapes with clique), and structureless noise alone gets "
    "lower FE on smaller maps (cubical 2.77 / 2.47 / 1.19 at 32² / 16² / 8²): a fall with depth is what map size alone "
    "gives. The pre-registered claim 3 is the trained − random-init gap at a fixed map size.",
    '> - **Claim 5A cubical, "reproduced" (ρ = −1.00), is confounded.** Birth rate alone gives ρ = −1.00. With every '
    "cell cut to 5 birth points (rarefied FE, k = 5) the FE range shrinks from 0.685–1.390 to 1.474–1.491. The "
    "reference code's ineffectiveness gives ρ = −0.20. There is one network per condition.",
    '> - **"Partly reproduced" is not a verdict.** Claim 2 cubical (lower FE in 1 of 2 networks), 5A clique '
    "(ρ = −0.20) and 5B clique (ρ = 0.10) are no evidence either way; 5B clique's ρ changes sign when the images are "
    "subsampled (median ρ −0.70 with 25 images per class, −0.60 with 40). Another quantity chosen after the fact "
    "would give other verdicts: clique ineffectiveness gives ρ = −1.00 (5A) and 0.90 (5B).",
    "> - **The cubical threshold (75) was picked by the largest |d| whatever its sign**: at 75 the converged network's "
    "FE is *higher* than the random one's (d = +0.082), the opposite of the paper's direction, and the same pair of "
    "networks then tests claim 2.",
    "> - **Cubical FE is not the paper's quantity.** Its per-unit Spearman correlation with clique FE ranges from "
    "−0.58 to 0.70 by layer (median 0.08): a cubical verdict speaks for a topological indicator of its own.",
]
THRESHOLD_NOTE = [
    "> **Audit note (issue 13).** This rule keeps the largest |d| whatever its sign. At 75, d = +0.082: converged "
    "units have a *higher* FE than random-init ones, the opposite of the paper's direction; only 25 has the paper's "
    "sign (d = −0.064), and its converged birth rate (0.036) fails the rule's 0.05. The pick does not move with the "
    "images (75 on each of 100 half-samples and 100 bootstraps of the training images), but the same two networks "
    "then test claim 2. The rerun chooses the threshold by the rule of "
    "[preregistration.md](preregistration.md#cubical-parameters-issue-13-item-4).",
]
RESCALING_NOTE = [
    "> **Note (issue 13).** The columns that count exact equality depend on the machine in their third decimal, for "
    "clique. On another CPU onnxruntime uses other convolution kernels, which change activations in their last bits; "
    "where that makes or breaks a tie, or swaps two near-equal values, among the top edges of a map, its clique birth "
    "point moves by one step (0–5 of the 79 200–152 000 maps per model, against 0 for cubical). The table above "
    "was made on another machine than ours, with the same code and models: on ours the digits zoo twin's clique row "
    "reads 1.000 / 0.000 (feature entropies identical / max |Δ FE|) with onnxruntime's default kernels and "
    "0.999 / 0.002 with its plain ones. A full rerun of this page on our machine changes the four clique rows "
    "with a twin or an edit (by at most 0.002 in these columns) and claim 2's digits clique d (0.118 → 0.119), nothing else. "
    "See "
    "[outputs.md](outputs.md#resultsh5) and "
    "[audit_issue13.md](audit_issue13.md#determinism-where-bit-identical-holds-and-where-it-stops).",
]


def verdict(k: int, n: int) -> str:
    return (
        "not measured" if n == 0 else ("reproduced" if k == n else ("partly reproduced" if k > 0 else "not reproduced"))
    )


def unit_means(stats: list[dict], key: str) -> np.ndarray:
    """Per-unit value averaged over classes, all layers concatenated."""
    return np.concatenate([np.nanmean(s[key], axis=0) for s in stats])


def last_layer(stats: list[dict]) -> dict:
    return stats[-1]


# ---------------------------------------------------------------- parameter choice (cubical)


def choose_cubical(zoo: Zoo, out: list[str]) -> None:
    conv, rand = zoo.get("digits_vgg", "converged"), zoo.get("digits_vgg", "random")
    rows, best = [], None
    for thr in (25, 50, 75):
        s_c = layer_stats(score(conv, zoo.data(conv, "train"), "cubical", "train", threshold=thr, resolution=100))
        s_r = layer_stats(score(rand, zoo.data(rand, "train"), "cubical", "train", threshold=thr, resolution=100))
        d_fe = cohens_d(unit_means(s_c, "fe"), unit_means(s_r, "fe"))
        d_br = cohens_d(unit_means(s_c, "br"), unit_means(s_r, "br"))
        br_c = float(np.mean(unit_means(s_c, "br")))
        rows.append([thr, d_fe, d_br, br_c, float(np.mean(unit_means(s_r, "br")))])
        if br_c >= 0.05 and (best is None or abs(d_fe) > abs(best[1])):
            best = (thr, d_fe)
    chosen = best[0] if best else 50
    METHODS["cubical"] = {"resolution": 100, "threshold": chosen}
    out += [
        "## Choosing the cubical parameters",
        "",
        "Chosen on the **training split of the digits data set only** (`models/data/digits/train`), before any claim "
        "below was computed: for each candidate `threshold` (resolution 100), the separation between the converged "
        "digits VGG and the same network at random initialisation, as Cohen's d of the per-unit feature entropy "
        "and birth rate (averaged over classes, all layers). The candidate with the largest |d| for feature "
        "entropy whose converged birth rate is at least 0.05 is kept. Every claim is then reported on the held-out "
        "digits test split and on the shapes data set.",
        "",
        table(
            ["threshold", "d (feature entropy)", "d (birth rate)", "birth rate, converged", "birth rate, random"], rows
        ),
        "",
        f"**Chosen: resolution 100, threshold {chosen}.**"
        + (
            " This is the package default."
            if chosen == CUBICAL_DEFAULTS["threshold"]
            else f" The package default is {CUBICAL_DEFAULTS['threshold']}; pass `--threshold {chosen}` to use this choice."
        ),
        "",
        *THRESHOLD_NOTE,
        "",
    ]


# ---------------------------------------------------------------- claim 1: rescaling invariance


def rel_change(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.abs(a) > 1e-12
    return float(np.median(np.abs(b[ok] - a[ok]) / np.abs(a[ok]))) if ok.any() else float("nan")


def max_layer_change(ref: list[dict], st: list[dict], key: str) -> float:
    """Median relative change of a per-unit indicator within each layer; the largest over layers
    (the rescaled layer is the one that moves)."""
    return max(rel_change(a[key], b[key]) for a, b in zip(ref, st))


def claim_rescaling(zoo: Zoo, out: list[str]) -> None:
    rows = []
    for group in ("digits_vgg", "shapes_vgg"):
        base = zoo.get(group, "converged")
        if base is None:
            continue
        twin = zoo.get(group, "rescaled")
        data = zoo.data(base, "test")
        variants = []
        if twin is not None:
            variants.append(("weights rescaled (zoo twin)", twin, {}))
        alpha_twin = CACHE / "models" / f"{group}_alpha3.onnx"
        rescaled_twin(base.path, alpha_twin, 0, 3.0)
        variants.append(
            ("conv 0 ×3, conv 1 ×1/3 (ONNX edit)", Model(f"{group}_alpha3", alpha_twin, base.pre, base.info), {})
        )
        variants.append(("input ×2", base, {"scale": 2 * base.pre.get("scale", 1 / 255)}))
        for method in METHODS:
            ref = layer_stats(score(base, data, method, "test"))
            for label, m, kw in variants:
                tag = "test" if not kw else "test_x2"
                st = layer_stats(score(m, data, method, tag, **kw))
                fe0, fe1 = unit_means(ref, "fe"), unit_means(st, "fe")
                cells = np.concatenate([a["fe"].ravel() for a in ref]), np.concatenate([b["fe"].ravel() for b in st])
                bp_same = np.mean(np.concatenate([(a["bp"] == b["bp"]).ravel() for a, b in zip(ref, st)]))
                rows.append(
                    [
                        group,
                        method,
                        label,
                        float(bp_same),
                        float(np.mean(cells[0] == cells[1])),
                        float(np.max(np.abs(fe1 - fe0))),
                        max_layer_change(ref, st, "mean_act"),
                        max_layer_change(ref, st, "apoz"),
                        max_layer_change(ref, st, "w_l1"),
                    ]
                )
    out += [
        "## Claim 1 — invariance to rescaling (paper Table 1)",
        "",
        "Same network, other magnitudes: the zoo's rescaled twin (a conv's weights and bias ×α, the next conv's "
        "weights ×1/α, built in PyTorch), the same edit done here directly on the ONNX graph (α = 3 on conv 0), and "
        "the input images multiplied by 2. Over every unit × class × image of the test split: the share of "
        "identical birth points and of identical per-class feature entropies, the largest change of a unit's "
        "feature entropy, and the relative change of the magnitude indicators (median over the units of a layer, "
        "largest over layers: the rescaled layer is the one that moves).",
        "",
        table(
            [
                "model",
                "method",
                "change",
                "birth points identical",
                "feature entropies identical",
                "max |Δ FE| (unit)",
                "mean activation, rel. change",
                "APoZ, rel. change",
                "weight L1, rel. change",
            ],
            rows,
        ),
        "",
        *RESCALING_NOTE,
        "",
    ]
    for method in METHODS:
        ok = [r for r in rows if "input" not in r[2] and r[1] == method]
        inp = [r for r in rows if "input" in r[2] and r[1] == method]
        k = sum(r[3] >= 0.999 for r in ok)
        VERDICTS.append(
            f"Claim 1, rescaling invariance ({method}): **{verdict(k, len(ok))}** for weight rescaling — birth points "
            f"identical on {min(r[3] for r in ok):.2%} to {max(r[3] for r in ok):.2%} of maps (float rounding of the "
            "rescaled weights reorders a few near-equal values), while the rescaled layer's mean activation and "
            "weight L1 change by up to " + f"{max(r[6] for r in ok):.0%} and {max(r[8] for r in ok):.0%}. APoZ does "
            "not change under a positive rescaling either (zeros stay zeros). Scaling the input images ×2 is not a "
            "symmetry of a network with biases: birth points then stay identical on only "
            f"{min(r[3] for r in inp):.1%} of maps."
        )


# ---------------------------------------------------------------- claims 2 and 3: trained vs random, depth


def claim_trained_random(zoo: Zoo, out: list[str]) -> None:
    import matplotlib.pyplot as plt

    rows, figs = [], []
    groups = [g for g in ("digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet") if zoo.get(g, "converged")]
    depth_rows = []
    lower = {m: [] for m in METHODS}
    falls = {m: [] for m in METHODS}
    for method in METHODS:
        fig, axes = plt.subplots(2, len(groups), figsize=(3.6 * len(groups), 5.4), squeeze=False)
        for gi, group in enumerate(groups):
            conv, rand = zoo.get(group, "converged"), zoo.get(group, "random")
            s_c = informative(layer_stats(score(conv, zoo.data(conv, "test"), method, "test")))
            s_r = informative(layer_stats(score(rand, zoo.data(rand, "test"), method, "test"))) if rand else None
            if s_r is not None:
                fe_c, fe_r = unit_means(s_c, "fe"), unit_means(s_r, "fe")
                br_c, br_r = unit_means(s_c, "br"), unit_means(s_r, "br")
                rows.append(
                    [
                        group,
                        method,
                        mean_std(fe_c),
                        mean_std(fe_r),
                        mean_std(br_c),
                        mean_std(br_r),
                        cohens_d(fe_c, fe_r),
                    ]
                )
                lower[method].append(float(np.mean(fe_c) < np.mean(fe_r)))
            x = np.arange(len(s_c))
            for ax, key, lab in ((axes[0, gi], "fe", "feature entropy"), (axes[1, gi], "br", "birth rate")):
                ax.plot(x, [np.nanmean(s[key]) for s in s_c], "o-", label="converged")
                if s_r is not None:
                    ax.plot(x, [np.nanmean(s[key]) for s in s_r], "s--", label="random init")
                ax.set_xticks(x, [str(s["index"]) for s in s_c])
                ax.set_ylabel(lab)
                if key == "fe":
                    ax.set_title(group)
                else:
                    ax.set_xlabel("conv layer")
            axes[0, gi].legend(fontsize=7)
            fe_layers = [float(np.nanmean(s["fe"])) for s in s_c]
            rho = spearman(np.arange(len(fe_layers)), fe_layers) if len(fe_layers) > 2 else float("nan")
            falls[method].append(rho)
            depth_rows.append(
                [
                    group,
                    method,
                    " → ".join(f"{v:.2f}" for v in fe_layers),
                    " → ".join(f"{np.nanmean(s['fe']):.2f}" for s in s_r) if s_r else "—",
                    rho,
                ]
            )
        fig.suptitle(f"Per-layer mean over units and classes, test split ({method})")
        fig.tight_layout()
        figs.append(savefig(fig, f"repro_depth_{method}.png"))
    out += [
        "## Claim 2 — trained vs random units (paper Table 2)",
        "",
        f"Mean ± std over units (each unit's value averaged over classes) on the test split, over the conv layers "
        f"whose maps are at least {MIN_SIZE}×{MIN_SIZE} (smaller maps have few birth points, 0.1–11 % of maps, and with "
        "clique only one possible birth point, so an FE of 0; docs/audit_issue13.md).",
        "",
        table(
            [
                "model",
                "method",
                "FE converged",
                "FE random",
                "birth rate converged",
                "birth rate random",
                "Cohen's d (FE)",
            ],
            rows,
        ),
        "",
        "## Claim 3 — feature entropy falls with depth (paper Fig. 5A)",
        "",
        f"Layers with maps of at least {MIN_SIZE}×{MIN_SIZE}, from the input on.",
        "",
        table(
            ["model", "method", "FE per layer, converged", "FE per layer, random", "Spearman ρ(depth, FE), converged"],
            depth_rows,
        ),
        "",
        *figs,
        "",
    ]
    for method in METHODS:
        n, k = len(lower[method]), int(sum(lower[method]))
        VERDICTS.append(
            f"Claim 2, trained vs random ({method}): **{verdict(k, n)}** — converged units have lower "
            f"mean feature entropy than random-init ones in {k} of {n} networks (table below)."
        )
        r = [v for v in falls[method] if np.isfinite(v)]
        k = sum(v < 0 for v in r)
        VERDICTS.append(
            f"Claim 3, entropy falls with depth ({method}): **{verdict(k, len(r))}** — Spearman "
            f"ρ(depth, FE) < 0 in {k} of {len(r)} converged networks (ρ = " + ", ".join(f"{v:.2f}" for v in r) + ")."
        )


# ---------------------------------------------------------------- claim 4: training trend


def claim_training(zoo: Zoo, out: list[str]):
    import matplotlib.pyplot as plt

    epochs = [m for m in zoo.group("shapes_vgg") if str(m.info.get("role", "")).startswith("epoch_")]
    epochs.sort(key=lambda m: int(m.info["role"].split("_")[1]))
    if not epochs:
        out += ["## Claim 4 — training trend", "", "No per-epoch checkpoints in the zoo.", ""]
        return
    losses = {}
    for m in epochs:
        c = json.loads((ROOT / m.info["card"]).read_text())
        losses[m.info["role"]] = c.get("train_loss_this_epoch", c.get("train_loss"))
    rows, res = [], {}
    last_idx = None
    for method in METHODS:
        fe, br = [], []
        for m in epochs:
            if last_idx is None:
                last_idx = last_layer_index(m.path)
            st = layer_stats(score(m, zoo.data(m, "train"), method, "train_last", layers=[str(last_idx)]))
            fe.append(float(np.nanmean(st[-1]["fe"])))
            br.append(float(np.nanmean(st[-1]["br"])))
        res[method] = (fe, br)
    ep = [int(m.info["role"].split("_")[1]) for m in epochs]
    loss = [losses[m.info["role"]] for m in epochs]
    fig, ax = plt.subplots(1, 1, figsize=(6, 3.6))
    ax2 = ax.twinx()
    for method, (fe, _) in res.items():
        ax.plot(ep, fe, "o-", label=f"FE, last conv ({method})")
    ok = [i for i, v in enumerate(loss) if v is not None]
    ax2.plot([ep[i] for i in ok], [loss[i] for i in ok], "k:", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean feature entropy")
    ax2.set_ylabel("training loss")
    ax.legend(loc="upper right", fontsize=7)
    ax2.legend(loc="center right", fontsize=7)
    fig_md = savefig(fig, "repro_training.png")
    for method, (fe, _br) in res.items():
        lo = [loss[i] for i in ok]
        f = [fe[i] for i in ok]
        r = pearson(f, lo) if len(ok) > 2 else float("nan")
        rows.append([method] + [f"{v:.3f}" for v in fe] + [r, spearman(f, lo) if len(ok) > 2 else float("nan")])
        v = "reproduced" if r >= 0.5 else ("partly reproduced" if r > 0 else "not reproduced")
        VERDICTS.append(
            f"Claim 4, entropy tracks the training loss ({method}): **{v}** — Pearson r(FE, loss) = "
            f"{r:.2f} over epochs 1–{ep[-1]}; FE goes {fe[0]:.2f} (init) → {min(fe):.2f} (min) → "
            f"{fe[-1]:.2f} (last)."
        )
    out += [
        "## Claim 4 — feature entropy tracks the training loss (paper Fig. 5B)",
        "",
        f"The shapes VGG saved after every epoch (epoch 0 = initialisation); conv layer {last_idx}, the last one whose "
        f"maps are at least {MIN_SIZE}×{MIN_SIZE} (the very last conv gives 4×4 maps, where few maps have a birth "
        "point: cubical birth rate 0.1–6.2 % and FE 0.004–0.224 over the epochs, clique birth rate 3.1–6.6 % with an "
        "FE of 0 at every epoch, since a 4×4 clique map has only one possible birth point; docs/audit_issue13.md); "
        "mean over units and classes, on the training split "
        "(the paper computes it on training data).",
        "",
        table(["method"] + [f"ep {e}" for e in ep] + ["Pearson r (FE, loss)", "Spearman ρ (FE, loss)"], rows),
        "",
        "Training loss per epoch: "
        + ", ".join(f"{e}: {v:.3f}" if v is not None else f"{e}: —" for e, v in zip(ep, loss))
        + ".",
        "",
        fig_md,
        "",
    ]


# ---------------------------------------------------------------- claim 5: generalisation from training data


def _noise_rate(m: Model) -> float:
    c = json.loads((ROOT / m.info["card"]).read_text())
    for k in ("label_noise", "noise_rate", "corruption_rate"):
        if k in c:
            return float(c[k])
    return float(m.name.split("noise_")[-1].replace("p", ".")) if "noise_" in m.name else float("nan")


def claim_generalisation(zoo: Zoo, out: list[str]) -> None:
    import matplotlib.pyplot as plt

    sections = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for setname, ms in (("A", zoo.group("genA")), ("B", zoo.group("genB"))):
        if not ms:
            sections += [f"Set {setname}: no models in the zoo.", ""]
            continue
        rows = []
        for method in METHODS:
            pts = []
            for m in ms:
                last = last_layer_index(m.path)
                st = layer_stats(score(m, zoo.data(m, "train"), method, "train_last", layers=[str(last)]))
                fe, br = float(np.nanmean(st[-1]["fe"])), float(np.nanmean(st[-1]["br"]))
                noise = _noise_rate(m) if setname == "B" else float("nan")
                pts.append((m, fe, br, noise))
                rows.append(
                    [
                        m.name,
                        method,
                        m.info.get("train_acc"),
                        m.info.get("test_acc"),
                        noise if setname == "B" else "—",
                        fe,
                        br,
                    ]
                )
                if setname == "B" and method == "cubical":
                    fe_k = np.nanmean(st[-1]["fe"], axis=1)
                    br_k = np.nanmean(st[-1]["br"], axis=1)
                    axes[2].scatter(br_k, fe_k, label=f"noise {noise:.1f}", s=18)
            acc = [p[0].info.get("test_acc") for p in pts]
            fe = [p[1] for p in pts]
            br = [p[2] for p in pts]
            if setname == "A":
                rho = spearman(acc, fe)
                rows.append(["**ρ(test acc, ·)**", method, "", "", "", rho, spearman(acc, br)])
                VERDICTS.append(
                    f"Claim 5A, better-generalising networks have lower FE ({method}): **"
                    + ("reproduced" if rho <= -0.5 else "partly reproduced" if rho < 0 else "not reproduced")
                    + f"** — Spearman ρ(test accuracy, FE) = {rho:.2f} over {len(pts)} networks."
                )
                axes[0].plot(acc, fe, "o", label=f"FE ({method})")
            else:
                noise = [p[3] for p in pts]
                rho = spearman(noise, fe)
                rows.append(["**ρ(noise, ·)**", method, "", "", "", rho, spearman(noise, br)])
                VERDICTS.append(
                    f"Claim 5B, FE rises with label corruption ({method}): **"
                    + ("reproduced" if rho >= 0.5 else "partly reproduced" if rho > 0 else "not reproduced")
                    + f"** — Spearman ρ(corruption rate, FE) = {rho:.2f} over {len(pts)} networks."
                )
                axes[1].plot(noise, fe, "o-", label=f"FE ({method})")
        sections += [
            f"### Set {setname}",
            "",
            table(
                ["model", "method", "train acc", "test acc", "label noise", "FE, last conv", "birth rate, last conv"],
                rows,
            ),
            "",
        ]
    axes[0].set_xlabel("test accuracy")
    axes[0].set_ylabel("mean FE, last conv (training data)")
    axes[0].set_title("set A")
    axes[1].set_xlabel("label corruption rate")
    axes[1].set_title("set B")
    axes[2].set_xlabel("birth rate")
    axes[2].set_ylabel("feature entropy")
    axes[2].set_title("set B, per class (cubical)")
    for ax in axes:
        ax.legend(fontsize=7)
    out += [
        "## Claim 5 — telling networks apart from training data alone (paper §5)",
        "",
        f"Last conv layer with maps of at least {MIN_SIZE}×{MIN_SIZE}, mean over units and classes, computed on the training split only (the clean-label "
        "PNGs in `models/data/shapes/train`); Spearman ρ against test accuracy (set A) or label-corruption rate "
        "(set B).",
        "",
        *sections,
        savefig(fig, "repro_generalisation.png"),
        "",
    ]


# ---------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fresh", action="store_true", help="recompute every score (drop the cache)")
    args = ap.parse_args(argv)
    if args.fresh and CACHE.exists():
        shutil.rmtree(CACHE)
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    zoo = Zoo()
    out: list[str] = []
    steps = [("parameter choice", lambda: choose_cubical(zoo, out))]
    METHODS["clique"] = {"threshold": 50, "max_edge_density": 0.8}
    steps += [
        ("claim 1", lambda: claim_rescaling(zoo, out)),
        ("claims 2–3", lambda: claim_trained_random(zoo, out)),
        ("claim 4", lambda: claim_training(zoo, out)),
        ("claim 5", lambda: claim_generalisation(zoo, out)),
    ]
    walls = []
    for name, fn in steps:
        t = time.perf_counter()
        fn()
        walls.append((name, time.perf_counter() - t))
        print(f"{name}: {walls[-1][1]:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    head = [
        "# Reproducing the paper's claims with onnx-fe",
        "",
        "Regenerate everything on this page (tables and figures) from the committed models with",
        "",
        "```bash",
        'pip install -e ".[test]" && python docs/studies/reproduce_v1.py --fresh',
        "```",
        "",
        f"Last run: {total / 60:.1f} min on a 2-core x86_64 CPU (no GPU), {len(TIMES)} of the scorings not cached. Methods: `cubical` with the parameters "
        "chosen below, and `clique` (the paper's construction: threshold 50, edge density 0.8). Models: "
        "`models/index.json` (see models/README.md for how each was trained).",
        "",
        "## Verdicts",
        "",
        "Computed by the script from the tables below, with fixed rules written in it (a claim is *reproduced* when "
        "it holds in every network tested, *partly* when in some); the quantity (raw FE) and the cubical threshold "
        "were not fixed before the data were seen (see the audit note below).",
        "",
        *[f"- {v}" for v in VERDICTS],
        "",
        *AUDIT_NOTE,
        "",
        "How to read them:",
        "",
        "- The samples are small: two trained/random pairs for claim 2, four and five networks for the "
        "generalisation sets, eleven checkpoints for claim 4. With 4–5 points a Spearman ρ needs |ρ| ≥ 0.9 to mean "
        "much; a *partly* verdict with |ρ| < 0.5 is no evidence either way.",
        "- Birth points are computed on the PNG folders in `models/data`, 50 images per class (the digits test split "
        "holds all 450 test digits, 43–46 per class), not the paper's 100, and only on conv layers whose maps are at "
        f"least {MIN_SIZE}×{MIN_SIZE}. The 4×4 maps of the last layers are left out because birth points are rare "
        "there, not absent: 0.1–6.2 % of maps (cubical) and 3.1–10.3 % (clique) in the VGGs, up to 11.3 % in the "
        "ResNet, and a 4×4 clique map has only one possible birth point, so its FE is 0 "
        "([audit_issue13.md](audit_issue13.md#maps-smaller-than-88-44-do-have-birth-points)).",
        "- Set A's training folder (500 of the first 1000 training images) holds images that the models trained on "
        "200 or 600 images never saw; set B's classes are the clean labels of the folders, not the corrupted labels "
        "each model was trained on (the cards list those).",
        "- The paper's networks are ImageNet/CIFAR VGGs with 14×14 and larger last-layer maps; ours are small "
        "networks on 32×32 and 64×64 images, trained in minutes on a CPU. A claim not reproduced here is a claim "
        "that does not hold for these networks, not a refutation of the paper.",
        "",
    ]
    tail = [
        "## Wall time of each experiment",
        "",
        table(["experiment", "wall time (s)"], [[n, w] for n, w in walls]),
        "",
        "Scores are cached in `docs/.repro-cache/`; the times above include only the scoring that was not cached "
        "in that run (the first full run scores everything).",
        "",
    ]
    (DOCS / "reproduction_v1.md").write_text("\n".join(head + out + tail))
    print(f"wrote {DOCS / 'reproduction_v1.md'} in {total:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
