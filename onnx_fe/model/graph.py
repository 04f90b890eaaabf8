"""Stage 1 — graph: find the convolutional units of an ONNX model and expose them.

A *layer* is a ``Conv`` node; a *unit* is one output channel. The unit's map is
taken at the end of the conv's "chain": an optional bias ``Add``, a
``BatchNormalization`` or affine ``Mul``/``Add``/``Sub``/``Div`` by a constant,
and the activation (plain ops such as ``Relu`` or ``Clip``, and gated ones such
as SiLU = ``x * Sigmoid(x)`` or a decomposed HardSwish
``x * Clip(x + 3, 0, 6) / 6``). The chain is followed only while each tensor
has a single consumer (gated activations excepted, whose two branches must meet
again), so a residual ``Add`` or a branch point ends it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import OnnxFeError

# Element-wise ops with a single data input that keep a unit's spatial map.
ACTIVATIONS = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "ThresholdedRelu",
    "Swish",
}
AFFINE = {"Add", "Sub", "Mul", "Div"}
NORMS = {"BatchNormalization"}
# Ops allowed inside the non-identity branch of a gated activation.
GATE_OPS = ACTIVATIONS | AFFINE

CONSTANT_PRODUCERS = {"Constant", "ConstantOfShape"}


@dataclass
class ConvUnit:
    """One Conv layer and the tensor at the end of its chain (the tap)."""

    index: int
    name: str
    conv_node: str
    tap: str
    chain: list[str]
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    weight: str | None = None
    reason: str | None = None  # why not scorable, None when scorable
    file_order: int | None = None  # position among the Conv nodes in the file (``index`` is the canonical one)
    weight_l1: np.ndarray | None = field(default=None, repr=False, compare=False)  # set by load_model

    @property
    def tap_op(self) -> str:
        """The op the unit's map is taken after (the last op of the chain)."""
        return self.chain[-1] if self.chain else "Conv"

    @property
    def activated(self) -> bool:
        """True when the map is taken after an activation (plain or gated), False when before one."""
        last = self.chain[-1] if self.chain else "Conv"
        return last in ACTIVATIONS or "·" in last

    @property
    def tap_kind(self) -> str:
        """``post-activation (Relu)`` or ``pre-activation (BatchNormalization)``: where the map is taken."""
        return f"{'post' if self.activated else 'pre'}-activation ({self.tap_op})"

    @property
    def scorable(self) -> bool:
        return self.reason is None

    @property
    def chain_str(self) -> str:
        return "→".join(self.chain)


@dataclass
class LoadedModel:
    path: Path
    model: onnx.ModelProto
    sha256: str
    input_name: str
    input_shape: list  # ints or None for dynamic dims
    input_elem_type: int
    units: list[ConvUnit] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # convolutions that are not layers, and why (one line each)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's input is fixed to (e.g. 1), or None when the batch dim is dynamic."""
        return self.input_shape[0]


# Quantized convolutions: their outputs are integers on a per-tensor scale, not the float maps scored here.
QUANTIZED_CONVS = {"ConvInteger", "QLinearConv"}
CONTROL_FLOW = {"If", "Loop", "Scan"}


def skipped_convs(model: onnx.ModelProto) -> list[str]:
    """One line per kind of convolution that cannot be a layer: quantized convs in the main graph, and any
    conv inside the subgraphs of If/Loop/Scan nodes (their tensors cannot be made graph outputs)."""
    quantized: dict[str, int] = {}
    nested: dict[tuple[str, str], int] = {}

    def walk(graph, top: str | None):
        for n in graph.node:
            if n.op_type in QUANTIZED_CONVS and top is None:
                quantized[n.op_type] = quantized.get(n.op_type, 0) + 1
            elif (n.op_type == "Conv" or n.op_type in QUANTIZED_CONVS) and top is not None:
                nested[(top, n.op_type)] = nested.get((top, n.op_type), 0) + 1
            for a in n.attribute:
                subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                for sg in subs:
                    walk(sg, top if top is not None else f"{n.op_type} {n.name or n.output[0]!r}")

    walk(model.graph, None)
    out = []
    for op, k in quantized.items():
        out.append(
            f"{k} quantized convolution{'s' if k > 1 else ''} ({op}) not scored: quantized convs are not "
            "supported (score the float model)"
        )
    for (where, op), k in nested.items():
        out.append(
            f"{k} {op} node{'s' if k > 1 else ''} inside the subgraph of {where} not scored: convs inside "
            "If/Loop/Scan subgraphs cannot be tapped"
        )
    return out


def require_units(lm: LoadedModel) -> None:
    """Refuse a model with no Conv layer, saying why when it does have convolutions that were skipped."""
    if lm.units:
        return
    if lm.skipped:
        raise OnnxFeError(f"{lm.path.name} has no Conv layer that can be scored: " + "; ".join(lm.skipped))
    raise OnnxFeError(f"{lm.path.name} has no Conv node")

    def __reduce_ex__(self, protocol):
        # A lean runner moved the weights into this process's temporary file: another process reads the model
        # file again (the units are found again, identically).
        if getattr(self, "_weights_dir", None) is not None:
            return (load_model, (self.path,))
        return super().__reduce_ex__(protocol)


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_model(path: str | os.PathLike, *, external_data: bool = True) -> LoadedModel:
    """Load an ONNX model with its external data; refuse bad files with one clear line.

    ``external_data=False`` leaves weights kept in side files there (the units' ``weight_l1`` is then not set).
    """
    path = Path(path)
    if not path.exists():
        raise OnnxFeError(f"model not found: {path}")
    if path.is_dir():
        raise OnnxFeError(f"model path is a directory, expected an .onnx file: {path}")
    try:
        # Read the graph without weights first, to know which side files exist.
        skeleton = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises a variety of errors on corrupt files
        raise OnnxFeError(
            f"cannot read ONNX model {path}: {type(e).__name__}: {' '.join(str(e).split()) or 'corrupt file'}"
        ) from None
    side = []
    for t in list(skeleton.graph.initializer):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    f = path.parent / kv.value
                    if not f.exists():
                        raise OnnxFeError(f"external weights file missing for {path.name}: {f}")
                    if f not in side:
                        side.append(f)
    try:
        model = onnx.load(str(path), load_external_data=True) if side and external_data else skeleton
    except Exception as e:
        raise OnnxFeError(f"cannot read external weights of {path}: {e}") from None
    if len(model.graph.node) == 0:
        raise OnnxFeError(f"ONNX model has an empty graph: {path}")
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise OnnxFeError(
            f"onnx-fe supports models with exactly one image input; {path.name} has {len(inputs)}: "
            + ", ".join(i.name for i in inputs)
        )
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
    if len(dims) != 4:
        raise OnnxFeError(f"model input {inp.name!r} has rank {len(dims)}; an image model with a 4-D input is expected")
    lm = LoadedModel(
        path=path,
        model=model,
        sha256=_hash_files([path] + side),
        input_name=inp.name,
        input_shape=dims,
        input_elem_type=tt.elem_type,
    )
    lm.units = find_units(model)
    lm.skipped = skipped_convs(model)
    for u in lm.units if external_data or not side else ():  # taken now, while the weights are in memory (a lean
        u.weight_l1 = conv_weight_l1(model, u)  # runner moves them out, see runner.py)
    return lm


def _is_constant(name: str, producers: dict, init_names: set) -> bool:
    if name == "" or name in init_names:
        return True
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in CONSTANT_PRODUCERS:
        return True
    # Identity/Cast/Reshape/Unsqueeze of a constant (Paddle and TF exporters do this).
    if node.op_type in {"Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze"}:
        return all(_is_constant(i, producers, init_names) for i in node.input)
    return False


def _data_inputs(node, producers, init_names) -> list[str]:
    return [i for i in node.input if not _is_constant(i, producers, init_names)]


def find_units(model: onnx.ModelProto) -> list[ConvUnit]:
    """List every Conv node with the tensor at the end of its chain, in graph order."""
    g = model.graph
    init_names = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in set(n.input):
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def single_data_consumer(t):
        cs = consumers.get(t, [])
        if len(cs) != 1 or t in graph_outputs:
            return None
        return cs[0]

    def gated_end(t):
        """If t feeds a gated activation t * f(t), return (ops, output) of its end."""
        cs = consumers.get(t, [])
        if len(cs) != 2 or t in graph_outputs:
            return None
        muls = [c for c in cs if c.op_type == "Mul" and list(c.input).count(t) == 1]
        for m in muls:
            node, inp, ops = (cs[0] if cs[1] is m else cs[1]), t, []
            for _ in range(6):
                if node.op_type not in GATE_OPS or _data_inputs(node, producers, init_names) != [inp]:
                    break
                ops.append(node.op_type)
                inp = node.output[0]
                nxt = single_data_consumer(inp)
                if nxt is m:
                    return ["·".join(ops) + "·Mul"], m.output[0]
                if nxt is None:
                    break
                node = nxt
        return None

    units: list[ConvUnit] = []
    for node in g.node:
        if node.op_type != "Conv":
            continue
        idx = len(units)
        name = node.name or node.output[0]
        chain = ["Conv"]
        t = node.output[0]
        while True:
            nxt = single_data_consumer(t)
            if nxt is not None:
                op = nxt.op_type
                data = _data_inputs(nxt, producers, init_names)
                if op in ACTIVATIONS or op in NORMS:
                    if data and data[0] == t and len(data) == 1:
                        chain.append(op)
                        t = nxt.output[0]
                        continue
                elif op in AFFINE and data == [t]:
                    # only "t / c" and "t - c" keep the order of values; "c / t" does not.
                    if op in ("Div", "Sub") and nxt.input[0] != t:
                        break
                    chain.append(op)
                    t = nxt.output[0]
                    continue
                break
            ge = gated_end(t)
            if ge is not None:
                chain.extend(ge[0])
                t = ge[1]
                continue
            break
        units.append(
            ConvUnit(
                index=idx,
                name=name,
                conv_node=node.name,
                tap=t,
                chain=chain,
                weight=node.input[1] if len(node.input) > 1 else None,
                file_order=idx,
            )
        )
    return canonical_order(model, units)


def canonical_order(model: onnx.ModelProto, units: list[ConvUnit]) -> list[ConvUnit]:
    """Number the layers in an order of the conv graph that does not depend on the file's node order.

    Exporters write a network's nodes in different valid topological orders: tf2onnx emits a residual block's
    shortcut 1×1 conv before the main branch's convs, PyTorch after them. Layers are therefore sorted by

    1. conv depth: the largest number of Conv nodes on any path from the graph input to the conv (itself included);
    2. then the largest number of Conv nodes on any path from the conv to a graph output, longest first (a main
       branch's first conv before the shortcut that joins it later);
    3. then the weight's shape (out, in, kH, kW), kernel strides, and finally the position in the file.

    ``index`` is the position in this order; ``file_order`` keeps the position in the file.
    """
    if len(units) < 2:
        return units
    g = model.graph
    nodes = list(g.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    preds = [sorted({producer[i] for i in n.input if i in producer}) for n in nodes]
    succs: list[list[int]] = [[] for _ in nodes]
    for k, ps in enumerate(preds):
        for q in ps:
            succs[q].append(k)
    order = _topological(len(nodes), preds, succs)
    is_conv = [n.op_type == "Conv" for n in nodes]
    down = [0] * len(nodes)  # convs on the longest path from an input, inclusive
    for k in order:
        down[k] = max((down[q] for q in preds[k]), default=0) + is_conv[k]
    up = [0] * len(nodes)  # convs on the longest path to an output, inclusive
    for k in reversed(order):
        up[k] = max((up[q] for q in succs[k]), default=0) + is_conv[k]
    shapes = _weight_shapes(model)
    by_output = {n.output[0]: k for k, n in enumerate(nodes) if n.op_type == "Conv" and n.output}

    def key(u: ConvUnit):
        k = by_output.get(_conv_output(nodes, u))
        if k is None:
            return (0, 0, (), (), u.file_order)
        strides = next((tuple(a.ints) for a in nodes[k].attribute if a.name == "strides"), ())
        return (down[k], -up[k], shapes.get(u.weight, ()), strides, u.file_order)

    ranked = sorted(units, key=key)
    for i, u in enumerate(ranked):
        u.index = i
    return ranked


def _conv_output(nodes, u: ConvUnit) -> str | None:
    for n in nodes:
        if n.op_type == "Conv" and (n.name or n.output[0]) == u.name and n.name == u.conv_node:
            return n.output[0]
    return None


def _topological(n: int, preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Kahn's algorithm; ONNX graphs are already sorted, but nothing here relies on it."""
    indeg = [len(p) for p in preds]
    ready = [k for k in range(n) if indeg[k] == 0]
    out = []
    while ready:
        k = ready.pop()
        out.append(k)
        for q in succs[k]:
            indeg[q] -= 1
            if indeg[q] == 0:
                ready.append(q)
    return out if len(out) == n else list(range(n))


def _weight_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = tuple(a.t.dims)
    return shapes


def select_units(units: list[ConvUnit], layers: list[str] | None) -> list[ConvUnit]:
    """Select scorable units by index, exact name, or glob; None selects all scorable."""
    if isinstance(layers, (str, int)):
        layers = [layers]
    if layers is not None:
        layers = [str(v) for v in layers]  # the API takes what the CLI takes: indices as ints or strings
    scorable = [u for u in units if u.scorable]
    if not layers:
        if not scorable:
            raise OnnxFeError("the model has no scorable Conv layer (none with a spatial output)")
        return scorable
    chosen: dict[int, ConvUnit] = {}
    for spec in layers:
        for item in [s.strip() for s in spec.split(",") if s.strip()]:
            hits = []
            if item.lstrip("-").isdigit():
                i = int(item)
                hits = [u for u in units if u.index == i]
            else:
                hits = [u for u in units if u.name == item] or [u for u in units if fnmatch.fnmatchcase(u.name, item)]
            if not hits:
                raise OnnxFeError(f"--layers {item!r} matches no Conv layer (see `onnx-fe inspect`)")
            for u in hits:
                if not u.scorable:
                    if item.lstrip("-").isdigit() or item == u.name:
                        raise OnnxFeError(f"layer {u.index} {u.name!r} is not scorable: {u.reason}")
                    continue
                chosen[u.index] = u
    if not chosen:
        raise OnnxFeError("--layers selects no scorable Conv layer")
    return [chosen[i] for i in sorted(chosen)]


def expose(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """Return a copy of the model whose graph also outputs the given tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    elem = {}
    for vi in list(m.graph.value_info) + list(m.graph.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    for t in tensors:
        if t in existing:
            continue
        m.graph.output.append(helper.make_tensor_value_info(t, elem.get(t, onnx.TensorProto.FLOAT), None))
        existing.add(t)
    return m


def conv_weight_l1(model: onnx.ModelProto, unit: ConvUnit) -> np.ndarray | None:
    """L1 norm of each output filter of the unit's Conv weight (None if not a constant).

    A unit found by :func:`load_model` carries the norms taken at load time, which stay valid after a lean runner
    has moved the weights out of the in-memory model (:func:`onnx_fe.model.runner.make_runner`).
    """
    if unit.weight_l1 is not None:
        return unit.weight_l1
    if unit.weight is None:
        return None
    for t in model.graph.initializer:
        if t.name == unit.weight:
            w = onnx.numpy_helper.to_array(t).astype(np.float64)
            return np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == unit.weight:
            for a in n.attribute:
                if a.name == "value":
                    w = onnx.numpy_helper.to_array(a.t).astype(np.float64)
                    return np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)
    return None
