"""Regenerate the measurements of docs/ranking.md: cumulative ablation curves and a model comparison.

    python docs/studies/ranking_evidence.py          # about 4 minutes on 2 CPU cores

Scores and ablation outputs go to onnx-fe-results/ranking-evidence/ (git-ignored; finished scores are reused);
the plots are copied to docs/img/. The tables are printed as Markdown.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import onnx_fe
from onnx_fe.scores.ranking import load_rankings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "onnx-fe-results" / "ranking-evidence"
IMG = ROOT / "docs" / "img"
DEMO = ROOT / "models" / "demo"
VGG = ROOT / "models" / "digits_vgg"
DIGITS = ROOT / "models" / "data" / "digits"
REPEATS = 10  # random rankings averaged


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12]


def summary_table(res) -> str:
    lines = [
        "| layer | indicator | AUC, most important first | AUC, least important first | gap | "
        "top-1 at half removed (most / least first) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in res.summary:
        name = s["by"] + (f" (mean of {s['repeats']})" if s["repeats"] > 1 else "")
        lines.append(
            f"| {s['layer_index']} `{s['layer']}` | {name} | {s['auc_top1_most_first']:.3f} | "
            f"{s['auc_top1_least_first']:.3f} | {s['auc_gap']:+.3f} | "
            f"{s['top1_half_removed_most_first']:.3f} / {s['top1_half_removed_least_first']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    common = {"device": "cpu"}

    # 1. the shipped demo: ranked and ablated on its 200 images
    model, data = DEMO / "model.onnx", DEMO / "data"
    onnx_fe.score(model, data, OUT / "demo", **common)
    res = onnx_fe.ablate(
        model, data, OUT / "demo", OUT / "demo-ablation", layers=["*"], random_repeats=REPEATS, **common
    )
    shutil.copy(res.png, IMG / "ablation_demo.png")
    print(
        f"## demo ({model.relative_to(ROOT)}, sha256 {sha(model)}…): unablated top-1 {res.baseline['top1']:.4f} "
        f"on {res.baseline['n_images']} images\n"
    )
    print(summary_table(res), "\n")

    # 2. digits_vgg (converged): ranked on 500 training images, ablated on the 450 held-out test images
    model = VGG / "converged" / "model.onnx"
    if model.exists():
        onnx_fe.score(model, DIGITS / "train", OUT / "vgg-cubical", **common)
        onnx_fe.score(model, DIGITS / "train", OUT / "vgg-clique", method="clique", **common)
        rankings = load_rankings(
            OUT / "vgg-cubical",
            by=["feature_entropy", "ineffectiveness", "mean_activation", "apoz", "weight_l1", "random"],
            random_seeds=list(range(REPEATS)),
        )
        clique = onnx_fe.rank(OUT / "vgg-clique", "feature_entropy")
        clique.by = "feature_entropy_clique"
        res = onnx_fe.ablate(model, DIGITS / "test", rankings + [clique], OUT / "vgg-ablation", layers=["*"], **common)
        shutil.copy(res.png, IMG / "ablation_digits_vgg.png")
        print(
            f"## digits_vgg converged ({model.relative_to(ROOT)}, sha256 {sha(model)}…): unablated top-1 "
            f"{res.baseline['top1']:.4f} on {res.baseline['n_images']} test images\n"
        )
        print(summary_table(res), "\n")

        # 3. several networks on the same data
        models = [
            VGG / "converged" / "model.onnx",
            VGG / "random" / "model.onnx",
            VGG / "rescaled" / "model.onnx",
            DEMO / "model.onnx",
        ]
        cmp = onnx_fe.compare(models, DIGITS / "test", OUT / "compare", **common)
        shutil.copy(cmp.png, IMG / "compare_digits.png")
        print("## compare on models/data/digits/test\n")
        print("| model | layer | map | feature entropy | birth rate |\n| --- | --- | --- | --- | --- |")
        for r in cmp.layers:
            print(
                f"| {r['model']} | {r['layer_index']} | {r['size']} | {r['feature_entropy']:.3f} | "
                f"{r['birth_rate']:.3f} |"
            )
        print(
            "\n| model | last layer | feature entropy | birth rate | top-1 | loss |\n| --- | --- | --- | --- | --- | --- |"
        )
        for m in cmp.models:
            print(
                f"| {m['model']} | {m['last_layer']} | {m['last_feature_entropy']:.3f} | "
                f"{m['last_birth_rate']:.4f} | {m['top1']:.4f} | {m['loss']:.4f} |"
            )
    else:
        print(f"{model} not found: skipping digits_vgg and the comparison", file=sys.stderr)


if __name__ == "__main__":
    main()
