"""Random-init ONNX exports of ResNet-18, VGG11 and VGG16, built with onnx.helper + NumPy (no torch).

    python benchmarks/nets.py resnet18 vgg11            # → benchmarks/.cache/<name>-s0.onnx
    python benchmarks/nets.py vgg11 --small-head --seed 3 --out /tmp/nets

The architectures are torchvision's (``resnet18``, ``vgg11``, ``vgg16``): input ``input``
float32 (N, 3, 224, 224), NCHW; output ``logits`` (N, 1000). Weights are drawn
from ``numpy.random.default_rng(seed)`` in a fixed order, so the bytes of a file
depend only on (name, seed, small_head):

* Conv weights: He-normal, ``std = sqrt(2 / fan_out)``, fan_out = out_ch · k · k
  (torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``).
  Conv biases (VGG only; ResNet convs have none) are 0.
* BatchNormalization (ResNet): identity statistics, scale 1, bias 0, mean 0,
  var 1, epsilon 1e-5 (torchvision's defaults at init; kept as separate nodes,
  not folded, so the graph looks like a real export).
* Gemm (fully connected) weights: N(0, 0.01²), biases 0 (torchvision's VGG init;
  used for the ResNet head too).

``small_head`` (VGG11 only): torchvision's VGG head is AdaptiveAvgPool(7×7) →
Linear(25088, 4096) → ReLU → Dropout → Linear(4096, 4096) → ReLU → Dropout →
Linear(4096, 1000): 124 M of the model's 133 M parameters, a 531 MB file that takes ~40 s to
build. With ``small_head=True`` it is replaced by GlobalAveragePool → Flatten →
one Gemm(512 → 1000) (a 39 MB file, ~2 s), which keeps benchmarks light. The conv
layers, the only ones feature entropy scores, are identical either way for one
seed (they are drawn first). Dropout is the identity at inference and is left out.

The files are meant to be generated at benchmark time into the gitignored
``benchmarks/.cache/``, never committed. IR version 10 and opset 17:
``onnx.helper.make_model`` alone writes the newest IR version the onnx package
knows (14 with onnx 1.23), which onnxruntime 1.31 refuses (it loads ≤ 13); IR 10
is what onnxruntime ≥ 1.18, the oldest the project supports, accepts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["IR_VERSION", "NAMES", "OPSET", "build"]

IR_VERSION = 10
OPSET = 17
NAMES = ("resnet18", "vgg11", "vgg16")
INPUT_SIZE = 224
NUM_CLASSES = 1000
CACHE = Path(__file__).resolve().parent / ".cache"

# torchvision vgg cfg "A" (VGG11): channels, "M" = 2×2 max pool
_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# cfg "D" (VGG16)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class _Graph:
    """Collects nodes and initializers; weights are drawn in call order from one RNG."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def _name(self, op: str) -> str:
        k = self._count.get(op, 0)
        self._count[op] = k + 1
        return f"/{op}_{k}"

    def init(self, name: str, a: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        out: str | None = None,
        name: str | None = None,
        **attrs,
    ) -> str:
        name = name or self._name(op)
        out = out or f"{name}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(
        self,
        x: str,
        prefix: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        pad: int = 0,
        bias: bool = False,
    ) -> str:
        std = np.sqrt(2.0 / (cout * k * k))
        w = (self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(std)).astype(np.float32)
        inputs = [x, self.init(f"{prefix}.weight", w)]
        if bias:
            inputs.append(self.init(f"{prefix}.bias", np.zeros(cout, np.float32)))
        return self.node(
            "Conv",
            inputs,
            name=f"/{prefix}/Conv",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            dilations=[1, 1],
            group=1,
        )

    def bn(self, x: str, prefix: str, c: int) -> str:
        ins = [x]
        for part, value in (
            ("weight", 1.0),
            ("bias", 0.0),
            ("running_mean", 0.0),
            ("running_var", 1.0),
        ):
            ins.append(self.init(f"{prefix}.{part}", np.full(c, value, np.float32)))
        return self.node("BatchNormalization", ins, epsilon=1e-5, momentum=0.9)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self.node(
            "MaxPool",
            [x],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def gemm(self, x: str, prefix: str, cin: int, cout: int, out: str | None = None) -> str:
        w = (self.rng.standard_normal((cout, cin), dtype=np.float32) * np.float32(0.01)).astype(np.float32)
        ins = [
            x,
            self.init(f"{prefix}.weight", w),
            self.init(f"{prefix}.bias", np.zeros(cout, np.float32)),
        ]
        return self.node("Gemm", ins, out, alpha=1.0, beta=1.0, transB=1)

    def gap_flatten(self, x: str) -> str:
        return self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)


def _resnet18(g: _Graph, x: str) -> str:
    x = g.relu(g.bn(g.conv(x, "conv1", 3, 64, 7, stride=2, pad=3), "bn1", 64))
    x = g.maxpool(x, 3, 2, 1)
    cin = 64
    for stage, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            s = stride if block == 0 else 1
            y = g.relu(
                g.bn(
                    g.conv(x, f"{p}.conv1", cin, cout, 3, stride=s, pad=1),
                    f"{p}.bn1",
                    cout,
                )
            )
            y = g.bn(g.conv(y, f"{p}.conv2", cout, cout, 3, pad=1), f"{p}.bn2", cout)
            if s != 1 or cin != cout:
                x = g.bn(
                    g.conv(x, f"{p}.downsample.0", cin, cout, 1, stride=s),
                    f"{p}.downsample.1",
                    cout,
                )
            x = g.relu(g.node("Add", [y, x]))
            cin = cout
    return g.gemm(g.gap_flatten(x), "fc", 512, NUM_CLASSES, out="logits")


def _vgg11(g: _Graph, x: str, small_head: bool, cfg=_VGG11) -> str:
    cin, i = 3, 0
    for v in cfg:
        if v == "M":
            x = g.maxpool(x, 2, 2)
        else:
            x = g.relu(g.conv(x, f"features.{i}", cin, v, 3, pad=1, bias=True))
            cin = v
            i += 2
        i += v == "M"
    if small_head:
        return g.gemm(g.gap_flatten(x), "classifier", 512, NUM_CLASSES, out="logits")
    # 224² input → 7×7 maps here, so torchvision's AdaptiveAvgPool2d((7, 7)) is the identity.
    x = g.node("Flatten", [x], axis=1)
    x = g.relu(g.gemm(x, "classifier.0", 512 * 7 * 7, 4096))
    x = g.relu(g.gemm(x, "classifier.3", 4096, 4096))
    return g.gemm(x, "classifier.6", 4096, NUM_CLASSES, out="logits")


def make(name: str, seed: int = 0, small_head: bool = False) -> onnx.ModelProto:
    """The model as an in-memory ModelProto (see the module docstring)."""
    if name not in NAMES:
        raise ValueError(f"unknown net {name!r}; choose from {', '.join(NAMES)}")
    if small_head and name == "resnet18":
        raise ValueError("small_head applies to the VGGs only (resnet18's head is already one small Gemm)")
    g = _Graph(int(seed))
    if name == "resnet18":
        out = _resnet18(g, "input")
    else:
        out = _vgg11(g, "input", small_head, _VGG11 if name == "vgg11" else _VGG16)
    graph = helper.make_graph(
        g.nodes,
        f"{name}{'_small_head' if small_head else ''}_seed{int(seed)}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-fe nets.py",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build(name: str, path=None, seed: int = 0, small_head: bool = False) -> Path:
    """Write the random-init model ``name`` ("resnet18", "vgg11" or "vgg16") to ``path`` and return it.

    ``path`` may be a file or an existing directory (then ``<name>[-small]-s<seed>.onnx``
    inside it); default ``benchmarks/.cache/``. The bytes are a function of
    (name, seed, small_head) only. ``small_head`` (VGG11 only) swaps the ≈ 500 MB
    three-layer classifier for global average pooling + one Gemm.
    """
    model = make(name, seed, small_head)
    fname = f"{name}{'-small' if small_head else ''}-s{int(seed)}.onnx"
    path = Path(path) if path is not None else CACHE
    if path.is_dir() or path.suffix != ".onnx":
        path = path / fname
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(model.SerializeToString(deterministic=True))
    tmp.replace(path)
    return path


def cached(name: str, seed: int = 0, small_head: bool = False) -> Path:
    """Path of the model in ``benchmarks/.cache/``, built on first use."""
    p = CACHE / f"{name}{'-small' if small_head else ''}-s{int(seed)}.onnx"
    return p if p.is_file() else build(name, p, seed, small_head)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", choices=NAMES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--small-head",
        action="store_true",
        help="VGG11: global avg pool + one Gemm head",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=CACHE,
        help="file or directory (default benchmarks/.cache/)",
    )
    args = ap.parse_args(argv)
    for name in args.names:
        print(build(name, args.out, args.seed, args.small_head and name != "resnet18"))


if __name__ == "__main__":
    main()
