"""Small ONNX graphs built with onnx.helper that imitate each exporter's style."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17


class G:
    """A tiny graph builder: conv blocks with the chains various exporters write."""

    def __init__(self, in_shape=(None, 3, 16, 16), seed=0, weights_as_constants=False, nhwc_input=False):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.constants = weights_as_constants
        self.k = 0
        if nhwc_input:
            n, c, h, w = in_shape
            self.input = helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, h, w, c])
            self.cur = self.node("Transpose", ["image"], perm=[0, 3, 1, 2])
        else:
            self.input = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))
            self.cur = "image"
        self.c = in_shape[1]

    def name(self, base):
        self.k += 1
        return f"{base}_{self.k}"

    def const(self, arr, base="w"):
        arr = np.asarray(arr, dtype=np.float32)
        nm = self.name(base)
        if self.constants:  # Paddle style: weights as Constant nodes
            self.nodes.append(helper.make_node("Constant", [], [nm], value=numpy_helper.from_array(arr, nm + "_v")))
        else:
            self.inits.append(numpy_helper.from_array(arr, nm))
        return nm

    def node(self, op, inputs, name=None, n_out=1, **attrs):
        outs = [self.name(op.lower() + "_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name if name is not None else self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, cout, k=3, stride=1, bias=True, name=None, pad=None):
        w = self.const(self.rng.normal(0, 0.5, (cout, self.c, k, k)) / k)
        ins = [self.cur, w] + ([self.const(self.rng.normal(0, 0.1, cout), "b")] if bias else [])
        p = k // 2 if pad is None else pad
        self.cur = self.node("Conv", ins, name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4)
        self.c = cout
        return self.cur

    def bias_add(self):
        self.cur = self.node("Add", [self.cur, self.const(self.rng.normal(0, 0.1, (1, self.c, 1, 1)), "b")])

    def bn(self):
        c = self.c
        ins = [
            self.cur,
            self.const(self.rng.uniform(0.5, 1.5, c), "g"),
            self.const(self.rng.normal(0, 0.1, c), "be"),
            self.const(self.rng.normal(0, 0.1, c), "m"),
            self.const(self.rng.uniform(0.5, 1.5, c), "v"),
        ]
        self.cur = self.node("BatchNormalization", ins, epsilon=1e-5)

    def affine(self):  # BN folded by TF/Keras exporters into Mul + Add
        self.cur = self.node("Mul", [self.cur, self.const(self.rng.uniform(0.5, 1.5, (1, self.c, 1, 1)), "s")])
        self.cur = self.node("Add", [self.cur, self.const(self.rng.normal(0, 0.1, (1, self.c, 1, 1)), "t")])

    def act(self, kind):
        x = self.cur
        if kind == "relu":
            self.cur = self.node("Relu", [x])
        elif kind == "relu6":
            self.cur = self.node("Clip", [x, self.const(0.0, "lo"), self.const(6.0, "hi")])
        elif kind == "leaky":
            self.cur = self.node("LeakyRelu", [x], alpha=0.1)
        elif kind == "silu":
            s = self.node("Sigmoid", [x])
            self.cur = self.node("Mul", [x, s])
        elif kind == "hardswish":
            self.cur = self.node("HardSwish", [x])
        elif kind == "hardswish_decomposed":
            a = self.node("Add", [x, self.const(3.0, "three")])
            c = self.node("Clip", [a, self.const(0.0, "lo"), self.const(6.0, "hi")])
            m = self.node("Mul", [x, c])
            self.cur = self.node("Div", [m, self.const(6.0, "six")])
        elif kind == "prelu":
            self.cur = self.node("PRelu", [x, self.const(np.full((self.c, 1, 1), 0.2), "slope")])
        elif kind == "tanh":
            self.cur = self.node("Tanh", [x])
        else:
            raise ValueError(kind)

    def pool(self):
        self.cur = self.node("MaxPool", [self.cur], kernel_shape=[2, 2], strides=[2, 2])

    def head(self, n_classes=4):
        g = self.node("GlobalAveragePool", [self.cur])
        f = self.node("Flatten", [g], axis=1)
        w = self.const(self.rng.normal(0, 0.3, (self.c, n_classes)))
        self.cur = self.node("MatMul", [f, w])

    def model(self, output=None, ir_version=IR_VERSION):
        out = helper.make_tensor_value_info(output or self.cur, TensorProto.FLOAT, [None, None])
        g = helper.make_graph(self.nodes, "g", [self.input], [out], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = ir_version
        onnx.checker.check_model(m)
        return m


def simple_cnn(seed=0, in_shape=(None, 3, 16, 16), n_classes=4, **kw) -> onnx.ModelProto:
    """conv-relu, conv-bn-relu, pool, conv-relu, GAP head."""
    g = G(in_shape, seed=seed, **kw)
    g.conv(4, name="conv1")
    g.act("relu")
    g.conv(6, bias=False, name="conv2")
    g.bn()
    g.act("relu")
    g.pool()
    g.conv(8, name="conv3")
    g.act("relu")
    g.head(n_classes)
    return g.model()


def write_image_folder(root, n_classes=3, per_class=5, size=(16, 16), mode="RGB", seed=0, ext="png"):
    """An ImageFolder of random-but-structured images (a bright blob whose position depends on the class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(n_classes):
        d = root / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx = (k + 1) * h / (n_classes + 1), rng.uniform(0.3, 0.7) * w
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (h / 6) ** 2))
            img = np.clip(255 * (0.7 * blob + 0.3 * rng.random((h, w))), 0, 255).astype(np.uint8)
            if mode == "RGB":
                arr = np.stack([img, img[::-1], img[:, ::-1]], axis=2)
                Image.fromarray(arr, "RGB").save(d / f"{i:03d}.{ext}")
            else:
                Image.fromarray(img, "L").convert(mode).save(d / f"{i:03d}.{ext}")
    return root
