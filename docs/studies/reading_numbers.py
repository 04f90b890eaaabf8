"""The tables of docs/method.md, "Reading the numbers" and "Comparing networks", from the zoo.

    python docs/studies/reading_numbers.py            # prints the tables and updates docs/method.md
    python docs/studies/reading_numbers.py --no-write # prints them only

1. ``control``: `models/digits_vgg/converged` on `models/data/digits/test`, 20 images per class (200 images), CPU,
   defaults otherwise (1000 bootstrap resamples, k = 10, control seed 0), cubical and clique: the equivalent of

       onnx-fe score models/digits_vgg/converged/model.onnx models/data/digits/test --images-per-class 20 \\
           --control random-init [--method clique]

   Every number is a column of the run's layers.csv.
2. ``tap``: `models/shapes_resnet/converged` on `models/data/shapes/test`, 20 images per class, cubical; and the
   noise null of each map size for ReLU'd and for signed (not ReLU'd) noise maps, 16 units × 20 maps.
3. ``compare``: `onnx-fe compare` of the converged digits VGG against its initial weights
   (`models/digits_vgg/random`) and against the random-init twin of step 1 (20 images per class, cubical,
   1000 resamples, 999 permutations); and of `models/shapes_vgg/converged` against `models/shapes_resnet/converged`
   (20 images per class).
4. ``unit match``: :func:`onnx_fe.scores.compare.filter_match` for pairs of zoo networks (weights only).

About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import onnx_fe
from onnx_fe.scores.statistics import noise_null

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models"
DIGITS = ZOO / "data/digits/test"
SHAPES = ZOO / "data/shapes/test"


def _ci(v, lo=None, hi=None, signed=False):
    if v is None or v != v:
        return "n/a"
    f = "+.2f" if signed else ".2f"
    if lo is None or lo != lo:
        return f"{v:{f}}"
    return f"{v:{f}} [{lo:{f}}, {hi:{f}}]"


def _r(r, key, signed=False):
    return _ci(r.get(key), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"), signed)


def _d(v):
    return "n/a" if v != v else f"{v:+.2f}"


def control(tmp: Path) -> tuple[str, Path]:
    lines = [
        "| method | layer | map | trained FE | control FE | Δ FE [95 % CI] | Cohen's d | noise FE | "
        "trained rarefied FE (units) | control rarefied FE | Δ rarefied FE [95 % CI] | birth rate trained / control |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in ("cubical", "clique"):
        res = onnx_fe.score(
            ZOO / "digits_vgg/converged/model.onnx",
            DIGITS,
            tmp / method,
            images_per_class=20,
            control="random-init",
            method=method,
            device="cpu",
        )
        for r in res.layers:
            lines.append(
                f"| {method} | {r['layer_index']} | {r['height']}×{r['width']} | {r['fe']:.2f} | {r['control_fe']:.2f} | "
                f"{_r(r, 'delta_fe', True)} | {_d(r['cohens_d'])} | {r['null_fe']:.2f} | "
                f"{_ci(r['fe_rarefied'])} ({r['n_units_rarefied']}/{r['n_units']}) | {_ci(r['control_fe_rarefied'])} | "
                f"{_r(r, 'delta_fe_rarefied', True)} | {r['birth_rate']:.2f} / {r['control_birth_rate']:.2f} |"
            )
    return "\n".join(lines), tmp / "cubical" / "control" / "model.onnx"


def tap(tmp: Path) -> str:
    res = onnx_fe.score(
        ZOO / "shapes_resnet/converged/model.onnx", SHAPES, tmp / "resnet", images_per_class=20, device="cpu"
    )
    lines = [
        "| layer | map | tap | birth rate | FE | rarefied FE (units) | noise birth rate, ReLU'd / signed | "
        "noise FE, ReLU'd / signed |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res.layers:
        h, w = r["height"], r["width"]
        relu = noise_null(h, w, n_maps=20)
        signed = noise_null(h, w, n_maps=20, relu=False)
        lines.append(
            f"| {r['layer_index']} | {h}×{w} | {r['tap']} | {r['birth_rate']:.2f} | {r['fe']:.2f} | "
            f"{_ci(r['fe_rarefied'])} ({r['n_units_rarefied']}/{r['n_units']}) | "
            f"{relu.birth_rate:.2f} / {signed.birth_rate:.2f} | {relu.feature_entropy:.2f} / {signed.feature_entropy:.2f} |"
        )
    return "\n".join(lines)


def compare(tmp: Path, twin: Path) -> str:
    models = [ZOO / "digits_vgg/converged/model.onnx", ZOO / "digits_vgg/random/model.onnx", twin]
    res = onnx_fe.compare(models, DIGITS, tmp / "cmp_digits", images_per_class=20, device="cpu", plot=False)
    lines = [
        "| model | unit match | net FE [95 % CI] | Δ net FE [95 % CI] | p | net rarefied FE | Δ net rarefied FE | p | "
        "top-1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in res.models:
        p = [m.get(f"p_net_{s}") for s in ("fe", "fe_rarefied")]
        lines.append(
            f"| {m['model']} | {m['unit_match']:.2f} | {_r(m, 'net_fe')} | {_r(m, 'delta_net_fe', True)} | "
            f"{_p(p[0])} | {_r(m, 'net_fe_rarefied')} | {_r(m, 'delta_net_fe_rarefied', True)} | {_p(p[1])} | "
            f"{m['top1']:.2f} |"
        )
    for m in res.models[1:]:
        lines.append(f"\n{m['model']}: permutation test {m['permutation']}.")
    models = [ZOO / "shapes_vgg/converged/model.onnx", ZOO / "shapes_resnet/converged/model.onnx"]
    res = onnx_fe.compare(models, SHAPES, tmp / "cmp_shapes", images_per_class=20, device="cpu", plot=False)
    names = [m["model"] for m in res.models]
    lines += [
        "",
        f"`models/shapes_vgg/converged` ({names[0]}, 5 Conv layers) against `models/shapes_resnet/converged` "
        f"({names[1]}, 12 Conv layers), 20 images per class:",
        "",
        "| VGG layer (depth) | map, tap | FE | ResNet layer (depth) | map, tap | FE | Δ FE [95 % CI] | d | "
        "Δ rarefied FE [95 % CI] | birth rate VGG / ResNet |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["model"], r["ref_layer_index"]): r for r in res.layers}
    for i in sorted({r["ref_layer_index"] for r in res.layers}):
        a, b = by[(names[0], i)], by[(names[1], i)]
        lines.append(
            f"| {i} ({a['relative_depth']:.2f}) | {a['size']}, {a['tap'].split(' ')[0]} | {a['feature_entropy']:.2f} | "
            f"{b['layer_index']} ({b['relative_depth']:.2f}) | {b['size']}, {b['tap'].split(' ')[0]} | "
            f"{b['feature_entropy']:.2f} | {_r(b, 'delta_fe', True)} | {_d(b['cohens_d'])} | "
            f"{_r(b, 'delta_fe_rarefied', True)} | {a['birth_rate']:.2f} / {b['birth_rate']:.2f} |"
        )
    m = res.models[1]
    lines.append(
        f"| network | | {res.models[0]['net_fe']:.2f} | | | {m['net_fe']:.2f} | {_r(m, 'delta_net_fe', True)} | | "
        f"{_r(m, 'delta_net_fe_rarefied', True)} | |"
    )
    lines.append(f"\n{names[1]}: permutation test {m['permutation']}.")
    return "\n".join(lines)


def unit_match(twin: Path) -> str:
    """filter_match of zoo pairs (weights only, no scoring)."""
    from onnx_fe.experiments.compare import _conv_filters
    from onnx_fe.model.graph import load_model
    from onnx_fe.scores.compare import filter_match

    pairs = [
        ("digits_vgg/converged", "digits_vgg/random", "its initial weights"),
        ("digits_vgg/converged", "digits_vgg/rescaled", "a rescaled copy"),
        ("digits_vgg/converged", None, "its random-init twin (onnx-fe randomize, seed 0)"),
        ("shapes_vgg/converged", "shapes_vgg/random", "its initial weights"),
        ("shapes_vgg/converged", "shapes_vgg/epochs/epoch_05", "its epoch 5"),
        ("shapes_vgg/converged", "genA/genA_n200_noaug", "another training (200 images, the same seed 0)"),
        ("genB/noise_0.0", "genB/noise_0.8", "another training (80 % wrong labels, the same seed 0)"),
    ]
    lines = ["| network | against | unit match | per layer |", "| --- | --- | ---: | --- |"]
    for a, b, what in pairs:
        pa = ZOO / a / "model.onnx"
        pb = twin if b is None else (ZOO / f"{b}.onnx" if b.endswith("epoch_05") else ZOO / b / "model.onnx")
        fa, fb = _conv_filters(load_model(pa)), _conv_filters(load_model(pb))
        per = [filter_match([fa[i]], [fb[i]]) for i in sorted(fa)]
        total = filter_match([fa[i] for i in sorted(fa)], [fb[i] for i in sorted(fa)])
        lines.append(f"| `{a}` | {what} | {total:.2f} | {' / '.join(f'{x:.2f}' for x in per)} |")
    return "\n".join(lines)


def _p(v):
    return "n/a" if v is None or v != v else f"{v:.3f}"


def run() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ctrl, twin = control(tmp)
        return {
            "control_example": ctrl,
            "tap_example": tap(tmp),
            "compare_example": compare(tmp, twin),
            "unit_match_example": unit_match(twin),
        }


def write(tables: dict[str, str]) -> None:
    doc = ROOT / "docs" / "method.md"
    text = doc.read_text()
    for name, md in tables.items():
        pat = re.compile(rf"<!-- {name}:begin.*?<!-- {name}:end -->", re.S)
        if not pat.search(text):
            raise SystemExit(f"docs/method.md has no {name} markers")
        block = f"<!-- {name}:begin (written by docs/studies/reading_numbers.py) -->\n{md}\n<!-- {name}:end -->"
        text = pat.sub(lambda _, b=block: b, text)
    doc.write_text(text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    tables = run()
    for name, md in tables.items():
        print(f"## {name}\n{md}\n")
    if not a.no_write:
        write(tables)
