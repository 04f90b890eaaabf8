"""`onnx-fe prune --ratio 0.3` on five real framework exports (issue 22, part 4): torchvision ResNet-18 (the
TorchScript exporter, and the dynamo exporter with its weights in a side .onnx.data file), MobileNetV3-Large and
VGG11-BN, a Keras MobileNetV2 through tf2onnx, and the PP-OCR text-line classifier (a Paddle export).

    python -m models.build_prune_exports               # first, in the build venv (see models/README.md)
    python benchmarks/bench_prune_exports.py [--runs 20] [--round-to 1,8] [--only resnet] [--out ...json]
    python benchmarks/bench_prune_exports.py --table   # the Markdown table of docs/pruning.md, from the records

Each export is pruned by a weight-L1 ranking (the ``weight_l1`` indicator of ``onnx-fe rank``, in the file format
``onnx-fe rank`` writes, computed from the weights so that no scoring run is needed) with ``--ratio 0.3`` and
``--verify`` (the original with the removed units masked at their taps, beside the pruned model, on 8 seeded
standard-normal inputs), once as it is and once with ``--round-to 8`` (every pruned layer keeps a multiple of 8
channels, which onnxruntime's blocked convolution kernels need). The pruned file is checked with ``onnx.checker.check_model(full_check=True)`` (by path, so
that external data is read too). Latency: onnxruntime CPU, 1 thread, batch 1, median of ``--runs`` runs, the two
models taking turns run by run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

EXPORTS = ROOT / "models" / "prune_exports"
# (name, label in the table, --input-size)
MODELS = [
    ("tv_resnet18", "ResNet-18", None),
    ("tv_resnet18_dynamo", "ResNet-18 (dynamo exporter, external data)", None),
    ("tv_mobilenet_v3_large", "MobileNetV3-Large", None),
    ("tv_vgg11_bn", "VGG11-BN", None),
    ("keras_mobilenet_v2", "MobileNetV2", None),
    ("pp_textline_cls", "PP-OCR text-line classifier", "48x192"),
    ("tv_densenet121", "DenseNet-121 (beyond the five)", None),
    ("tv_shufflenet_v2_x1_0", "ShuffleNetV2 x1.0 (beyond the five)", None),
]


def model_path(name: str) -> Path:
    if name == "pp_textline_cls":
        return ROOT / "models" / "thirdparty" / name / "model.onnx"
    return EXPORTS / name / "model.onnx"


def framework(name: str) -> str:
    if name == "pp_textline_cls":
        return "PaddlePaddle, opset 11 (weights in Constant nodes)"
    card = json.loads((EXPORTS / name / "card.json").read_text())
    v = card["versions"]
    if "tf2onnx" in v:
        return f"Keras {v['keras']} (TF {v['tensorflow']}), tf2onnx {v['tf2onnx']}, opset {card['opset']}, NHWC"
    exporter = "dynamo exporter" if "dynamo=True" in card["exporter"] else "TorchScript exporter"
    return f"torchvision {v['torchvision'].split('+')[0]}, torch {v['torch'].split('+')[0]}, {exporter}, opset {card['opset']}"


def whole_reason(g, ratio: float, ranked: set[int], round_to: int) -> str:
    if not g.prunable:
        return g.reason
    if len(g.classes) < 2:
        return "a single channel"
    if not set(g.layers) & ranked:
        return "no ranked layer"
    if round_to > 1:
        return f"too narrow for --round-to {round_to}"
    return f"{ratio:g} × channels rounds to 0"


def run_one(name: str, label: str, size, round_to: int, args, tmp: Path) -> dict:
    from bench_prune import l1_ranking

    import onnx_fe
    from onnx_fe.scores.ranking import load_rankings

    path = model_path(name)
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: build it with `python -m models.build_prune_exports` (build venv)"
            if name != "pp_textline_cls"
            else f"{path} is missing: `python -m models.build_thirdparty --only pp_textline_cls`"
        )
    rk = l1_ranking(path, tmp / f"{name}-rank.csv")
    out = tmp / f"{name}-pruned.onnx"
    r = onnx_fe.prune(
        path,
        out,
        ranking=rk,
        ratio=args.ratio,
        verify=True,
        verify_samples=8,
        input_size=size,
        latency_runs=args.runs,
        threads=1,
        round_to=round_to if round_to > 1 else None,
    )
    onnx.checker.check_model(str(out), full_check=True)  # raises if not; by path: external data included
    ranked = {lr.layer_index for lr in load_rankings(rk)[0].layers}
    whole: dict[str, list[int]] = {}  # why -> the channel counts of the groups left whole for that reason
    for g in r.groups:
        if g.id not in r.pruned_groups:
            whole.setdefault(whole_reason(g, args.ratio, ranked, round_to), []).append(len(g.classes))
    couplings: dict[str, int] = {}
    for g in r.groups:
        for how in g.how:
            couplings[how] = couplings.get(how, 0) + 1
    return {
        "name": name,
        "model": label,
        "framework": framework(name),
        "input_size": size,
        "round_to": round_to,
        "external_data": [r.external_data is not None, any(out.parent.glob(out.name + ".data"))],
        "layers": sum(len(g.layers) for g in r.groups),
        "groups": len(r.groups),
        "groups_pruned": len(r.pruned_groups),
        "groups_whole": whole,
        "couplings": couplings,
        "channels_removed": r.n_removed,
        "params": list(r.params),
        "macs": list(r.macs),
        "bytes": list(r.bytes),
        "latency_ms": [round(v, 3) for v in r.latency_ms],
        "verify_max_diff": r.max_diff,
        "verify_max_output": r.max_output,
        "verify_inputs": r.verify_inputs,
        "folds": r.folds,
        "inexact": r.inexact,
        "checker_full_check": True,
    }


def fmt_n(v: float) -> str:
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def fmt_b(v: float) -> str:
    return f"{v / 1e6:.1f} MB" if v >= 1e6 else f"{v / 1e3:.0f} kB"


def table(data: dict) -> str:
    head = (
        "| model | framework, exporter | groups pruned / all (left whole: why) | channels removed | parameters | "
        "MACs / image | file size | latency, ms (1 thread) | max \\|pruned − masked\\| (outputs up to) |"
    )
    rows = [head, "|" + "---|" * 9]
    for rec in data["records"]:
        whole = "; ".join(
            f"{len(ch)} {why}, {min(ch)}–{max(ch)} channels" if min(ch) < max(ch) else f"{len(ch)} {why}, {ch[0]} ch."
            for why, ch in sorted(rec["groups_whole"].items())
        )
        p0, p1 = rec["params"]
        m0, m1 = rec["macs"]
        b0, b1 = rec["bytes"]
        l0, l1 = rec["latency_ms"]
        name = rec["model"] + (f" @ {rec['input_size']}" if rec["input_size"] else "")
        name += f", --round-to {rec['round_to']}" if rec.get("round_to", 1) > 1 else ""
        rows.append(
            f"| {name} | {rec['framework']} | {rec['groups_pruned']} / {rec['groups']}"
            + (f" ({whole})" if whole else "")
            + f" | {rec['channels_removed']} | {fmt_n(p0)} → {fmt_n(p1)} | {fmt_n(m0)} → {fmt_n(m1)} "
            f"| {fmt_b(b0)} → {fmt_b(b1)} | {l0:.1f} → {l1:.1f} ({100 * (l1 - l0) / l0:+.0f} %) "
            f"| {rec['verify_max_diff']:.1e} ({rec['verify_max_output']:.3g})"
            + (f"; {len(rec['folds'])} convs with a folded bias" if rec["folds"] else "")
            + (f"; {len(rec['inexact'])} reported inexact" if rec["inexact"] else "")
            + " |"
        )
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--round-to", default="1,8", help="comma-separated --round-to values to run (1: none)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prune_exports.json")
    ap.add_argument("--only", default=None, help="substring of the export names to run (the others keep their record)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of the records and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return

    import onnxruntime

    old = {}
    if args.only and args.out.exists():
        old = {(r["name"], r.get("round_to", 1)): r for r in json.loads(args.out.read_text())["records"]}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, label, size in MODELS:
            for rt in [int(v) for v in args.round_to.split(",")]:
                if args.only and args.only.lower() not in name.lower():
                    if (name, rt) in old:
                        records.append(old[(name, rt)])
                    continue
                rec = run_one(name, label, size, rt, args, Path(tmp))
                for f in Path(tmp).iterdir():  # the 0.5 GB VGG files should not pile up
                    f.unlink()
                records.append(rec)
                print(json.dumps(rec), flush=True)
    data = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_prune_exports.py"
        + (f" --runs {args.runs}" if args.runs != 20 else "")
        + (f" --round-to {args.round_to}" if args.round_to != "1,8" else ""),
        "ratio": args.ratio,
        "runs": args.runs,
        "onnxruntime": onnxruntime.__version__,
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".partial")
    tmp_out.write_text(json.dumps(data, indent=1) + "\n")
    tmp_out.replace(args.out)
    print(table(data))


if __name__ == "__main__":
    main()
