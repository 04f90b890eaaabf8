"""Small ONNX graphs for the pruning tests, one per coupling kind, with named weights so that tests can zero
chosen channels (dead units)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR, OPSET = 8, 17


class B:
    """A small graph builder with named weights, so that tests can zero chosen channels."""

    def __init__(self, shape=(None, 3, 8, 8), seed=0, constants=False):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.constants = constants
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
        self.k = 0

    def t(self, base):
        self.k += 1
        return f"{base}{self.k}"

    def const(self, name, arr):
        arr = np.asarray(arr)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float32)
        if self.constants:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op, inputs, **attrs):
        out = self.t(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, name, cin, cout, k=3, group=1, pad=None, bias=True):
        w = self.const(f"{name}.w", self.rng.normal(0, 0.4, (cout, cin // group, k, k)))
        ins = [x, w] + ([self.const(f"{name}.b", self.rng.normal(0, 0.2, cout))] if bias else [])
        p = k // 2 if pad is None else pad
        out = f"{name}.out"
        self.nodes.append(
            helper.make_node("Conv", ins, [out], name=name, kernel_shape=[k, k], pads=[p] * 4, group=group)
        )
        return out

    def bn(self, x, name, c):
        ins = [x] + [
            self.const(f"{name}.{p}", v)
            for p, v in (
                ("scale", self.rng.uniform(0.5, 1.5, c)),
                ("bias", self.rng.normal(0, 0.2, c)),
                ("mean", self.rng.normal(0, 0.2, c)),
                ("var", self.rng.uniform(0.5, 1.5, c)),
            )
        ]
        return self.op("BatchNormalization", ins, epsilon=1e-5)

    def head(self, x, c, n=3):
        f = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
        return self.op(
            "Gemm", [f, self.const("fc.w", self.rng.normal(0, 0.5, (n, c))), self.const("fc.b", np.zeros(n))], transB=1
        )

    def model(self, out, rank=2, opset=OPSET, ir=IR):
        info = helper.make_tensor_value_info(out, TensorProto.FLOAT, [None] * rank)
        g = helper.make_graph(self.nodes, "g", [self.input], [info], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = ir
        onnx.checker.check_model(m, full_check=True)
        return m


def zero(model, names, channels, axis=0):
    """Set the given channels of the named constants (initializers or Constant nodes) to zero."""
    for t in model.graph.initializer:
        if t.name in names:
            a = numpy_helper.to_array(t).copy()
            idx = [slice(None)] * a.ndim
            idx[axis if a.ndim > 1 or axis == 0 else 0] = channels
            a[tuple(idx)] = 0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] in names:
            a = numpy_helper.to_array(n.attribute[0].t).copy()
            idx = [slice(None)] * a.ndim
            idx[axis if a.ndim > 1 else 0] = channels
            a[tuple(idx)] = 0
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(a, n.attribute[0].t.name))
    return model


def residual():
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 6)])
    y = b.bn(b.conv(a, "B", 6, 6), "bnB", 6)
    s = b.op("Relu", [b.op("Add", [y, a])])
    c = b.op("Relu", [b.conv(s, "C", 6, 4)])
    return b.model(b.head(c, 4))


def concat(dead=False):
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 4)])
    c = b.op("Relu", [b.conv("x", "Bc", 3, 5)])
    j = b.op("Concat", [a, c], axis=1)
    d = b.op("Relu", [b.conv(j, "C", 9, 4)])
    m = b.model(b.head(d, 4))
    if dead:
        zero(m, {"A.w", "A.b"}, [1])
        zero(m, {"Bc.w", "Bc.b"}, [3])
    return m


def depthwise(mult=1, dead=False):
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 6)])
    d = b.op("Relu", [b.bn(b.conv(a, "D", 6, 6 * mult, group=6, bias=False), "bnD", 6 * mult)])
    c = b.op("Relu", [b.conv(d, "C", 6 * mult, 4, k=1)])
    m = b.model(b.head(c, 4))
    if dead:
        zero(m, {"A.w", "A.b"}, [2])
        zero(m, {"bnD.scale", "bnD.bias"}, [2 * mult + k for k in range(mult)])
    return m


def grouped(dead=False):
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 8)])
    g = b.op("Relu", [b.conv(a, "G", 8, 6, group=2)])
    c = b.op("Relu", [b.conv(g, "C", 6, 4)])
    m = b.model(b.head(c, 4))
    if dead:
        zero(m, {"A.w", "A.b"}, [1, 5])
    return m


def flatten_gemm(dead=False, reshape=False):
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 4)])
    p = b.op("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2])
    if reshape:
        f = b.op("Reshape", [p, b.const("shape", np.asarray([0, 64]))])  # names the width: rewritten
    else:
        f = b.op("Flatten", [p], axis=1)
    w = b.const("fc.w", b.rng.normal(0, 0.3, (3, 64)))
    out = b.op("Gemm", [f, w, b.const("fc.b", np.zeros(3))], transB=1)
    m = b.model(out)
    if dead:
        zero(m, {"A.w", "A.b"}, [2])
    return m


def gap_matmul(dead=False):
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 5)])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [a])], axis=1)
    out = b.op("MatMul", [f, b.const("fc.w", b.rng.normal(0, 0.3, (5, 3)))])
    m = b.model(out)
    if dead:
        zero(m, {"A.w", "A.b"}, [0])
    return m


def affine(dead=False, constants=False):
    """conv → BN; conv → Mul/Add (a BN folded by tf2onnx); conv → bias Add of a Paddle Reshape'd Constant."""
    b = B(constants=constants)
    a = b.op("Relu", [b.bn(b.conv("x", "A", 3, 4, bias=False), "bnA", 4)])
    y = b.conv(a, "M", 4, 5, bias=False)
    y = b.op("Mul", [y, b.const("M.s", b.rng.uniform(0.5, 1.5, (1, 5, 1, 1)))])
    y = b.op("Relu", [b.op("Add", [y, b.const("M.t", b.rng.normal(0, 0.2, (1, 5, 1, 1)))])])
    z = b.conv(y, "P", 5, 4, bias=False)
    off = b.op("Reshape", [b.const("P.offset", b.rng.normal(0, 0.2, 4)), b.const("P.shape", np.asarray([1, 4, 1, 1]))])
    z = b.op("Relu", [b.op("Add", [z, off])])
    m = b.model(b.head(z, 4))
    if dead:
        zero(m, {"bnA.scale", "bnA.bias"}, [1])
        zero(m, {"M.t"}, [3], axis=1)
        zero(m, {"M.w"}, [3])
        zero(m, {"P.w", "P.offset"}, [2])
    return m


def tf2onnx_weights():
    """Weights stored HWIO and transposed to OIHW in the graph, as tf2onnx writes them."""
    b = B()
    w = b.const("A.hwio", b.rng.normal(0, 0.4, (3, 3, 3, 6)))
    wt = b.op("Transpose", [w], perm=[3, 2, 0, 1])
    b.nodes.append(helper.make_node("Conv", ["x", wt], ["A.out"], name="A", kernel_shape=[3, 3], pads=[1] * 4))
    a = b.op("Relu", ["A.out"])
    w2 = b.const("C.hwio", b.rng.normal(0, 0.4, (1, 1, 6, 4)))
    wt2 = b.op("Transpose", [w2], perm=[3, 2, 0, 1])
    b.nodes.append(helper.make_node("Conv", [a, wt2], ["C.out"], name="C", kernel_shape=[1, 1]))
    return b.model(b.head(b.op("Relu", ["C.out"]), 4))


def fold(pad):
    """A's tap (Relu, a branch point) feeds Sigmoid → conv B: a removed channel reaches B as 0.5."""
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 4)])
    s = b.conv(b.op("Sigmoid", [a]), "Bf", 4, 3, pad=pad)
    c = b.conv(a, "C", 4, 3, pad=pad)
    return b.model(b.head(b.op("Relu", [b.op("Add", [s, c])]), 3))


def dynamo_head(target=(-1, 4)):
    """As torch's dynamo exporter writes a classifier head: ReduceMean (axes as an input, keepdims) → Reshape with
    allowzero=1 → Gemm, and a value_info declaring every weight's shape."""
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 5)])
    c = b.op("Relu", [b.conv(a, "C", 5, 4)])
    r = b.op("ReduceMean", [c, b.const("axes", np.asarray([-1, -2]))], keepdims=1)
    f = b.op("Reshape", [r, b.const("target", np.asarray(target))], allowzero=1)
    out = b.op("Gemm", [f, b.const("fc.w", b.rng.normal(0, 0.5, (3, 4))), b.const("fc.b", np.zeros(3))], transB=1)
    m = b.model(out, opset=18, ir=10)
    m.graph.value_info.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in m.graph.initializer
    )
    onnx.checker.check_model(m, full_check=True)
    return m


def initializers_as_inputs():
    """An IR 3 model, as old exporters wrote them: every initializer is also listed among the graph inputs."""
    m = residual()
    m.ir_version = 3
    m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in m.graph.initializer)
    onnx.checker.check_model(m, full_check=True)
    return m


def se_block(dead=False):
    """A MobileNetV3 / PP-OCR block as the exporters write it: expand conv → HardSwish → Pad (tf2onnx pads before a
    stride-2 depthwise conv) → depthwise conv → Clip(0, 6) (ReLU6) → squeeze-and-excitation (GlobalAveragePool →
    conv → Relu → conv → HardSigmoid, then Mul with the block) → projection conv."""
    b = B()
    a = b.op("HardSwish", [b.conv("x", "A", 3, 6)])
    p = b.op("Pad", [a, b.const("pads", np.asarray([0, 0, 1, 1, 0, 0, 1, 1]))], mode="constant")
    d = b.conv(p, "D", 6, 6, group=6, pad=0)
    d = b.op("Clip", [d, b.const("lo", np.float32(0)), b.const("hi", np.float32(6))])
    s = b.op("Relu", [b.conv(b.op("GlobalAveragePool", [d]), "S1", 6, 3, k=1)])
    s = b.op("HardSigmoid", [b.conv(s, "S2", 3, 6, k=1)], alpha=1 / 6, beta=0.5)
    y = b.op("Mul", [d, s])
    c = b.op("Relu", [b.conv(y, "C", 6, 4, k=1)])
    m = b.model(b.head(c, 4))
    if dead:
        zero(m, {"A.w", "A.b"}, [4])
        zero(m, {"D.w", "D.b"}, [4])
    return m
