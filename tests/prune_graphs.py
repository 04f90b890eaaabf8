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


def _silu(b, x):
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


def _halves(b, x, c, form, opset):
    """The two channel halves of ``x`` (``c`` channels) as an exporter writes a chunk: Split with the sizes as an
    input (opset 13+), as the ``split`` attribute (opset < 13), with ``num_outputs`` (opset 18), without sizes
    (equal parts), or two Slices on axis 1 (``slice``), on axis -3 (``slice-neg``), with attributes (``slice-attr``,
    opset < 10) or with bounds computed from the shape (``torch``)."""
    h = c // 2
    if form == "torch":  # the TorchScript exporter's chunk with a dynamic batch: bounds computed from the shape
        ax = b.const(b.t("axes"), np.asarray([1]))
        width = b.op("Gather", [b.op("Shape", [x]), ax], axis=0)
        half = b.op("Div", [b.op("Add", [width, b.const(b.t("one"), np.asarray([1]))]), b.const(b.t("two"), [2])])
        end1 = b.op("Mul", [half, b.const(b.t("one"), np.asarray([1]))])
        end2 = b.op("Mul", [half, b.const(b.t("two"), np.asarray([2]))])
        lo = b.op("Slice", [x, b.const(b.t("zero"), np.asarray([0])), end1, ax])
        return lo, b.op("Slice", [x, end1, end2, ax])
    if form == "slice-attr":  # opset < 10: starts, ends and axes as attributes
        lo = b.op("Slice", [x], starts=[0], ends=[h], axes=[1])
        return lo, b.op("Slice", [x], starts=[h], ends=[2**31 - 1], axes=[1])
    if form.startswith("slice"):
        ax = b.const(b.t("axes"), np.asarray([1 if form == "slice" else -3]))
        lo = b.op("Slice", [x, b.const(b.t("starts"), np.asarray([0])), b.const(b.t("ends"), np.asarray([h])), ax])
        end = np.asarray([np.iinfo(np.int64).max])  # as torch writes x[:, h:]
        hi = b.op("Slice", [x, b.const(b.t("starts"), np.asarray([h])), b.const(b.t("ends"), end), ax])
        return lo, hi
    outs = [b.t("split"), b.t("split")]
    if form == "sizes" and opset >= 13:
        ins, attrs = [x, b.const(b.t("sizes"), np.asarray([h, h]))], {}
    elif form == "sizes":
        ins, attrs = [x], {"split": [h, h]}
    elif form == "num_outputs":
        ins, attrs = [x], {"num_outputs": 2}
    else:
        ins, attrs = [x], {}
    b.nodes.append(helper.make_node("Split", ins, outs, name=outs[0], axis=1, **attrs))
    return outs


def c2f(form="sizes", opset=OPSET, dead=False):
    """A YOLOv8 C2f block: cv1 → SiLU → split in two halves → a bottleneck (two convs and the shortcut Add) on the
    second half → Concat(first half, second half, bottleneck) → cv2."""
    b = B()
    y = _silu(b, b.conv("x", "cv1", 3, 8, k=1))
    a, h = _halves(b, y, 8, form, opset)
    m = _silu(b, b.conv(h, "m1", 4, 4))
    m = b.op("Add", [h, _silu(b, b.conv(m, "m2", 4, 4))])
    j = b.op("Concat", [a, h, m], axis=1)
    out = _silu(b, b.conv(j, "cv2", 12, 6, k=1))
    model = b.model(b.head(out, 6), opset=opset)
    if dead:  # a channel of each half, with the bottleneck's output channel it is added to
        zero(model, {"cv1.w", "cv1.b"}, [1, 6])
        zero(model, {"m2.w", "m2.b"}, [2])
    return model


def _shuffle(b, x, c, groups=2, computed=False):
    """torchvision's channel_shuffle: Reshape (N, g, C/g, H, W) → Transpose(0, 2, 1, 3, 4) → Reshape (N, C, H, W);
    ``computed``: the targets as the TorchScript exporter writes them with a dynamic batch (Shape → Gather → Div →
    Cast → Unsqueeze → Concat)."""
    if computed:
        shape = b.op("Shape", [x])
        n, w, hh, ww = (b.op("Gather", [shape, b.const(b.t("i"), np.asarray(k))], axis=0) for k in range(4))
        cg = b.op("Cast", [b.op("Div", [w, b.const(b.t("g"), np.asarray(groups))])], to=TensorProto.INT64)
        dims = [b.op("Unsqueeze", [d, b.const(b.t("ax"), np.asarray([0]))]) for d in (n, cg, hh, ww)]
        dims.insert(1, b.const(b.t("g"), np.asarray([groups])))
        first = b.op("Concat", dims, axis=0)
        back = [dims[0], b.op("Unsqueeze", [w, b.const(b.t("ax"), np.asarray([0]))]), dims[3], dims[4]]
    else:
        first = b.const(b.t("shape"), np.asarray([0, groups, c // groups, 4, 4]))
    r = b.op("Reshape", [x, first])
    t = b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", [t, b.op("Concat", back, axis=0) if computed else b.const(b.t("shape"), [0, c, 4, 4])])


def _cbr(b, x, name, cin, cout, k=1, group=1, stride=1, relu=True):
    y = b.conv(x, name, cin, cout, k=k, group=group, bias=False)
    if stride != 1:
        node = b.nodes[-1]
        node.attribute.append(helper.make_attribute("strides", [stride, stride]))
    y = b.bn(y, f"bn{name}", cout)
    return b.op("Relu", [y]) if relu else y


def shufflenet_stage(form="sizes", opset=OPSET, dead=False):
    """A ShuffleNetV2 stage as torchvision writes it (``form="torch"``: the chunk's Slice bounds and the shuffle's
    Reshape targets computed from the shape, as the TorchScript exporter writes them): a stride-2 unit (branch1: depthwise 3×3 s2 → BN → 1×1 → BN →
    ReLU; branch2: 1×1 → BN → ReLU → depthwise 3×3 s2 → BN → 1×1 → BN → ReLU; Concat; channel shuffle), then a
    stride-1 unit (the channels split in halves, branch2 on the second, Concat with the first, channel shuffle),
    then a conv."""
    b = B()
    x = b.op("Relu", [b.conv("x", "A", 3, 8)])
    b1 = _cbr(b, _cbr(b, x, "b1dw", 8, 8, k=3, group=8, stride=2, relu=False), "b1pw", 8, 4)
    b2 = _cbr(b, x, "b2pw1", 8, 4)
    b2 = _cbr(b, _cbr(b, b2, "b2dw", 4, 4, k=3, group=4, stride=2, relu=False), "b2pw2", 4, 4)
    y = _shuffle(b, b.op("Concat", [b1, b2], axis=1), 8, computed=form == "torch")
    x1, x2 = _halves(b, y, 8, form, opset)
    u = _cbr(b, x2, "u2pw1", 4, 4)
    u = _cbr(b, _cbr(b, u, "u2dw", 4, 4, k=3, group=4, relu=False), "u2pw2", 4, 4)
    y = _shuffle(b, b.op("Concat", [x1, u], axis=1), 8, computed=form == "torch")
    c = b.op("Relu", [b.conv(y, "C", 8, 6, k=1)])
    m = b.model(b.head(c, 6), opset=opset)
    if dead:  # stride-2 unit: position 1 of both branches (one column of the shuffle)
        zero(m, {"bnb1pw.scale", "bnb1pw.bias"}, [1])
        zero(m, {"bnb2pw2.scale", "bnb2pw2.bias"}, [1])
        # that column reaches the stride-1 unit's first half at positions 2, 3: coupled with its branch's 2, 3
        zero(m, {"bnu2pw2.scale", "bnu2pw2.bias"}, [2, 3])
    return m


def gather_channels(opset=OPSET, dead=False):
    """conv → Gather(axis 1) with constant indices that permute, drop and repeat channels → conv."""
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 6)])
    g = b.op("Gather", [a, b.const("idx", np.asarray([5, 0, -3, 3, 1]))], axis=1)
    c = b.op("Relu", [b.conv(g, "C", 5, 4)])
    m = b.model(b.head(c, 4), opset=opset)
    if dead:
        zero(m, {"A.w", "A.b"}, [3])
    return m
