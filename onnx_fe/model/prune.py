"""Structural pruning on the ONNX graph: which channels depend on which, and the graph without some of them.

No I/O here: :func:`analyze` reads a ``ModelProto`` and returns a :class:`PruneGraph`; :meth:`PruneGraph.apply`
returns a pruned copy. The files, the choice of channels and the checks live in ``experiments/prune.py``.

**Channel identities.** Every conv output channel gets an id. Each tensor that carries channels gets an array of
ids, one per position along its channel axis (the axis is tracked, so Transpose, Squeeze and Unsqueeze move it):

* element-wise ops (activations, bias, BatchNormalization, InstanceNormalization, per-channel Mul/Add/Sub/Div
  constants, PRelu), pooling, Resize (channel scale 1), Pad (no channel padding), Dropout, Identity, Cast, reductions
  and Softmax over other axes, Slice/Split on other axes keep the ids;
* a depthwise conv (``group`` = input channels, any multiplier) gives its output channel ``j·m + k`` the id of its
  input channel ``j``: removing one removes the other;
* a grouped conv couples input position ``p`` of every group, and gives output position ``q`` of every group the
  same new id, so that every group keeps the same number of channels;
* Add/Sub/Mul/Div/Max/Min/Sum/Mean of two tensors that both carry the channel axis *couple* them: position ``i`` of
  one and position ``i`` of the other are one channel (union-find), e.g. a residual Add or the channel attention
  Mul of a squeeze-and-excitation block; a tensor of one channel (broadcast) couples nothing;
* Concat on the channel axis lays the ids of its inputs end to end (offsets); on another axis it couples them;
* Split, Slice (constant bounds, step 1) and Gather (a constant index vector) on the channel axis give each output
  the ids of the positions it takes: a channel goes from the one part that holds it (YOLOv8's C2f halves), the
  producer loses the union of what its parts lose, and the sizes / bounds / indices are rewritten (new constants);
  no part is left without a channel;
* a channel shuffle, Reshape (N, C, H, W) → (N, g, C/g, H, W), Transpose of g and C/g, Reshape back (ShuffleNet),
  couples position ``p`` of every group (as a grouped conv does), so that every group keeps the same width and the
  same positions; the tensor in between carries one id per position (the g axis is tracked beside it) and the two
  Reshape targets are rewritten for the new width;
* Flatten, or a Reshape that flattens (N, C, H, W) to (N, C·H·W), repeats each id H·W times in the order of the
  flat features, which then select rows of a Gemm / MatMul weight (after GlobalAveragePool: one row per channel).

A *class* is a set of ids joined by coupling: the channels that must go together. A *group* is the set of conv
layers whose channels share classes (a residual stage, an expand conv and its depthwise conv, …). A class is
*unprunable*, with a reason, when it meets anything the analysis cannot follow: the model's input channels, a graph
output, a Reshape that mixes channels (other than the channel shuffle), Softmax or a reduction over the channel
axis, a Slice with a step on the channels or computed bounds, a Gather or Split with computed indices or sizes, the
grouped tensor of a shuffle read by anything but element-wise ops, a Transpose and the Reshape back, a tensor of the
same width that does not come from a conv, an op it does not know.

**Removal** (:meth:`PruneGraph.apply`) slices every constant that indexes a removed channel: the conv's weight rows
and bias, the next convs' weight columns (per group; a depthwise conv's ``group`` shrinks with its channels), BN
and per-channel constants, the rows of a Gemm/MatMul weight, and rewrites the shape constant of a flattening
Reshape, the sizes of a Split, the bounds of a Slice, the indices of a Gather and the targets of a shuffle's Reshapes
on the channels (always as new constants). Constants are read wherever they live (initializers, Constant nodes, behind Identity/Cast/Transpose/
Reshape/Squeeze/Unsqueeze/Flatten as tf2onnx and Paddle write them); a constant used by nothing else is edited in
place, otherwise the node gets its own new initializer. Nodes and constants left unused are dropped.

**Exactness.** Removing channels equals zeroing them at the tap of their layer (``masks.add_unit_masks``) as long
as the zero stays zero until a consumer reads it. Where an op in between turns it into a non-zero constant (a
Sigmoid, an added constant, a BatchNormalization after the tap), that constant is folded into the consumer: into
a Conv's bias (the constant times the sum of the kernel; exact only where the kernel does not overlap the zero
padding, so a padded consumer differs at its borders and is reported), a Gemm's bias (exact), or a new Add after
a MatMul (exact). A value that is not a constant (it depends on the input) cannot be folded and is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxFeError
from .graph import ACTIVATIONS, ConvUnit, find_units
from .randomize import _Graph

# Ops whose output channel k depends only on input channel k (the first input carries the channels).
UNARY = (ACTIVATIONS - {"PRelu"}) | {  # PRelu has a slope input: handled on its own
    "Identity",
    "Dropout",
    "Cast",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Erf",
    "Sin",
    "Cos",
    "IsNaN",
    "IsInf",
}
SPATIAL = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"}
NORM_INPUTS = {"BatchNormalization": 5, "InstanceNormalization": 3}
REDUCE = {
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}
SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _label(node) -> str:
    return f"{node.op_type} {node.name or node.output[0]!r}"


@dataclass
class Lab:
    """The channel ids of a tensor along its channel axis."""

    ids: np.ndarray  # int64, one per position
    axis: int
    rank: int
    # a channel shuffle's (N, g, C/g, …) tensor: the axis of the g groups (``axis`` is the C/g one, whose ids stand
    # for their column: position p of every group is one class) and g; None for an ordinary tensor
    gaxis: int | None = None
    groups: int = 1


@dataclass
class Edit:
    kind: str  # conv, const, gemm, matmul, reshape, resize, convtranspose
    node: onnx.NodeProto
    k: int  # the node's position in the graph
    tensor: str  # the labelled tensor whose keep mask drives the edit
    slot: int = 0  # constant input slot
    axis: int = 0  # axis of the constant to slice
    extra: dict = field(default_factory=dict)


@dataclass
class Group:
    """Conv layers whose channels are coupled."""

    id: int
    layers: list[int]  # canonical layer indices
    classes: list[int]  # class roots, in the order of the first layer's units
    how: list[str]  # couplings met: "residual Add", "Concat", "depthwise", …
    reason: str | None = None  # why it cannot be pruned

    @property
    def prunable(self) -> bool:
        return self.reason is None

    def describe(self) -> str:
        how = f" ({', '.join(self.how)})" if self.how else ""
        return f"group {self.id}: layer{'s' if len(self.layers) > 1 else ''} {', '.join(map(str, self.layers))}{how}"


@dataclass
class ApplyReport:
    removed: dict[int, list[int]]  # layer index -> removed units
    folds: list[str] = field(default_factory=list)  # "constant of removed channels folded into …"
    inexact: list[str] = field(default_factory=list)  # where removal differs from masking, and why


class _UF:
    def __init__(self):
        self.parent: list[int] = []
        self.poison: dict[int, str] = {}
        self.origin: list[tuple] = []

    def new(self, n: int, origin: tuple, poison: str | None = None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.origin.extend([origin] * n)
        if poison is not None:
            for i in range(start, start + n):
                self.poison[i] = poison
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.poison and ra not in self.poison:
            self.poison[ra] = self.poison[rb]

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(i)) for i in ids), dtype=np.int64, count=len(ids))

    def spoil(self, ids, reason: str) -> None:
        for i in ids:
            r = self.find(int(i))
            self.poison.setdefault(r, reason)

    def reason(self, root: int) -> str | None:
        return self.poison.get(self.find(root))


class Floors:
    """Sets of classes of which at least one must stay; :meth:`pick` takes classes in order while each set keeps
    one (a prefix of what it takes is always a valid removal)."""

    def __init__(self, sets):
        self.left: list[int] = []
        self.member: dict[int, list[int]] = {}
        self.gone: set[int] = set()
        for k, roots in enumerate(sets):
            distinct = np.unique(np.asarray(roots, dtype=np.int64)).tolist()
            self.left.append(len(distinct))
            for r in distinct:
                self.member.setdefault(int(r), []).append(k)

    def take(self, root: int) -> bool:
        root = int(root)
        if root in self.gone:
            return True
        sets = self.member.get(root, [])
        if any(self.left[k] <= 1 for k in sets):
            return False
        for k in sets:
            self.left[k] -= 1
        self.gone.add(root)
        return True

    def pick(self, order, n: int) -> list[int]:
        out = []
        for r in order:
            if len(out) >= n:
                break
            if self.take(r):
                out.append(int(r))
        return out


def infer_shapes(model: onnx.ModelProto, input_hw=None) -> dict[str, list]:
    """Every tensor's dims (int, or None when unknown) as onnx shape inference finds them (with data propagation,
    so that computed Reshape shapes are known); ``input_hw`` fixes a dynamic image size for the inference only."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value <= 0:  # Paddle writes -1 for a dynamic dim
                d.Clear()
                d.dim_param = f"onnx_fe_dim{k}"
        if input_hw is not None and len(dims) == 4:
            hw = (2, 3) if dims[1].HasField("dim_value") and dims[1].dim_value in (1, 3, 4) else (1, 2)
            for k, v in zip(hw, input_hw):
                dims[k].Clear()
                dims[k].dim_value = int(v)
    inferred = _infer(m)
    for _ in range(256):  # each round settles the shapes that the folded values of the previous one made known
        if not _fold_shape_arithmetic(m.graph, _dims_of(inferred.graph)):
            break
        inferred = _infer(m)
    shapes = _dims_of(inferred.graph)
    g = inferred.graph
    for t in g.initializer:
        shapes[t.name] = [int(d) for d in t.dims]
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = [int(d) for d in a.t.dims]
    return shapes


def _infer(m: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return m


def _dims_of(g) -> dict[str, list]:
    shapes: dict[str, list] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim
            ]
    return shapes


_SHAPE_OPS = {"Shape", "Constant", "Identity", "Cast", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice"}
_SHAPE_OPS |= {"Add", "Sub", "Mul", "Div"}


def _fold_shape_arithmetic(graph, shapes: dict) -> bool:
    """Compute the small int tensors that come from known dims and constants (torch writes a chunk's Slice bounds
    and a channel shuffle's Reshape targets as Shape → Gather → Div → …, which onnx's data propagation does not
    follow through Div), and let the nodes that read them read constants instead: in the copy made for shape
    inference only. True when a node was changed."""
    vals: dict[str, tuple] = {}  # name -> (object array, possibly with None for unknown dims; numpy dtype)
    for t in graph.initializer:
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) and int(np.prod(t.dims or [1])) <= 64:
            vals[t.name] = (numpy_helper.to_array(t).astype(object), numpy_helper.to_array(t).dtype)
    made: set[str] = set()  # values that read a Shape (the others are constants already)
    for n in graph.node:
        if n.op_type not in _SHAPE_OPS:
            continue
        try:
            v = _shape_op(n, vals, shapes)
            v = None if v is None else (np.asarray(v[0], dtype=object), v[1])
        except Exception:
            v = None
        if v is not None and v[0].size <= 64:
            vals[n.output[0]] = v
            if n.op_type == "Shape" or any(i in made for i in n.input):
                made.add(n.output[0])
    known = {name for name in made if all(e is not None for e in vals[name][0].reshape(-1))}
    changed, k = False, 0
    for n in graph.node:
        if n.output and n.output[0] in known:  # its readers get the constant
            continue
        for slot, name in enumerate(n.input):
            if name in known:
                a, dt = vals[name]
                k += 1
                new = f"onnx_fe_folded_{k}_{name}"
                graph.initializer.append(numpy_helper.from_array(np.asarray(a.tolist(), dtype=dt), new))
                n.input[slot] = new
                changed = True
    return changed


def _shape_op(n, vals: dict, shapes: dict):
    op = n.op_type
    if op == "Constant":
        a = next((a for a in n.attribute if a.name == "value"), None)
        if a is None or a.t.data_type not in (TensorProto.INT64, TensorProto.INT32):
            return None
        v = numpy_helper.to_array(a.t)
        return v.astype(object), v.dtype
    if op == "Shape":
        dims = shapes.get(n.input[0])
        if dims is None:
            return None
        start, end = _attr(n, "start", 0), _attr(n, "end", None)
        return np.asarray(dims[start:end], dtype=object), np.dtype(np.int64)
    if any(i and i not in vals for i in n.input):
        return None
    ins = [vals[i] if i else None for i in n.input]
    x, dt = ins[0]
    if op == "Identity":
        return x, dt
    if op == "Cast":
        to = helper.tensor_dtype_to_np_dtype(int(_attr(n, "to")))
        if to.kind not in "iu":
            return None
        return x, to
    if op == "Gather":
        return np.take(x, ins[1][0].astype(np.int64), axis=int(_attr(n, "axis", 0))), dt
    if op == "Concat":
        return np.concatenate([v for v, _ in ins], axis=int(_attr(n, "axis", 0))), dt
    if op in ("Unsqueeze", "Squeeze"):
        axes = _attr(n, "axes")
        axes = [int(a) for a in (ins[1][0] if axes is None and len(ins) > 1 else axes or [])]
        if op == "Unsqueeze":
            return np.expand_dims(x, [a % (x.ndim + len(axes)) for a in axes]), dt
        return (np.squeeze(x, tuple(a % x.ndim for a in axes)) if axes else np.squeeze(x)), dt
    if op == "Slice":
        starts, ends = (list(v[0].reshape(-1)) for v in ins[1:3])
        axes = list(ins[3][0].reshape(-1)) if len(ins) > 3 and ins[3] else list(range(len(starts)))
        steps = list(ins[4][0].reshape(-1)) if len(ins) > 4 and ins[4] else [1] * len(starts)
        idx = [slice(None)] * x.ndim
        for a, b, e, st in zip(axes, starts, ends, steps):
            idx[int(a)] = slice(int(b), int(e), int(st))
        return x[tuple(idx)], dt
    a, b = x, ins[1][0]
    if op == "Div":
        if any(e is None or e == 0 for e in b.reshape(-1)):
            return None
        f = np.vectorize(lambda p, q: None if p is None else abs(p) // abs(q) * (1 if (p >= 0) == (q > 0) else -1))
        return f(a, b).astype(object), dt
    f = {"Add": lambda p, q: p + q, "Sub": lambda p, q: p - q, "Mul": lambda p, q: p * q}[op]
    g = np.vectorize(lambda p, q: None if p is None or q is None else f(p, q), otypes=[object])
    return g(a, b), dt


class PruneGraph:
    """The channel dependencies of one model (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, units: list[ConvUnit] | None = None, input_hw=None):
        self.model = model
        self.g = _Graph(model.graph)
        self.units = units if units is not None else find_units(model)
        self.shapes = infer_shapes(model, input_hw)
        self.uf = _UF()
        self.labels: dict[str, Lab] = {}
        self.edits: list[Edit] = []
        self.conv_out: dict[int, str] = {}  # layer index -> conv output tensor
        self.conv_kind: dict[str, str] = {}  # conv node output -> normal / depthwise / grouped
        self.couplings: dict[int, set] = {}  # id root -> kinds of coupling met (set later per root)
        self.picks: dict[str, tuple] = {}  # Split/Slice/Gather output -> (input, input positions, node label)
        self.regroup: dict[str, tuple] = {}  # channel shuffle Reshape output -> ("split"|"tile"|"repeat", g)
        self._coupled: list[tuple[np.ndarray, str]] = []
        self._walk()
        self._finish()

    # ------------------------------------------------------------------ helpers
    def const(self, name: str):
        """(value as seen, ok) of a constant input, or None when it is computed at run time."""
        if not name:
            return None
        tr = self.g.trace(name)
        if not isinstance(tr, tuple):
            return None
        try:
            return self.g.value(name)
        except Exception:
            return None

    def is_const(self, name: str) -> bool:
        return bool(name) and isinstance(self.g.trace(name), tuple)

    def const_shape(self, name: str):
        tr = self.g.trace(name)
        try:
            return list(self.g.seen_shape(*tr))
        except Exception:
            return None

    def rank(self, name: str):
        s = self.shapes.get(name)
        if s is not None:
            return len(s)
        lab = self.labels.get(name)
        return lab.rank if lab is not None else None

    def spoil(self, lab: Lab | None, reason: str) -> None:
        if lab is not None:
            self.uf.spoil(lab.ids, reason)

    def fresh_poisoned(self, n: int, reason: str, origin=("opaque",)) -> np.ndarray:
        return self.uf.new(n, origin, poison=reason)

    def couple(self, a: np.ndarray, b: np.ndarray, how: str) -> None:
        for x, y in zip(a, b):
            self.uf.union(int(x), int(y))
        self._coupled.append((a, how))

    # ------------------------------------------------------------------ the walk
    def _walk(self) -> None:
        g = self.model.graph
        conv_at = [k for k, n in enumerate(g.node) if n.op_type == "Conv"]
        self._layer_of = {}
        for u in self.units:
            if u.file_order is not None and u.file_order < len(conv_at):
                self._layer_of[conv_at[u.file_order]] = u.index
        for k, node in enumerate(g.node):
            self._k = k
            try:
                self._visit(node)
            except Exception as e:  # anything unexpected spoils what the node reads, never the run
                reason = f"{_label(node)} could not be analysed ({type(e).__name__}: {e})"
                for i in node.input:
                    self.spoil(self.labels.get(i), reason)
                for o in node.output:
                    self.labels.pop(o, None)
        for o in g.output:
            lab = self.labels.get(o.name)
            if lab is not None:
                self.spoil(lab, f"tensor {o.name!r} is a graph output (its channels are part of the model's interface)")
        for sub in _subgraph_reads(g):
            self.spoil(self.labels.get(sub), f"tensor {sub!r} is read inside an If/Loop/Scan subgraph")

    def _visit(self, node) -> None:
        op = node.op_type
        ins = list(node.input)
        labs = [self.labels.get(i) if i else None for i in ins]
        if any(lab is not None and lab.gaxis is not None for lab in labs) and not (
            op in UNARY or op in ("Transpose", "Reshape", "Shape", "Size")
        ):
            return self._spoil_all(
                node,
                labs,
                f"read by {_label(node)} while its channels are split into groups by a Reshape (only a channel "
                "shuffle, element-wise ops, Transpose and the Reshape back, is followed)",
            )
        if op == "Conv":
            return self._conv(node, labs[0])
        if op == "ConvTranspose":
            return self._conv_transpose(node, labs[0])
        if not any(lab is not None for lab in labs):
            return
        x = labs[0]
        out = node.output[0]
        why = f"read by {_label(node)}"
        if op in UNARY or op in SPATIAL or op == "PRelu":
            if op in SPATIAL and (x is None or x.axis != 1 or x.rank < 3):
                return self._spoil_all(node, labs, f"{why}, which pools over the channel axis")
            if any(lab is not None for lab in labs[1:]):
                return self._spoil_all(node, labs, f"{why} as a parameter")
            if op == "PRelu" and len(ins) > 1 and not self._channel_const(node, 1, x):
                return
            if op == "Clip" and any(i and not self.is_const(i) for i in ins[1:]):
                return self._spoil_all(node, labs, f"{why} with computed bounds")
            self.labels[out] = x
            for extra in node.output[1:]:
                if extra and op == "Dropout":
                    self.labels[extra] = x
                elif extra:
                    self._spoil_if_used(extra, x, f"{why} (its output {extra!r})")
            return
        if op in NORM_INPUTS:
            if x is None or x.axis != 1 or any(lab is not None for lab in labs[1:]):
                return self._spoil_all(node, labs, f"{why} on another axis than its channels")
            for slot in range(1, min(len(ins), NORM_INPUTS[op])):
                if not self._channel_const(node, slot, x, vector=True):
                    return
            self.labels[out] = x
            for extra in node.output[1:]:
                if extra:
                    self._spoil_if_used(extra, x, f"{why} (training outputs)")
            return
        if op in BINARY:
            return self._binary(node, labs)
        if op == "Concat":
            return self._concat(node, labs)
        if op == "Transpose":
            perm = list(_attr(node, "perm") or list(range(x.rank))[::-1])
            gaxis = None if x.gaxis is None else perm.index(x.gaxis)
            self.labels[out] = Lab(x.ids, perm.index(x.axis), x.rank, gaxis, x.groups)
            return
        if op in ("Squeeze", "Unsqueeze"):
            return self._squeeze(node, x)
        if op == "Flatten":
            return self._flatten(node, x, int(_attr(node, "axis", 1)))
        if op == "Reshape":
            return self._reshape(node, labs)
        if op in ("Gemm", "MatMul"):
            return self._dense(node, labs)
        if op == "Resize" or op == "Upsample":
            return self._resize(node, labs)
        if op == "Pad":
            return self._pad(node, labs)
        if op in REDUCE:
            return self._reduce(node, x, labs)
        if op in SOFTMAX:
            axis = _attr(node, "axis", -1 if self._opset() >= 13 else 1)
            axis = axis % x.rank
            mixes = axis == x.axis if self._opset() >= 13 else x.axis >= axis
            if mixes:
                return self._spoil_all(node, labs, f"{why}, which normalises over the channel axis")
            self.labels[out] = x
            return
        if op in ("Slice", "Split"):
            return self._slice(node, x, labs)
        if op == "Gather":
            return self._gather(node, labs)
        if op in ("Shape", "Size"):
            return
        return self._spoil_all(node, labs, f"{why} (an op the pruner does not follow)")

    def _opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)

    def _spoil_all(self, node, labs, reason: str) -> None:
        for lab in labs:
            self.spoil(lab, reason)
        for o in node.output:
            self.labels.pop(o, None)

    def _spoil_if_used(self, name: str, lab: Lab, reason: str) -> None:
        if self.g.consumers.get(name) or name in self.g.outputs:
            self.spoil(lab, reason)

    def _channel_const(self, node, slot: int, lab: Lab, vector: bool = False) -> bool:
        """Record a slice of the constant at ``slot`` along the channel axis (when it has one); False (and the
        channels spoiled) when the input is computed at run time or its channel dim does not fit."""
        name = node.input[slot]
        if not name:
            return True
        if not self.is_const(name):
            self.spoil(lab, f"{_label(node)} reads a per-channel input computed at run time")
            return False
        shape = self.const_shape(name)
        if shape is None:
            self.spoil(lab, f"{_label(node)}: cannot tell the shape of its constant {name!r}")
            return False
        c = len(lab.ids)
        if vector:
            axis = 0 if len(shape) == 1 else None
        else:
            axis = lab.axis - (lab.rank - len(shape))
            if len(shape) > lab.rank:
                axis = None
        if axis is None:
            self.spoil(lab, f"{_label(node)}: its constant {name!r} of shape {shape} does not broadcast per channel")
            return False
        if axis < 0 or shape[axis] == 1:
            return True
        if shape[axis] != c:
            self.spoil(lab, f"{_label(node)}: its constant {name!r} has {shape[axis]} entries for {c} channels")
            return False
        self.edits.append(Edit("const", node, self._k, node.output[0], slot=slot, axis=axis))
        return True

    def _conv(self, node, x: Lab | None) -> None:
        out = node.output[0]
        layer = self._layer_of.get(self._k)
        w = node.input[1] if len(node.input) > 1 else ""
        wshape = self.const_shape(w) if self.is_const(w) else None
        g = int(_attr(node, "group", 1))
        reason = None
        if wshape is None or len(wshape) < 3:
            reason = f"{_label(node)} has a weight computed at run time"
        if len(node.input) > 2 and node.input[2] and not self.is_const(node.input[2]):
            reason = f"{_label(node)} has a bias computed at run time"
        xshape = self.shapes.get(node.input[0])
        if reason is not None:
            self.spoil(x, reason)
            cout = self.shapes.get(out, [None, None])[1] if self.shapes.get(out) else None
            if cout:
                self.labels[out] = Lab(self.fresh_poisoned(cout, reason), 1, len(self.shapes[out]))
            return
        cout, cin = int(wshape[0]), int(wshape[1]) * g
        rank = len(wshape)
        if x is None:
            src = node.input[0]
            why = (
                "the model's input channels"
                if src in self.g.graph_inputs
                else f"channels of {src!r}, which does not come from a conv"
            )
            x = Lab(self.fresh_poisoned(cin, f"{_label(node)} reads {why}", ("input", src)), 1, rank)
        elif x.axis != 1 or len(x.ids) != cin:
            self.spoil(x, f"{_label(node)} reads {len(x.ids)} channels on axis {x.axis}; it expects {cin} on axis 1")
            x = Lab(self.fresh_poisoned(cin, "inconsistent channels"), 1, rank)
        del xshape
        origin_layer = layer if layer is not None else -1
        if g == 1:
            ids = self.uf.new(cout, ("conv", origin_layer))
            kind = "normal"
        elif g == cin and cout % cin == 0:
            ids = np.repeat(x.ids, cout // cin)
            kind = "depthwise"
            self._coupled.append((ids, "depthwise"))
        elif cin % g == 0 and cout % g == 0:
            per_in, per_out = cin // g, cout // g
            for p in range(per_in):
                col = x.ids[p::per_in]
                self.couple(col[:1].repeat(len(col)), col, "grouped conv")
            fresh = self.uf.new(per_out, ("conv", origin_layer))
            ids = np.tile(fresh, g)
            kind = "grouped"
            self._coupled.append((ids, "grouped conv"))
        else:
            self.spoil(x, f"{_label(node)} has {g} groups for {cin} input channels")
            ids = self.fresh_poisoned(cout, f"{_label(node)} has groups that do not divide its channels")
            kind = "normal"
        self.labels[out] = Lab(ids, 1, rank)
        self.conv_kind[out] = kind
        if layer is not None:
            self.conv_out[layer] = out
        self.edits.append(Edit("conv", node, self._k, out, extra={"input": node.input[0], "kind": kind, "group": g}))

    def _conv_transpose(self, node, x: Lab | None) -> None:
        reason = f"output of {_label(node)} (ConvTranspose channels are not pruned)"
        w = node.input[1] if len(node.input) > 1 else ""
        wshape = self.const_shape(w) if self.is_const(w) else None
        if x is not None:
            if wshape is None or int(_attr(node, "group", 1)) != 1 or x.axis != 1 or wshape[0] != len(x.ids):
                self.spoil(x, f"read by {_label(node)} (only a constant, ungrouped ConvTranspose is followed)")
            else:
                self.edits.append(Edit("convtranspose", node, self._k, node.input[0]))
        shape = self.shapes.get(node.output[0])
        if shape and len(shape) > 1 and shape[1]:
            self.labels[node.output[0]] = Lab(self.fresh_poisoned(shape[1], reason), 1, len(shape))

    def _binary(self, node, labs) -> None:
        out = node.output[0]
        r = self.rank(out) or max(lab.rank for lab in labs if lab is not None)
        full = [lab for lab in labs if lab is not None and len(lab.ids) > 1]
        if not full:
            full = [lab for lab in labs if lab is not None]
        first = full[0]
        a = first.axis + (r - first.rank)
        c = len(first.ids)
        for lab in full[1:]:
            if lab.axis + (r - lab.rank) != a or len(lab.ids) != c:
                return self._spoil_all(node, labs, f"{_label(node)} combines channel axes that do not line up")
        for lab in full[1:]:
            self.couple(first.ids, lab.ids, f"{node.op_type}")
        for slot, (name, lab) in enumerate(zip(node.input, labs)):
            if lab is not None or not name:
                continue
            if self.is_const(name):
                shape = self.const_shape(name)
                if shape is None:
                    return self._spoil_all(node, labs, f"{_label(node)}: cannot tell the shape of {name!r}")
                ca = a - (r - len(shape))
                if ca < 0 or shape[ca] == 1:
                    continue
                if shape[ca] != c:
                    return self._spoil_all(node, labs, f"{_label(node)}: constant {name!r} does not fit the channels")
                self.edits.append(Edit("const", node, self._k, out, slot=slot, axis=ca))
                continue
            shape = self.shapes.get(name)
            if shape is None or len(shape) < r - a:
                return self._spoil_all(
                    node, labs, f"{_label(node)} combines the channels with {name!r} of unknown shape"
                )
            ca = a - (r - len(shape))
            if ca < 0 or shape[ca] == 1:
                continue
            src = self.g.producers.get(name)
            return self._spoil_all(
                node,
                labs,
                f"{_label(node)} couples the channels with {name!r}"
                + (f" from {_label(src)}" if src is not None else "")
                + ", which does not come from a conv",
            )
        self.labels[out] = Lab(first.ids, a, r)

    def _concat(self, node, labs) -> None:
        out = node.output[0]
        r = self.rank(out) or max(lab.rank for lab in labs if lab is not None)
        axis = int(_attr(node, "axis", 1)) % r
        known = [lab for lab in labs if lab is not None]
        chan_axes = {lab.axis + (r - lab.rank) for lab in known}
        if len(chan_axes) != 1:
            return self._spoil_all(node, labs, f"{_label(node)} joins tensors whose channel axes differ")
        a = chan_axes.pop()
        if a != axis:  # concatenation along another axis: the inputs are the same channels
            lab0 = known[0]
            for name, lab in zip(node.input, labs):
                if lab is None:
                    return self._spoil_all(node, labs, f"{_label(node)} joins the channels with {name!r}")
                if len(lab.ids) != len(lab0.ids):
                    return self._spoil_all(node, labs, f"{_label(node)} joins different channel counts")
                self.couple(lab0.ids, lab.ids, "Concat")
            self.labels[out] = Lab(lab0.ids, a, r)
            return
        parts = []
        for name, lab in zip(node.input, labs):
            if lab is not None:
                parts.append(lab.ids)
                continue
            shape = self.const_shape(name) if self.is_const(name) else self.shapes.get(name)
            if not shape or len(shape) != r or shape[axis] is None:
                return self._spoil_all(node, labs, f"{_label(node)} joins {name!r} of unknown width")
            parts.append(self.fresh_poisoned(shape[axis], f"channels from {name!r} joined by {_label(node)}"))
        ids = np.concatenate(parts)
        self._coupled.append((ids, "Concat"))
        self.labels[out] = Lab(ids, a, r)

    def _squeeze(self, node, x: Lab) -> None:
        if x is None:
            return
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            v = self.const(node.input[1])
            if v is None:
                return self._spoil_all(node, [x], f"{_label(node)} with computed axes")
            axes = [int(a) for a in np.asarray(v).reshape(-1)]
        out_rank = self.rank(node.output[0])
        if node.op_type == "Squeeze":
            if axes is None:
                shape = self.shapes.get(node.input[0])
                if shape is None or None in shape:
                    return self._spoil_all(node, [x], f"{_label(node)} without axes on a tensor of unknown shape")
                axes = [i for i, d in enumerate(shape) if d == 1]
            axes = sorted(a % x.rank for a in axes)
            if x.axis in axes:
                return self._spoil_all(node, [x], f"{_label(node)} removes the channel axis")
            self.labels[node.output[0]] = Lab(x.ids, x.axis - sum(a < x.axis for a in axes), x.rank - len(axes))
        else:
            n = out_rank or x.rank + len(axes)
            axes = sorted(a % n for a in axes)
            pos = [i for i in range(n) if i not in axes]
            self.labels[node.output[0]] = Lab(x.ids, pos[x.axis], n)

    def _flat_ids(self, x: Lab, trailing: list, per_channel: np.ndarray | None = None) -> np.ndarray | None:
        """Ids (or ``per_channel`` values) of the flat features when the dims after the batch (``trailing``, the
        channel axis among them at ``x.axis - 1``) are flattened; None when a dim is unknown."""
        if any(d is None for i, d in enumerate(trailing) if i != x.axis - 1):
            return None
        dims = [int(d) if i != x.axis - 1 else len(x.ids) for i, d in enumerate(trailing)]
        shape = [1] * len(dims)
        shape[x.axis - 1] = len(x.ids)
        src = x.ids if per_channel is None else per_channel
        return np.broadcast_to(src.reshape(shape), dims).reshape(-1).copy()

    def _flatten(self, node, x: Lab, axis: int) -> None:
        shape = self.shapes.get(node.input[0])
        axis = axis % (x.rank + 1) if x.rank else 0
        if axis != 1 or x.axis < 1 or shape is None:
            return self._spoil_all(node, [x], f"{_label(node)} flattens the channels with the batch")
        ids = self._flat_ids(x, shape[1:])
        if ids is None:
            return self._spoil_all(
                node, [x], f"{_label(node)} flattens maps of unknown size (give the input size of a dynamic model)"
            )
        self._coupled.append((ids, "Flatten"))
        self.labels[node.output[0]] = Lab(ids, 1, 2)

    def _reshape(self, node, labs) -> None:
        x = labs[0]
        if x is None or (len(labs) > 1 and labs[1] is not None):
            return self._spoil_all(node, labs, f"{_label(node)} uses channels as a shape")
        ins, outs = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        if ins is not None:  # shape inference may have lost the width (a shuffle's computed targets): the ids know it
            ins = list(ins)
            if x.axis < len(ins) and ins[x.axis] is None:
                ins[x.axis] = len(x.ids)
            if x.gaxis is not None and x.gaxis < len(ins) and ins[x.gaxis] is None:
                ins[x.gaxis] = x.groups
        if ins is not None and (outs is None or None in outs[1:]):
            dims = self._reshape_dims(node, ins)
            if outs is None or (dims is not None and len(dims) == len(outs)):
                outs = dims if outs is None else [a if a is not None else b for a, b in zip(outs, dims)]
        why = f"{_label(node)} mixes the channels with other dims"
        if ins is None or outs is None or x.axis < 1:
            return self._spoil_all(
                node, labs, f"{_label(node)}: shapes unknown (give the input size of a dynamic model)"
            )
        allowzero = int(_attr(node, "allowzero", 0))
        if allowzero:  # harmless while the target has no literal 0 (the dynamo exporter writes [-1, C])
            target = self._shape_value(node.input[1])
            if target is None or any(e == 0 for e in target if isinstance(e, int)):
                return self._spoil_all(node, labs, f"{_label(node)} has allowzero=1 and a target that may hold 0")
        c = len(x.ids)
        if x.gaxis is not None or len(outs) == len(ins) + 1:
            if self._regroup(node, x, ins, outs, allowzero):
                return
            if x.gaxis is not None:
                return self._spoil_all(node, labs, f"{_label(node)} does not merge the channel shuffle's groups back")
        if len(outs) == 2 and all(d is not None for i, d in enumerate(ins) if i not in (0, x.axis)):
            feat = int(np.prod([d if i != x.axis else c for i, d in enumerate(ins) if i > 0]))
            if outs[1] == feat and (outs[0] == ins[0] or (outs[0] is None and ins[0] is None)):
                ids = self._flat_ids(x, ins[1:])
                self._coupled.append((ids, "Flatten"))
                self.labels[node.output[0]] = Lab(ids, 1, 2)
                extra = {"target": [0, -1], "allowzero": allowzero}
                self.edits.append(Edit("reshape", node, self._k, node.output[0], extra=extra))
                return
        # only size-1 dims move: the channel dim keeps its place among the dims larger than one
        big_in = [(i, d) for i, d in enumerate(ins) if i > 0 and d != 1]
        big_out = [(i, d) for i, d in enumerate(outs) if i > 0 and d != 1]
        if (
            c > 1
            and len(big_in) == len(big_out)
            and all(a[1] == b[1] and a[1] is not None for a, b in zip(big_in, big_out) if a[0] != x.axis)
            and x.axis in [i for i, _ in big_in]
            and (outs[0] == ins[0] or (outs[0] is None and ins[0] is None))
            and all(d is not None for d in outs[1:] if d != c)
        ):
            k = [i for i, _ in big_in].index(x.axis)
            new_axis = big_out[k][0]
            target = [0] + [-1 if i == new_axis else int(d) for i, d in enumerate(outs) if i > 0]
            self.labels[node.output[0]] = Lab(x.ids, new_axis, len(outs))
            extra = {"target": target, "allowzero": allowzero}
            self.edits.append(Edit("reshape", node, self._k, node.output[0], extra=extra))
            return
        return self._spoil_all(node, labs, why)

    def _regroup(self, node, x: Lab, ins: list, outs: list, allowzero: int) -> bool:
        """A channel shuffle's Reshapes: (…, C, …) → (…, g, C/g, …) splits the channels into g groups, coupling
        position p of every group (after pruning, every group keeps the same positions and the shuffle stays one);
        the Reshape that merges the two axes again (after a Transpose that swaps them, or not) lays the columns out
        in the merged order. False when the Reshape is neither."""
        same = (ins[0] == outs[0] or (ins[0] is None and outs[0] is None)) and all(
            d is not None for d in list(ins[1:]) + list(outs[1:])
        )
        if not same:
            return False
        c, a = len(x.ids), x.axis
        if x.gaxis is None:
            g, cg = outs[a], outs[a + 1] if a + 1 < len(outs) else None
            if (
                len(outs) != len(ins) + 1
                or outs[:a] != ins[:a]
                or outs[a + 2 :] != ins[a + 1 :]
                or g is None
                or cg is None
                or g < 2
                or cg < 2  # (N, C, 1, H, W) only adds a dim
                or g * cg != c
            ):
                return False
            for p in range(cg):
                col = x.ids[p::cg]
                self.couple(col[:1].repeat(len(col)), col, "channel shuffle")
            self.labels[node.output[0]] = Lab(x.ids[:cg].copy(), a + 1, x.rank + 1, a, g)
            self.regroup[node.output[0]] = ("split", g)
            new_axis = a + 1
        else:
            lo, g = min(a, x.gaxis), x.groups
            if (
                abs(a - x.gaxis) != 1
                or len(outs) != len(ins) - 1
                or outs[:lo] != ins[:lo]
                or outs[lo + 1 :] != ins[lo + 2 :]
                or outs[lo] != g * c
            ):
                return False
            how = "tile" if x.gaxis < a else "repeat"  # groups outermost: p of group i at i·C/g + p; else p·g + i
            ids = np.tile(x.ids, g) if how == "tile" else np.repeat(x.ids, g)
            self.labels[node.output[0]] = Lab(ids, lo, x.rank - 1)
            self.regroup[node.output[0]] = (how, g)
            self._coupled.append((ids, "channel shuffle"))
            new_axis = lo
        target = [0] + [-1 if i == new_axis else int(d) for i, d in enumerate(outs) if i > 0]
        self.edits.append(
            Edit("reshape", node, self._k, node.output[0], extra={"target": target, "allowzero": allowzero})
        )
        return True

    def _shape_value(self, name: str, depth: int = 0):
        """The entries of a small 1-D int tensor computed from shapes and constants: ints, or ("dim", tensor, k)
        for a dim that is not known; None when it cannot be followed."""
        if depth > 20:
            return None
        if self.is_const(name):
            v = self.const(name)
            return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
        node = self.g.producers.get(name)
        if node is None:
            return None
        op = node.op_type
        if op == "Shape":
            dims = self.shapes.get(node.input[0])
            if dims is None:
                return None
            lab = self.labels.get(node.input[0])
            if lab is not None and len(dims) == lab.rank:  # a width shape inference lost (after a computed Slice)
                dims = list(dims)
                dims[lab.axis] = len(lab.ids) if dims[lab.axis] is None else dims[lab.axis]
                if lab.gaxis is not None and dims[lab.gaxis] is None:
                    dims[lab.gaxis] = lab.groups
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            out = [d if d is not None else ("dim", node.input[0], k) for k, d in enumerate(dims)]
            return out[start:end]
        if op in ("Cast", "Identity", "Squeeze", "Unsqueeze"):
            return self._shape_value(node.input[0], depth + 1)
        if op == "Concat":
            parts = [self._shape_value(i, depth + 1) for i in node.input]
            return None if any(p is None for p in parts) else [e for p in parts for e in p]
        if op == "Slice":
            v = self._shape_value(node.input[0], depth + 1)
            if v is None:
                return None
            args = [self.const(i) if i else None for i in node.input[1:5]] + [None] * 4
            starts, ends, axes, steps = (
                None if a is None else [int(x) for x in np.asarray(a).reshape(-1)] for a in args[:4]
            )
            if starts is None or ends is None or (axes not in (None, [0], [-1])):
                return None
            step = steps[0] if steps else 1
            return v[slice(starts[0], min(ends[0], len(v)) if ends[0] >= 0 else ends[0], step)]
        if op == "Gather":
            v, idx = self._shape_value(node.input[0], depth + 1), self.const(node.input[1])
            if v is None or idx is None:
                return None
            return [v[int(i)] for i in np.asarray(idx).reshape(-1)]
        if op in ("Add", "Sub", "Mul", "Div"):  # integer arithmetic on known dims (torch's chunk and view sizes)
            a, b = (self._shape_value(i, depth + 1) for i in node.input[:2])
            if a is None or b is None or not all(isinstance(e, int) for e in a + b):
                return None
            if len(a) != len(b) and 1 not in (len(a), len(b)):
                return None
            n = max(len(a), len(b))
            a, b = (v * n if len(v) == 1 else v for v in (a, b))
            if op == "Div" and 0 in b:
                return None
            f = {
                "Add": lambda p, q: p + q,
                "Sub": lambda p, q: p - q,
                "Mul": lambda p, q: p * q,
                "Div": lambda p, q: abs(p) // abs(q) * (1 if (p >= 0) == (q > 0) else -1),  # truncates, as ONNX
            }[op]
            return [f(p, q) for p, q in zip(a, b)]
        return None

    def _reshape_dims(self, node, ins: list):
        """The output dims of a Reshape whose target is computed from shapes (Paddle's Shape→Slice→Concat)."""
        target = self._shape_value(node.input[1])
        if target is None:
            return None
        out = []
        for k, e in enumerate(target):
            if e == 0 and not int(_attr(node, "allowzero", 0)):
                e = ins[k] if k < len(ins) else None
                out.append(("batch",) if k == 0 and e is None else e)
            elif isinstance(e, tuple):
                out.append(("batch",) if e[2] == 0 and k == 0 and ins[0] is None else None)
            else:
                out.append(e)
        if -1 in out:
            known_in = ins[1:] if ins[0] is None and out[0] == ("batch",) else ins
            others = [d for d in out if d != -1 and d != ("batch",)]
            if any(d is None for d in known_in) or any(not isinstance(d, int) for d in others):
                return None
            total, rest = int(np.prod(known_in)), int(np.prod(others)) if others else 1
            out[out.index(-1)] = total // rest if rest and total % rest == 0 else None
        return [None if d == ("batch",) else d for d in out]

    def _dense(self, node, labs) -> None:
        a, b = labs[0], labs[1] if len(labs) > 1 else None
        if b is not None or a is None:
            return self._spoil_all(node, labs, f"{_label(node)} multiplies by the channels as weights")
        if node.op_type == "Gemm" and int(_attr(node, "transA", 0)):
            return self._spoil_all(node, labs, f"{_label(node)} transposes its input")
        if a.axis != a.rank - 1:
            return self._spoil_all(node, labs, f"{_label(node)} contracts another axis than the channels")
        if not self.is_const(node.input[1]):
            return self._spoil_all(node, labs, f"{_label(node)} has a weight computed at run time")
        shape = self.const_shape(node.input[1])
        if shape is None or len(shape) != 2:
            return self._spoil_all(node, labs, f"{_label(node)} has a weight that is not a matrix")
        trans = node.op_type == "Gemm" and int(_attr(node, "transB", 0))
        rows = shape[1] if trans else shape[0]
        if rows != len(a.ids):
            return self._spoil_all(node, labs, f"{_label(node)}: {rows} weight rows for {len(a.ids)} features")
        if len(node.input) > 2 and node.input[2] and not self.is_const(node.input[2]):
            return self._spoil_all(node, labs, f"{_label(node)} has a bias computed at run time")
        kind = "gemm" if node.op_type == "Gemm" else "matmul"
        self.edits.append(Edit(kind, node, self._k, node.input[0], slot=1, axis=int(trans)))

    def _resize(self, node, labs) -> None:
        x = labs[0]
        if any(lab is not None for lab in labs[1:]) or x.axis != 1:
            return self._spoil_all(node, labs, f"{_label(node)} resizes along the channel axis")
        scales_slot = 2 if node.op_type == "Resize" and len(node.input) > 2 else 1
        if node.op_type == "Resize" and self._opset() < 11:
            scales_slot = 1
        if len(node.input) > scales_slot and node.input[scales_slot]:
            v = self.const(node.input[scales_slot])
            if v is None:
                return self._spoil_all(node, labs, f"{_label(node)} has computed scales")
            v = np.asarray(v).reshape(-1)
            if v.size and (v.size <= x.axis or v[x.axis] != 1):
                return self._spoil_all(node, labs, f"{_label(node)} scales the channel axis")
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            v = self.const(node.input[3])
            if v is None or _attr(node, "axes") is not None:
                return self._spoil_all(node, labs, f"{_label(node)} has computed sizes")
            self.edits.append(Edit("resize", node, self._k, node.input[0], slot=3, axis=x.axis))
        self.labels[node.output[0]] = x

    def _pad(self, node, labs) -> None:
        x = labs[0]
        if any(lab is not None for lab in labs[1:]):
            return self._spoil_all(node, labs, f"{_label(node)} pads with channel values")
        pads = _attr(node, "pads")
        if pads is None and len(node.input) > 1:
            v = self.const(node.input[1])
            if v is None or (len(node.input) > 3 and node.input[3]):
                return self._spoil_all(node, labs, f"{_label(node)} has computed pads or axes")
            pads = [int(p) for p in np.asarray(v).reshape(-1)]
        if pads is None or len(pads) != 2 * x.rank or pads[x.axis] or pads[x.axis + x.rank]:
            return self._spoil_all(node, labs, f"{_label(node)} pads the channel axis")
        self.labels[node.output[0]] = x

    def _reduce(self, node, x: Lab, labs) -> None:
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            v = self.const(node.input[1])
            if v is None:
                return self._spoil_all(node, labs, f"{_label(node)} has computed axes")
            axes = [int(a) for a in np.asarray(v).reshape(-1)]
        if not axes:
            if int(_attr(node, "noop_with_empty_axes", 0)):
                self.labels[node.output[0]] = x
                return
            return self._spoil_all(node, labs, f"{_label(node)} reduces over every axis, channels included")
        axes = sorted(a % x.rank for a in axes)
        if x.axis in axes:
            return self._spoil_all(node, labs, f"{_label(node)} reduces over the channel axis")
        keep = int(_attr(node, "keepdims", 1))
        self.labels[node.output[0]] = Lab(
            x.ids, x.axis if keep else x.axis - sum(a < x.axis for a in axes), x.rank if keep else x.rank - len(axes)
        )

    def _pick(self, node, x: Lab, out: str, idx: np.ndarray, how: str) -> None:
        """``out`` holds the input's channels at positions ``idx`` (a Split part, a Slice, a Gather)."""
        ids = x.ids[idx]
        self.labels[out] = Lab(ids, x.axis, x.rank)
        self.picks[out] = (node.input[0], idx, _label(node))
        self._coupled.append((ids, how))

    def _ints(self, node, slot: int):
        """A constant int input as a list (also one computed from known dims, as torch writes a chunk's bounds);
        None when absent, False when it depends on the input."""
        if len(node.input) <= slot or not node.input[slot]:
            return None
        v = self._shape_value(node.input[slot])
        return False if v is None or not all(isinstance(e, int) for e in v) else v

    def _slice(self, node, x: Lab, labs) -> None:
        if x is None or any(lab is not None for lab in labs[1:]):
            return self._spoil_all(node, labs, f"{_label(node)} uses channels as indices")
        if node.op_type == "Split":
            return self._split(node, x, labs)
        old = self._opset() < 10  # starts, ends and axes as attributes
        starts = _attr(node, "starts") if old else self._ints(node, 1)
        ends = _attr(node, "ends") if old else self._ints(node, 2)
        axes = _attr(node, "axes") if old else self._ints(node, 3)
        steps = None if old else self._ints(node, 4)
        if starts is False or ends is False or axes is False or steps is False:
            return self._spoil_all(node, labs, f"{_label(node)} has computed starts, ends, axes or steps")
        if axes is None:
            axes = list(range(len(starts)))
        axes = [a % x.rank for a in axes]
        if x.axis not in axes:
            self.labels[node.output[0]] = x
            return
        p = axes.index(x.axis)
        step = steps[p] if steps else 1
        if step != 1:
            return self._spoil_all(node, labs, f"{_label(node)} slices the channels with step {step}")
        c = len(x.ids)
        lo, hi = (min(max(v + c if v < 0 else v, 0), c) for v in (int(starts[p]), int(ends[p])))
        if hi <= lo:
            return self._spoil_all(node, labs, f"{_label(node)} keeps no channel")
        self._pick(node, x, node.output[0], np.arange(lo, hi), "Slice")
        extra = {"p": p, "lo": lo, "hi": hi, "old": old, "starts": list(starts), "ends": list(ends)}
        self.edits.append(Edit("slice", node, self._k, node.input[0], extra=extra))

    def _split(self, node, x: Lab, labs) -> None:
        axis = int(_attr(node, "axis", 0)) % x.rank
        if axis != x.axis:
            for o in node.output:
                if o:
                    self.labels[o] = x
            return
        c, n = len(x.ids), len(node.output)
        sizes = self._ints(node, 1) if self._opset() >= 13 else None
        if sizes is False:
            return self._spoil_all(node, labs, f"{_label(node)} has split sizes computed at run time")
        form = "input" if sizes else "attr" if self._opset() < 13 else "add"
        if not sizes:
            sizes = _attr(node, "split")
        if not sizes:
            num = int(_attr(node, "num_outputs", n))
            per = -(-c // num) if _attr(node, "num_outputs") is not None else c // num
            sizes = [per] * (num - 1) + [c - per * (num - 1)]
        sizes = [int(v) for v in sizes]
        if len(sizes) != n or sum(sizes) != c or min(sizes) < 1:
            return self._spoil_all(node, labs, f"{_label(node)}: split sizes {sizes} do not fit {c} channels")
        offsets = np.cumsum([0] + sizes)
        for o, lo, hi in zip(node.output, offsets[:-1], offsets[1:]):
            self._pick(node, x, o, np.arange(lo, hi), "Split")
        self.edits.append(Edit("split", node, self._k, node.input[0], extra={"form": form}))

    def _gather(self, node, labs) -> None:
        x = labs[0]
        if x is None or any(lab is not None for lab in labs[1:]):
            return self._spoil_all(node, labs, f"{_label(node)} uses channels as indices")
        axis = int(_attr(node, "axis", 0)) % x.rank
        idx = self.const(node.input[1])
        if idx is None:
            return self._spoil_all(node, labs, f"{_label(node)} has indices computed at run time")
        idx = np.asarray(idx)
        if axis != x.axis:
            if idx.ndim != 1:
                return self._spoil_all(node, labs, f"{_label(node)} changes the rank around the channels")
            self.labels[node.output[0]] = x
            return
        if idx.ndim != 1 or idx.size == 0:
            return self._spoil_all(node, labs, f"{_label(node)} takes the channels with {idx.ndim}-D indices")
        c = len(x.ids)
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + c, idx)
        if idx.min() < 0 or idx.max() >= c:
            return self._spoil_all(node, labs, f"{_label(node)} has indices outside the {c} channels")
        self._pick(node, x, node.output[0], idx, "Gather")
        self.edits.append(Edit("gather", node, self._k, node.input[0], extra={"idx": idx}))

    # ------------------------------------------------------------------ groups
    def _finish(self) -> None:
        uf = self.uf
        layer_roots: dict[int, np.ndarray] = {}
        for u in self.units:
            t = self.conv_out.get(u.index)
            if t is None or t not in self.labels:
                continue
            layer_roots[u.index] = uf.roots(self.labels[t].ids)
        self.layer_roots = layer_roots
        self.branch_roots = {o: (uf.roots(self.labels[o].ids), p[2]) for o, p in self.picks.items() if o in self.labels}
        # layers sharing a class form a group
        owner: dict[int, int] = {}
        parent = {i: i for i in layer_roots}

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for li in sorted(layer_roots):
            for r in np.unique(layer_roots[li]):
                r = int(r)
                if r in owner:
                    a, b = find(owner[r]), find(li)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                else:
                    owner[r] = li
        members: dict[int, list[int]] = {}
        for li in sorted(layer_roots):
            members.setdefault(find(li), []).append(li)
        how_of_root: dict[int, set] = {}
        for ids, how in self._coupled:
            for r in set(uf.roots(ids).tolist()):
                how_of_root.setdefault(r, set()).add(how)
        self.groups: list[Group] = []
        self.group_of_layer: dict[int, int] = {}
        for gi, (_, lis) in enumerate(sorted(members.items())):
            classes = list(dict.fromkeys(int(r) for li in lis for r in layer_roots[li]))
            how = set()
            for r in classes:
                how |= how_of_root.get(r, set())
            reason = next((uf.reason(r) for r in classes if uf.reason(r) is not None), None)
            kinds = []
            if len(lis) > 1 and how & BINARY:
                kinds.append("coupled through " + "/".join(sorted(how & BINARY)))
            for k in ("depthwise", "grouped conv", "Concat", "Split", "Slice", "Gather", "channel shuffle"):
                if k in how:
                    kinds.append(k)
            grp = Group(gi, lis, classes, kinds, reason)
            self.groups.append(grp)
            for li in lis:
                self.group_of_layer[li] = gi

    # ------------------------------------------------------------------ queries
    def group(self, layer_index: int) -> Group:
        return self.groups[self.group_of_layer[layer_index]]

    def class_members(self, roots) -> dict[int, list[int]]:
        """For a set of class roots: layer index -> units in those classes."""
        roots = np.asarray(sorted(set(int(r) for r in roots)), dtype=np.int64)
        out = {}
        for li in sorted(self.layer_roots):
            hit = np.flatnonzero(np.isin(self.layer_roots[li], roots))
            if hit.size:
                out[li] = hit.tolist()
        return out

    def keep(self, tensor: str, removed: np.ndarray) -> np.ndarray:
        lab = self.labels[tensor]
        return ~np.isin(self.uf.roots(lab.ids), removed)

    def floors(self) -> Floors:
        """The sets of classes of which one must stay (every layer's, every Split part's, Slice's and Gather's), to
        choose channels with."""
        return Floors([*self.layer_roots.values(), *(r for r, _ in self.branch_roots.values())])

    def check_removal(self, removed) -> None:
        """Refuse a removal that would leave a tensor without channels."""
        removed = np.asarray(sorted(set(int(r) for r in removed)), dtype=np.int64)
        for li, roots in self.layer_roots.items():
            if np.isin(roots, removed).all():
                u = next(u for u in self.units if u.index == li)
                raise OnnxFeError(
                    f"this would remove every unit of layer {li} {u.name!r}: keep at least one "
                    "(coupled layers lose the same channels)"
                )
        for out, (roots, label) in self.branch_roots.items():
            if np.isin(roots, removed).all():
                raise OnnxFeError(
                    f"this would remove every channel of {out!r}, an output of {label}: keep at least one of them"
                )

    # ------------------------------------------------------------------ the pruned model
    def apply(self, removed_roots) -> tuple[onnx.ModelProto, ApplyReport]:
        removed = np.asarray(sorted(set(int(r) for r in removed_roots)), dtype=np.int64)
        for r in removed:
            if self.uf.reason(int(r)) is not None:
                raise OnnxFeError(f"a chosen channel cannot be pruned: {self.uf.reason(int(r))}")
        self.check_removal(removed)
        rep = ApplyReport(removed=self.class_members(removed))
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        ng = _Graph(m.graph)
        writer = _Writer(m.graph, ng)
        values = self._constants(removed, rep) if removed.size else {}
        for e in self.edits:
            nn = m.graph.node[e.k]
            if e.kind == "conv":
                self._apply_conv(e, nn, removed, writer, values, rep)
                continue
            keep = self.keep(e.tensor, removed) if e.tensor in self.labels else None
            if keep is None or keep.all():
                continue
            if e.kind == "const":
                v = self.g.value(e.node.input[e.slot])
                writer.set(nn, e.slot, np.compress(keep, v, axis=e.axis))
            elif e.kind in ("gemm", "matmul"):
                self._apply_dense(e, nn, keep, removed, writer, values, rep, m.graph)
            elif e.kind == "reshape":
                writer.set(nn, 1, np.asarray(e.extra["target"], dtype=np.int64), fresh=True)
                if e.extra.get("allowzero"):  # the new target's 0 copies the batch dim
                    writer.attr(nn, "allowzero", 0)
            elif e.kind == "resize":
                v = np.asarray(self.g.value(e.node.input[3])).copy()
                v[e.axis] = int(keep.sum())
                writer.set(nn, 3, v.astype(np.int64), fresh=True)
            elif e.kind == "convtranspose":
                v = self.g.value(e.node.input[1])
                writer.set(nn, 1, np.compress(keep, v, axis=0))
            elif e.kind in ("split", "slice", "gather"):
                self._apply_pick(e, nn, keep, removed, writer)
        writer.finish()
        # shapes recorded for tensors whose width changed are stale
        stale = set(self.labels)
        keep_vi = [vi for vi in m.graph.value_info if vi.name not in stale]
        del m.graph.value_info[:]
        m.graph.value_info.extend(keep_vi)
        _drop_dead(m.graph)
        _sync_declared_shapes(m.graph)
        return m, rep

    def _apply_pick(self, e, nn, keep: np.ndarray, removed, writer) -> None:
        """New split sizes, Slice bounds or Gather indices for the kept channels of the input (new constants: the
        stored ones may be shared)."""
        if e.kind == "split":
            sizes = np.asarray([int(self.keep(o, removed).sum()) for o in e.node.output], dtype=np.int64)
            if e.extra["form"] == "attr":
                writer.attr(nn, "split", [int(v) for v in sizes])
            elif e.extra["form"] == "input":
                writer.set(nn, 1, sizes, fresh=True)
            else:
                writer.drop_attr(nn, "num_outputs")
                writer.add_input(nn, 1, sizes, "split")
            return
        if e.kind == "gather":
            pos = np.cumsum(keep) - 1  # new position of each kept input channel
            idx = e.extra["idx"]
            new = pos[idx[keep[idx]]]
            writer.set(nn, 1, new.astype(self.g.value(e.node.input[1]).dtype), fresh=True)
            return
        p, lo, hi = e.extra["p"], e.extra["lo"], e.extra["hi"]
        bounds = (int(keep[:lo].sum()), int(keep[:hi].sum()))
        for slot, name, b in ((1, "starts", bounds[0]), (2, "ends", bounds[1])):
            v = list(e.extra[name])  # as resolved by the analysis (torch computes a chunk's bounds from the shape)
            v[p] = b
            if e.extra["old"]:
                writer.attr(nn, name, v)
            else:
                stored = self.const(e.node.input[slot])
                dtype = np.asarray(stored).dtype if stored is not None else np.int64
                writer.set(nn, slot, np.asarray(v, dtype=dtype), fresh=True)

    def _apply_conv(self, e, nn, removed, writer, values, rep) -> None:
        out_keep = self.keep(e.tensor, removed)
        x = e.extra["input"]
        in_keep = self.keep(x, removed) if x in self.labels else None
        kind, g = e.extra["kind"], e.extra["group"]
        if out_keep.all() and (in_keep is None or in_keep.all()):
            return
        w = self.g.value(e.node.input[1])
        bias = self.g.value(e.node.input[2]) if len(e.node.input) > 2 and e.node.input[2] else None
        cin_g = w.shape[1]
        if in_keep is not None and not in_keep.all() and kind != "depthwise":
            # fold the constant value of removed input channels into the bias
            c = values.get(x)
            gone = ~in_keep
            cv = None if c is None else c[gone]
            if cv is not None and np.isfinite(cv).all() and not np.any(cv):
                pass
            else:
                lab = _label(e.node)
                if cv is None or not np.isfinite(cv).all():
                    rep.inexact.append(
                        f"{lab}: a removed input channel is not zero and not a constant there (it depends on the "
                        "input), so removing it differs from masking"
                    )
                else:
                    full = np.zeros(len(in_keep), dtype=np.float64)
                    full[gone] = cv
                    ksum = w.reshape(w.shape[0], cin_g, -1).sum(axis=2).astype(np.float64)  # (Cout, Cin/g)
                    per_out = w.shape[0] // g
                    delta = np.zeros(w.shape[0])
                    for o in range(w.shape[0]):
                        grp = o // per_out
                        delta[o] = ksum[o] @ full[grp * cin_g : (grp + 1) * cin_g]
                    bias = (np.zeros(w.shape[0], dtype=w.dtype) if bias is None else bias) + delta.astype(w.dtype)
                    rep.folds.append(f"{lab}: constant of removed input channels folded into its bias")
                    pads = _attr(e.node, "pads") or []
                    auto = _attr(e.node, "auto_pad", b"NOTSET")
                    auto = auto.decode() if isinstance(auto, bytes) else auto
                    if any(pads) or auto in ("SAME_UPPER", "SAME_LOWER"):
                        rep.inexact.append(
                            f"{lab}: the folded constant is exact away from the borders only: where the kernel "
                            "overlaps the zero padding, the removed channel would have contributed less"
                        )
        if kind == "depthwise":
            w = w[out_keep]
            writer.attr(nn, "group", int(in_keep.sum()) if in_keep is not None else int(out_keep.sum()))
        elif kind == "grouped":
            if in_keep is not None:
                w = w[:, in_keep[:cin_g]]
            w = w[out_keep]
        else:
            if in_keep is not None:
                w = w[:, in_keep]
            w = w[out_keep]
        writer.set(nn, 1, np.ascontiguousarray(w))
        if bias is not None:
            b = bias[out_keep]
            if len(nn.input) > 2 and nn.input[2]:
                writer.set(nn, 2, b)
            else:
                writer.add_input(nn, 2, b, "bias")

    def _apply_dense(self, e, nn, keep, removed, writer, values, rep, graph) -> None:
        w = self.g.value(e.node.input[1])
        gone = ~keep
        c = values.get(e.tensor)
        cv = None if c is None else c[gone]
        delta = None
        lab = _label(e.node)
        if cv is None or not np.isfinite(cv).all():
            rep.inexact.append(
                f"{lab}: a removed input feature is not a constant there; removing it differs from masking"
            )
        elif np.any(cv):
            rows = np.compress(gone, w, axis=e.axis)
            delta = (cv @ rows.T if e.axis else cv @ rows).astype(np.float64)
        writer.set(nn, 1, np.ascontiguousarray(np.compress(keep, w, axis=e.axis)))
        if delta is None:
            return
        if e.kind == "gemm":
            alpha, beta = float(_attr(e.node, "alpha", 1.0)), float(_attr(e.node, "beta", 1.0))
            if len(e.node.input) > 2 and e.node.input[2] and beta != 0:
                b = self.g.value(e.node.input[2])
                newb = (b + (alpha * delta / beta).astype(b.dtype)).astype(b.dtype)
                writer.set(nn, 2, newb)
            else:
                writer.add_input(nn, 2, (alpha * delta).astype(w.dtype), "bias")
                if beta != 1.0:
                    writer.attr(nn, "beta", 1.0)
            rep.folds.append(f"{lab}: constant of removed input features folded into its bias")
        else:
            writer.add_after(e.k, delta.astype(w.dtype))
            rep.folds.append(f"{lab}: constant of removed input features added after it")

    # ------------------------------------------------------------------ constants of removed channels
    def _constants(self, removed: np.ndarray, rep: ApplyReport) -> dict[str, np.ndarray]:
        """The value each removed channel takes on every tensor, given that it is zero at the taps of its layers
        (NaN where it is not a constant; only the removed positions are meaningful)."""
        taps: dict[str, np.ndarray] = {}
        for u in self.units:
            if u.index in rep.removed and u.tap in self.labels:
                taps[u.tap] = np.zeros(len(self.labels[u.tap].ids))
        vals: dict[str, np.ndarray] = {}
        for node in self.model.graph.node:
            out = node.output[0] if node.output else ""
            if out in self.picks:  # Split parts, Slice, Gather of channels: the input's values at their positions
                for o in node.output:
                    src = vals.get(self.picks[o][0]) if o in self.picks else None
                    if src is not None:
                        vals[o] = src[self.picks[o][1]]
            elif out in self.labels and node.op_type != "Conv":
                try:
                    v = self._eval(node, vals)
                except Exception:
                    v = None
                if v is not None:
                    vals[out] = v
            if out in taps:
                vals[out] = taps[out]
            elif node.op_type == "Conv" and out in self.labels:
                vals[out] = np.full(len(self.labels[out].ids), np.nan)
        return vals

    def _eval(self, node, vals) -> np.ndarray | None:
        op = node.op_type
        out = node.output[0]
        lab = self.labels[out]
        n = len(lab.ids)
        x = vals.get(node.input[0]) if node.input else None
        if out in self.regroup:
            if x is None:
                return None
            how, g = self.regroup[out]
            if how == "split":  # a column's value, where every group agrees on it
                cols = x.reshape(g, n)
                return np.where(np.all(cols == cols[0], axis=0), cols[0], np.nan)
            return np.tile(x, g) if how == "tile" else np.repeat(x, g)

        def c(slot, default=None):
            if len(node.input) <= slot or not node.input[slot]:
                return default
            v = self.const(node.input[slot])
            return None if v is None else np.asarray(v, dtype=np.float64)

        def per_channel(slot):
            v = c(slot)
            if v is None:
                return None
            r = lab.rank
            if v.ndim > r:
                return None
            v = v.reshape([1] * (r - v.ndim) + list(v.shape))
            if any(d != 1 for i, d in enumerate(v.shape) if i != lab.axis):
                return None
            return np.broadcast_to(v.reshape(-1), (n,))

        if op == "Concat":
            parts = []
            for name in node.input:
                w = len(self.labels[name].ids) if name in self.labels else None
                v = vals.get(name) if w is not None else None
                parts.append((w, v))
            if sum(w or 0 for w, _ in parts) == n and all(w is not None for w, _ in parts):
                return np.concatenate([np.full(w, np.nan) if v is None else v for w, v in parts])
            if all(w == n and v is not None for w, v in parts):  # along another axis: constant if all agree
                first = parts[0][1]
                return np.where(np.all([v == first for _, v in parts], axis=0), first, np.nan)
            if sum(w or 0 for w, _ in parts) != n:  # constant channels joined in: their values are not needed
                filled = []
                for name, (w, v) in zip(node.input, parts):
                    if w is None:
                        shape = self.const_shape(name) if self.is_const(name) else self.shapes.get(name)
                        w = shape[lab.axis] if shape else 0
                    filled.append(np.full(w, np.nan) if v is None else v)
                cat = np.concatenate(filled)
                return cat if len(cat) == n else None
            return None
        if op in BINARY:
            parts = []
            for slot, name in enumerate(node.input):
                if name in self.labels and len(self.labels[name].ids) == n:
                    parts.append(vals.get(name, np.full(n, np.nan)))
                elif self.is_const(name):
                    v = per_channel(slot)
                    parts.append(np.full(n, np.nan) if v is None else v)
                else:
                    parts.append(np.full(n, np.nan))
            with np.errstate(all="ignore"):
                if op == "Mul":
                    r = np.prod(parts, axis=0)
                    zero = np.any([p == 0 for p in parts], axis=0)
                    return np.where(zero, 0.0, r)
                if op in ("Add", "Sum"):
                    return np.sum(parts, axis=0)
                if op == "Mean":
                    return np.mean(parts, axis=0)
                if op == "Sub":
                    return parts[0] - parts[1]
                if op == "Div":
                    return parts[0] / parts[1]
                if op == "Pow":
                    return parts[0] ** parts[1]
                if op == "Max":
                    return np.max(parts, axis=0)
                if op == "Min":
                    return np.min(parts, axis=0)
            return None
        if x is None:
            return None
        if node.input[0] in self.labels and len(self.labels[node.input[0]].ids) != n:
            if op in ("Flatten", "Reshape"):
                src = self.labels[node.input[0]]
                shape = self.shapes.get(node.input[0])
                return None if shape is None else self._flat_ids(src, shape[1:], x)
            return None
        with np.errstate(all="ignore"):
            if op in ("Identity", "Dropout", "Cast", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
                return x
            if op in ("GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "Split", "Slice", "Gather"):
                return x
            if op in REDUCE:
                return x if op in ("ReduceMean", "ReduceMax", "ReduceMin") else np.full(n, np.nan)
            if op == "MaxPool":
                return x
            if op == "AveragePool":
                pads = _attr(node, "pads") or []
                if any(pads) and int(_attr(node, "count_include_pad", 0)):
                    return np.where(x == 0, 0.0, np.nan)
                return x
            if op == "Pad":
                mode = _attr(node, "mode", b"constant")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                if mode != "constant":
                    return x
                pv = c(2, np.zeros(1)) if _attr(node, "pads") is None else np.asarray([_attr(node, "value", 0.0)])
                pv = 0.0 if pv is None or pv.size == 0 else float(np.asarray(pv).reshape(-1)[0])
                return np.where(x == pv, x, np.nan)
            if op == "Relu":
                return np.maximum(x, 0)
            if op == "LeakyRelu":
                return np.where(x >= 0, x, x * float(_attr(node, "alpha", 0.01)))
            if op == "PRelu":
                s = per_channel(1)
                return None if s is None else np.where(x >= 0, x, x * s)
            if op == "Clip":
                lo, hi = _attr(node, "min"), _attr(node, "max")
                lo = c(1) if lo is None else lo
                hi = c(2) if hi is None else hi
                y = x
                if lo is not None:
                    y = np.maximum(y, float(np.asarray(lo).reshape(-1)[0]))
                if hi is not None:
                    y = np.minimum(y, float(np.asarray(hi).reshape(-1)[0]))
                return y
            if op == "Sigmoid":
                return 1 / (1 + np.exp(-x))
            if op == "HardSigmoid":
                a, b = float(_attr(node, "alpha", 0.2)), float(_attr(node, "beta", 0.5))
                return np.clip(a * x + b, 0, 1)
            if op == "HardSwish":
                return x * np.clip(x / 6 + 0.5, 0, 1)
            if op == "Tanh":
                return np.tanh(x)
            if op == "Elu":
                a = float(_attr(node, "alpha", 1.0))
                return np.where(x >= 0, x, a * (np.exp(x) - 1))
            if op == "Softplus":
                return np.log1p(np.exp(x))
            if op == "Gelu":
                return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) if x.size else x
            if op == "Neg":
                return -x
            if op == "Abs":
                return np.abs(x)
            if op == "Exp":
                return np.exp(x)
            if op == "BatchNormalization":
                s, b, mu, var = (c(k) for k in (1, 2, 3, 4))
                eps = float(_attr(node, "epsilon", 1e-5))
                return (x - mu) / np.sqrt(var + eps) * s + b
            if op == "InstanceNormalization":
                b = c(2)
                return None if b is None else np.broadcast_to(b, (n,)).astype(np.float64)
            if op in SOFTMAX:
                return np.full(n, np.nan)
        return None


def _subgraph_reads(graph) -> list[str]:
    out = []
    for n in graph.node:
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for sg in subs:
                produced = {o for m in sg.node for o in m.output} | {i.name for i in sg.input}
                produced |= {t.name for t in sg.initializer}
                for m in sg.node:
                    out.extend(i for i in m.input if i and i not in produced)
    return out


PLUMBING = {
    "Constant",
    "Identity",
    "Cast",
    "Transpose",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Concat",
    "Slice",
    "Shape",
    "Gather",
    "Add",  # shape arithmetic left unread once its result is written as a constant (torch's chunk bounds)
    "Sub",
    "Mul",
    "Div",
}


def _reads(graph) -> set[str]:
    need = {o.name for o in graph.output}
    for n in graph.node:
        need.update(i for i in n.input if i)
        for a in n.attribute:
            for sg in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                need.update(i for m in sg.node for i in m.input if i)
    return need


def _drop_dead(graph) -> None:
    """Remove the constant plumbing (Constant, Reshape of a constant, shape arithmetic …) and initializers that
    nothing reads any more after the edits."""
    while True:
        need = _reads(graph)
        dead = [k for k, n in enumerate(graph.node) if n.op_type in PLUMBING and not any(o in need for o in n.output)]
        if not dead:
            break
        for k in reversed(dead):
            del graph.node[k]
    need = _reads(graph) | {i.name for i in graph.input}
    inits = [t for t in graph.initializer if t.name in need]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


def _declared_dims(vi):
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _sync_declared_shapes(graph) -> None:
    """Shapes declared for constants agree with their sliced values: the dynamo exporter writes a value_info for
    every weight, and a model of IR < 4 lists its initializers among the graph inputs. A value_info that disagrees
    (or names nothing left in the graph) is dropped; a graph input that is an initializer gets its new dims."""
    dims = {t.name: [int(d) for d in t.dims] for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            a = next((a for a in n.attribute if a.name == "value"), None)
            if a is not None:
                dims[n.output[0]] = [int(d) for d in a.t.dims]
    names = {o for n in graph.node for o in n.output} | set(dims) | {i.name for i in graph.input}
    keep = [
        vi
        for vi in graph.value_info
        if vi.name in names and (vi.name not in dims or _declared_dims(vi) in (None, dims[vi.name]))
    ]
    if len(keep) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(keep)
    for vi in graph.input:
        d = _declared_dims(vi)
        if vi.name in dims and d is not None and d != dims[vi.name]:
            shape = vi.type.tensor_type.shape
            shape.Clear()
            for v in dims[vi.name]:
                shape.dim.add().dim_value = v


class _Writer:
    """Writes new constant values into the copy of the graph: in place when the stored constant feeds only that
    input, else as a new initializer for that input."""

    def __init__(self, graph, g: _Graph):
        self.graph = graph
        self.g = g
        self.uses: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
        for o in graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self.taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
        self.taken |= {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
        self.new_inits: list[onnx.TensorProto] = []
        self.after: list[tuple] = []

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def set(self, node, slot: int, value: np.ndarray, fresh: bool = False) -> None:
        name = node.input[slot]
        tr = self.g.trace(name)
        direct = isinstance(tr, tuple) and not tr[1] and tr[0] == name
        if not fresh and direct and self.uses.get(name, 0) == 1:
            if name in self.g.inits:
                t = self.g.inits[name]
                value = value.astype(helper.tensor_dtype_to_np_dtype(t.data_type))
                doc = t.doc_string
                t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
                if doc:
                    t.doc_string = doc
                return
            prod = self.g.producers.get(name)
            if prod is not None and prod.op_type == "Constant":
                a = next((a for a in prod.attribute if a.name == "value"), None)
                if a is not None:
                    value = value.astype(helper.tensor_dtype_to_np_dtype(a.t.data_type))
                    a.t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), a.t.name))
                    return
        base = tr[0] if isinstance(tr, tuple) else name
        dtype = self._dtype(tr[0]) if isinstance(tr, tuple) else None
        if dtype is not None and value.dtype.kind == "f":
            value = value.astype(dtype)
        new = self._unique(f"{base}_pruned")
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), new))
        node.input[slot] = new

    def _dtype(self, stored: str):
        _, dt = self.g.stored_shape_dtype(stored)
        return helper.tensor_dtype_to_np_dtype(dt) if dt else None

    def add_input(self, node, slot: int, value: np.ndarray, what: str) -> None:
        new = self._unique(f"{node.name or node.output[0]}_{what}_pruned")
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), new))
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = new

    def add_after(self, k: int, value: np.ndarray) -> None:
        self.after.append((k, value))

    def drop_attr(self, node, name: str) -> None:
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                break

    def attr(self, node, name: str, value) -> None:
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                break
        node.attribute.append(helper.make_attribute(name, value))

    def finish(self) -> None:
        self.graph.initializer.extend(self.new_inits)
        for k, value in sorted(self.after, key=lambda kv: -kv[0]):
            node = self.graph.node[k]
            out = node.output[0]
            mid = self._unique(f"{out}_before_fold")
            const = self._unique(f"{out}_fold")
            node.output[0] = mid
            self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), const))
            add = helper.make_node("Add", [mid, const], [out], name=self._unique(f"{node.name or out}_fold_add"))
            self.graph.node.insert(k + 1, add)


def analyze(model: onnx.ModelProto, input_hw=None) -> PruneGraph:
    """The channel dependencies of ``model`` (its external data loaded)."""
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise OnnxFeError("the model's external data is not loaded")
    return PruneGraph(model, input_hw=input_hw)


def cost(model: onnx.ModelProto, input_hw=None) -> tuple[int, int | None]:
    """(parameters, multiply-accumulates per image) of a model: parameters are the elements of its float
    constants (initializers and Constant nodes); MACs count Conv, ConvTranspose, Gemm and MatMul (None when a
    shape they need is unknown, e.g. a dynamic input size without ``input_hw``)."""
    g = _Graph(model.graph)
    params = 0
    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    for t in model.graph.initializer:
        if t.data_type in floats:
            params += int(np.prod(t.dims)) if len(t.dims) else 1
    for n in model.graph.node:
        if n.op_type == "Constant":
            a = next((a for a in n.attribute if a.name == "value"), None)
            if a is not None and a.t.data_type in floats:
                params += int(np.prod(a.t.dims)) if len(a.t.dims) else 1
    shapes = infer_shapes(model, input_hw)
    macs = 0
    for n in model.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        tr = g.trace(n.input[1]) if len(n.input) > 1 else None
        if isinstance(tr, tuple):
            try:
                wshape = list(g.seen_shape(*tr))
            except Exception:
                wshape = None
        else:
            wshape = shapes.get(n.input[1])
        out = shapes.get(n.output[0])
        if out is None and n.op_type == "MatMul" and wshape is not None and len(wshape) == 2:
            out = [None, wshape[1]]  # an input of unknown shape (a computed Reshape): taken as (N, K)
        if wshape is None or out is None or any(d is None for d in out[1:]):
            return params, None
        if n.op_type == "Conv":
            macs += int(np.prod(out[1:])) * int(np.prod(wshape[1:]))
        elif n.op_type == "ConvTranspose":
            x = shapes.get(n.input[0])
            if x is None or any(d is None for d in x[1:]):
                return params, None
            macs += int(np.prod(x[1:])) * int(np.prod(wshape[1:]))
        elif n.op_type == "Gemm":
            k = wshape[1] if int(_attr(n, "transB", 0)) else wshape[0]
            macs += int(np.prod(out[1:])) * int(k)
        else:
            macs += int(np.prod([d for d in out[1:]])) * int(wshape[-2]) if len(wshape) >= 2 else 0
    return params, macs
