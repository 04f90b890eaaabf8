"""Real framework exports that `onnx-fe prune` is checked on (issue 22, part 4): torchvision ResNet-18 (two
exporters), MobileNetV3-Large and VGG11-BN, and a Keras MobileNetV2 through tf2onnx; beyond the issue's list,
torchvision DenseNet-121, whose BatchNorm after each Concat exercises the folding of removed channels' constants, and
ShuffleNetV2 x1.0, whose units split their channels in halves and shuffle them. The fifth network of the
coverage, the PP-OCR text-line classifier (a Paddle export), is built by ``models/build_thirdparty.py``.

    python -m models.build_prune_exports                        # build venv; the Keras part through --tf-python
    python -m models.build_prune_exports --only tv_resnet18,tv_resnet18_dynamo
    python -m models.build_prune_exports --skip keras_mobilenet_v2
    python -m models.build_prune_exports --force                # rebuild even where the card matches the files

Requirements: the build venv (/work/venv-build: torch 2.13 CPU, torchvision 0.28.0, onnx, onnxruntime,
onnxscript) and, for ``keras_mobilenet_v2``, the TensorFlow venv (/work/venv-tf: tensorflow-cpu, tf2onnx, onnx;
TensorFlow pins h5py < 3.15, so it never goes into the build venv). The Keras model is built by this same file
run as ``/work/venv-tf/bin/python models/build_prune_exports.py --keras-worker OUT_DIR`` (no torch there).

Nothing is downloaded at run time: every network has random weights from a fixed seed (torchvision
``weights=None``, Keras ``weights=None``), which is all that pruning coverage needs (which ops and patterns the
exporters write, and whether the pruned graph still equals the masked one). One step follows the initialisation:
the BatchNormalization statistics are set from one batch of 16 seeded standard-normal images (train-mode forward,
the batch's own mean and variance). With the initial statistics (mean 0, variance 1) the MobileNets' outputs
fade to about 1e-10 through their depth, which would make the --verify comparison and the latency of the exports
unlike those of a trained network; with the set statistics the activations keep their scale through the depth.

Output, per export (see models/README.md, "Exports for pruning"):
  models/prune_exports/<name>/model.onnx       git-ignored (5 MB to 530 MB), rebuilt here
  models/prune_exports/<name>/model.onnx.data  git-ignored, only tv_resnet18_dynamo (the dynamo exporter's weights)
  models/prune_exports/<name>/card.json        committed: framework, versions, builder call, seed, exporter, opset,
                                               input, op counts, SHA-256 and size of every file, the largest
                                               |framework - onnxruntime| output difference on two seeded inputs

A card whose SHA-256 digests match the files on disk means the export is up to date: it is skipped (``--force``
rebuilds it). On another machine or torch build the bytes may differ in the last bits; the card then records the
new digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
OUT_DIR = MODELS_DIR / "prune_exports"
SEED = 0
INPUT_HW = (224, 224)
CALIBRATION_IMAGES = 16

# name -> (torchvision builder, exporter); the Keras export is built by keras_worker()
TORCH_EXPORTS = {
    "tv_resnet18": ("resnet18", "legacy"),
    "tv_resnet18_dynamo": ("resnet18", "dynamo"),
    "tv_mobilenet_v3_large": ("mobilenet_v3_large", "legacy"),
    "tv_vgg11_bn": ("vgg11_bn", "legacy"),
    # beyond the five of the issue: BatchNorm after Concat, so removed channels reach the next conv as a constant
    "tv_densenet121": ("densenet121", "legacy"),
    # channel split (Split of halves) and channel shuffle (Reshape-Transpose-Reshape) in every unit
    "tv_shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", "legacy"),
}
KERAS_EXPORTS = ("keras_mobilenet_v2",)
ALL = tuple(TORCH_EXPORTS) + KERAS_EXPORTS


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rel(path: Path) -> str:
    return Path(path).resolve().relative_to(MODELS_DIR.parent).as_posix()


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("model.onnx*") if p.is_file())


def up_to_date(folder: Path) -> bool:
    card = folder / "card.json"
    if not card.exists():
        return False
    want = json.loads(card.read_text()).get("files", {})
    have = files_of(folder)
    if not want or sorted(want) != [p.name for p in have]:
        return False
    return all(want[p.name]["sha256"] == sha256_file(p) for p in have)


def op_counts(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def write_card(folder: Path, card: dict) -> None:
    import onnx

    model = folder / "model.onnx"
    onnx.checker.check_model(str(model), full_check=True)
    m = onnx.load(str(model), load_external_data=False)
    card["opset"] = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    card["ir_version"] = m.ir_version
    card["onnx_ops"] = op_counts(model)
    card["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files_of(folder)}
    tmp = folder / "card.json.partial"
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(folder / "card.json")


# --------------------------------------------------------------------------------------------------------------------
# torchvision (build venv)
# --------------------------------------------------------------------------------------------------------------------
def import_torchvision():
    """torchvision, also where its compiled ops cannot load.

    PyPI's torchvision 0.28.0 (the release made for torch 2.13.0) is built against CUDA torch: with the CPU build of
    torch its ``_C`` extension fails to load (libc10_cuda.so is missing), and ``import torchvision`` then stops at
    ``register_fake("torchvision::nms")`` with "operator torchvision::nms does not exist". The CPU wheel
    (0.28.0+cpu) lives only on PyTorch's own index, which this machine cannot reach. The model definitions are plain
    Python and never call those ops, so the two operator names are declared here (no kernel: calling nms would
    fail) and the import goes through. With a torchvision whose extension loads, nothing is declared."""
    import torch

    try:
        import torchvision

        return torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[k]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision.lib = lib  # keep the declarations alive
    import torchvision

    return torchvision


def set_bn_statistics_torch(net, seed: int) -> None:
    """Every BatchNorm's running mean and variance := those of one train-mode forward of seeded noise images."""
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly the batch's statistics
    x = np.random.default_rng(seed + 1).standard_normal((CALIBRATION_IMAGES, 3, *INPUT_HW)).astype(np.float32)
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(x))
    net.eval()
    for m in bns:
        m.momentum = 0.1


def build_torch(name: str, folder: Path) -> dict:
    import torch

    from models.common import seed_everything

    tv = import_torchvision()
    arch, exporter = TORCH_EXPORTS[name]
    seed_everything(SEED)
    net = getattr(tv.models, arch)(weights=None)
    set_bn_statistics_torch(net, SEED)
    x = torch.zeros(1, 3, *INPUT_HW)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        path = Path(tmp) / "model.onnx"
        t = time.time()
        if exporter == "legacy":
            # the TorchScript exporter with its defaults (eval mode: BatchNormalization folded into the convs)
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            )
            opset = 17
        else:
            # the torch.export-based exporter with its defaults: weights in model.onnx.data beside the graph
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=True,
                external_data=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("N")},),
            )
            opset = None
        seconds = time.time() - t
        xs = np.random.default_rng(SEED).standard_normal((2, 3, *INPUT_HW)).astype(np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(xs)).numpy()
        diff = float(np.max(np.abs(ref - ort_outputs(path, xs))))
        folder.mkdir(parents=True, exist_ok=True)
        for old in files_of(folder):
            old.unlink()
        for p in sorted(Path(tmp).iterdir()):  # model.onnx.data first: model.onnx last, when its weights are there
            if p.name != "model.onnx":
                os.replace(p, folder / p.name)
        os.replace(path, folder / "model.onnx")
    return {
        "name": name,
        "framework": "PyTorch (torchvision)",
        "builder": (
            f"torchvision.models.{arch}(weights=None) after torch.manual_seed({SEED}); BatchNorm statistics from one "
            f"train-mode batch of {CALIBRATION_IMAGES} standard-normal images (numpy seed {SEED + 1}); eval mode"
        ),
        "versions": {"torch": torch.__version__, "torchvision": tv.__version__},
        "exporter": (
            "torch.onnx.export(dynamo=False, opset_version=17): the TorchScript exporter, BatchNormalization folded"
            if exporter == "legacy"
            else "torch.onnx.export(dynamo=True, external_data=True): the torch.export exporter, its default opset"
        ),
        "requested_opset": opset,
        "input": {"name": "input", "shape": ["N", 3, *INPUT_HW], "layout": "NCHW"},
        "output": "logits",
        "max_abs_diff_framework_vs_onnxruntime": diff,
        "max_abs_output": float(np.max(np.abs(ref))),
        "export_seconds": round(seconds, 1),
    }


# --------------------------------------------------------------------------------------------------------------------
# Keras (TensorFlow venv): this file run as a script with --keras-worker; no torch, no onnx_fe there
# --------------------------------------------------------------------------------------------------------------------
def keras_worker(out_dir: str) -> None:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    out = Path(out_dir)
    keras.utils.set_random_seed(SEED)
    # logits, not the default softmax: with random weights the softmax is ~1/1000 everywhere and hides differences
    net = keras.applications.MobileNetV2(
        weights=None, input_shape=(*INPUT_HW, 3), classes=1000, classifier_activation=None
    )
    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0  # moving := this batch's statistics
    x = np.random.default_rng(SEED + 1).standard_normal((CALIBRATION_IMAGES, *INPUT_HW, 3)).astype(np.float32)
    net(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
    spec = (tf.TensorSpec((None, *INPUT_HW, 3), tf.float32, name="input"),)
    t = time.time()
    proto, _ = tf2onnx.convert.from_keras(net, input_signature=spec, opset=17)
    seconds = time.time() - t
    old = proto.graph.output[0].name
    for n in proto.graph.node:
        for i, o in enumerate(n.output):
            if o == old:
                n.output[i] = "logits"
    proto.graph.output[0].name = "logits"
    onnx.save(proto, str(out / "model.onnx"), save_as_external_data=False)
    xs = np.random.default_rng(SEED).standard_normal((2, *INPUT_HW, 3)).astype(np.float32)
    np.savez(out / "check.npz", x=xs, y=net(xs, training=False).numpy())
    info = {
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__},
        "export_seconds": round(seconds, 1),
    }
    (out / "info.json").write_text(json.dumps(info))


def build_keras(name: str, folder: Path, tf_python: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        subprocess.run([tf_python, str(Path(__file__).resolve()), "--keras-worker", tmp], check=True, env=env, cwd=tmp)
        info = json.loads((Path(tmp) / "info.json").read_text())
        chk = np.load(Path(tmp) / "check.npz")
        diff = float(np.max(np.abs(chk["y"] - ort_outputs(Path(tmp) / "model.onnx", chk["x"]))))
        folder.mkdir(parents=True, exist_ok=True)
        for old in files_of(folder):
            old.unlink()
        os.replace(Path(tmp) / "model.onnx", folder / "model.onnx")
    return {
        "name": name,
        "framework": "TensorFlow / Keras (tf2onnx)",
        "builder": (
            f"keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None) "
            f"after keras.utils.set_random_seed({SEED}); BatchNormalization statistics from one train-mode batch of "
            f"{CALIBRATION_IMAGES} standard-normal images (numpy seed {SEED + 1})"
        ),
        "versions": info["versions"],
        "exporter": "tf2onnx.convert.from_keras(opset=17), input (N, 224, 224, 3) float32",
        "requested_opset": 17,
        "input": {"name": "input", "shape": ["N", *INPUT_HW, 3], "layout": "NHWC"},
        "output": "logits (classifier_activation=None: with random weights a softmax is ~1/1000 everywhere)",
        "max_abs_diff_framework_vs_onnxruntime": diff,
        "max_abs_output": float(np.max(np.abs(chk["y"]))),
        "export_seconds": info["export_seconds"],
    }


# --------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help=f"comma-separated names among {', '.join(ALL)}")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--force", action="store_true", help="rebuild even where the card matches the files")
    ap.add_argument("--tf-python", default="/work/venv-tf/bin/python", help="python of the TensorFlow venv")
    ap.add_argument("--keras-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.keras_worker:
        return keras_worker(args.keras_worker)

    names = [n.strip() for n in args.only.split(",")] if args.only else list(ALL)
    unknown = [n for n in names + [s for s in args.skip.split(",") if s] if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown export(s): {', '.join(unknown)} (choose among {', '.join(ALL)})")
    names = [n for n in names if n not in args.skip.split(",")]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = OUT_DIR / name
        if not args.force and up_to_date(folder):
            print(f"[{name}] up to date ({rel(folder / 'card.json')} matches the files)", flush=True)
            continue
        if name in KERAS_EXPORTS and not Path(args.tf_python).exists():
            print(f"[{name}] SKIPPED: {args.tf_python} not found (pip install tensorflow-cpu tf2onnx onnx)")
            continue
        t = time.time()
        card = build_keras(name, folder, args.tf_python) if name in KERAS_EXPORTS else build_torch(name, folder)
        card["seed"] = SEED
        card["build_seconds"] = round(time.time() - t, 1)
        card["built_by"] = "python -m models.build_prune_exports --only " + name
        write_card(folder, card)
        size = sum(v["bytes"] for v in json.loads((folder / "card.json").read_text())["files"].values())
        print(
            f"[{name}] {rel(folder / 'model.onnx')}: {size / 1e6:.1f} MB, "
            f"|framework - onnxruntime| <= {card['max_abs_diff_framework_vs_onnxruntime']:.2g} "
            f"(outputs up to {card['max_abs_output']:.3g}), "
            f"{card['build_seconds']} s",
            flush=True,
        )


if __name__ == "__main__":
    if "--keras-worker" not in sys.argv:
        sys.path.insert(0, str(MODELS_DIR.parent))
    main()
