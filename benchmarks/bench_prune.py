"""`onnx-fe prune` at 30 % on real exports: parameters, MACs, file size and onnxruntime latency before and after,
and the --verify gap against masking.

    python benchmarks/bench_prune.py [--runs 10] [--out benchmarks/results/prune.json]

Models: the demo model, the third-party classifiers in models/thirdparty/*/model.onnx, and the random-init
ResNet-18 and VGG11 (small head) of benchmarks/nets.py. Each is pruned with ``--ratio 0.3`` by a weight-L1
ranking (the ``weight_l1`` indicator of ``onnx-fe rank``: descending L1 norm of the filter), written here from
the weights so that no scoring run is needed; ``--verify`` compares with the original masked at the removed
units' taps on 8 standard-normal inputs. Latency: CPU, 1 thread, batch 1, median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def l1_ranking(model_path: Path, out: Path) -> Path:
    """A weight_l1 ranking of every layer whose weight is a constant (the format `onnx-fe rank` writes)."""
    from onnx_fe.model.graph import load_model
    from onnx_fe.model.randomize import _Graph
    from onnx_fe.scores.ranking import LayerRanking, Ranking, order_from_scores

    lm = load_model(model_path)
    g = _Graph(lm.model.graph)
    layers = []
    for u in lm.units:
        try:
            w = np.asarray(g.value(u.weight), dtype=np.float64)
        except Exception:
            continue
        score = np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
        layers.append(LayerRanking(u.name, u.index, score, order_from_scores(score, True)))
    csv_path, _ = Ranking(by="weight_l1", layers=layers).save(out)
    return csv_path


def models(cache: Path) -> list[tuple[str, Path, str | None, str]]:
    import nets

    out = [("demo (models/demo)", ROOT / "models/demo/model.onnx", None, "trained")]
    for card in sorted((ROOT / "models/thirdparty").glob("*/card.json")):
        c = json.loads(card.read_text())
        size = c.get("onnx_fe_options", {}).get("input_size")
        out.append((c["name"], card.parent / "model.onnx", size, "trained, third-party"))
    out.append(("ResNet-18 (nets.py)", nets.build("resnet18", cache), None, "random init"))
    out.append(("VGG11, small head (nets.py)", nets.build("vgg11", cache, small_head=True), None, "random init"))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prune.json")
    ap.add_argument("--only", default=None, help="substring of the model names to run")
    args = ap.parse_args(argv)

    import onnx_fe

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, path, size, kind in models(tmp):
            if args.only and args.only.lower() not in name.lower():
                continue
            rk = l1_ranking(path, tmp / f"{path.parent.name}-{path.stem}-rank.csv")
            out = tmp / f"{path.parent.name}-{path.stem}-pruned.onnx"
            r = onnx_fe.prune(
                path, out, ranking=rk, ratio=args.ratio, verify=True, input_size=size, latency_runs=args.runs
            )
            groups = [g for g in r.groups]
            rec = {
                "model": name,
                "kind": kind,
                "input_size": size,
                "layers": sum(len(g.layers) for g in groups),
                "groups": len(groups),
                "groups_prunable": sum(g.prunable for g in groups),
                "groups_pruned": len(r.pruned_groups),
                "unprunable_reasons": sorted({g.reason for g in groups if not g.prunable}),
                "channels_removed": r.n_removed,
                "params": list(r.params),
                "macs": list(r.macs),
                "bytes": list(r.bytes),
                "latency_ms": [round(v, 4) for v in r.latency_ms],
                "verify_max_diff": r.max_diff,
                "verify_max_output": r.max_output,
                "folds": r.folds,
                "inexact": r.inexact,
                "checker_full": bool(onnx.checker.check_model(str(out), full_check=True) is None),
            }
            records.append(rec)
            print(json.dumps(rec), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".partial")
    tmp_out.write_text(json.dumps({"ratio": args.ratio, "runs": args.runs, "records": records}, indent=1) + "\n")
    tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
