"""An untrained twin of an ONNX model: the same graph with freshly drawn conv weights.

The twin is the random-init control of issue 10: every ``Conv`` keeps its node, name,
inputs, outputs and attributes, and only the constants that hold its parameters change.

What is changed, exactly:

* **Conv weights** are re-drawn from a He-normal (Kaiming, fan-in mode, ReLU gain):
  ``N(0, 2 / fan_in)`` with ``fan_in = in_channels / group × kH × kW`` (the product of
  the weight's dims after the first, as the Conv sees it). The normal is not truncated.
* **Conv biases** (the Conv's third input) are set to 0.
* **Per-channel affine constants right after a Conv** — a bias ``Add`` of an exporter that
  writes Conv + Add, or a BatchNormalization already folded into ``Mul`` + ``Add`` — are reset
  to the identity: 0 for ``Add``/``Sub``, 1 for ``Mul``/``Div``. Only a constant that
  broadcasts as one value per output channel counts, and only along the conv's
  single-consumer chain (scalars such as the ``+3`` of a decomposed HardSwish are kept).
* **BatchNormalization** is put at identity statistics, mean 0 and variance 1, *and* at the
  identity affine, scale 1 and bias 0: that is what a freshly initialised network exports
  (PyTorch and Keras both initialise gamma = 1, beta = 0), and keeping the trained
  gamma/beta would carry trained per-channel information (e.g. units switched off by a
  negative beta) into the control.

A BatchNormalization that was folded into the conv by the exporter needs nothing more:
its effect lived only in the conv's weight and bias, which are replaced.

Where the parameters live does not matter: initializers (PyTorch), Constant nodes
(Paddle), and either of them seen through ``Identity``/``Cast``/``Transpose``/``Reshape``/
``Squeeze``/``Unsqueeze``/``Flatten`` (tf2onnx's HWIO → OIHW transposes). The weight is
drawn in the shape of the stored tensor; these ops only permute or reshape values, so the
conv still sees i.i.d. He-normal entries, and the fan-in is taken from the shape the conv
sees. A weight tensor shared by several convs is drawn once.

Determinism: the draw for a weight depends only on the seed, the name of the stored tensor
and its size — not on the order in which convs are visited — so the same seed gives a
bit-identical file (with the same numpy), and adding or reordering other convs does not
change a conv's draw.

Left alone, and reported: convs whose weight is computed at run time (not a constant);
weights of a non-float type; ``ConvTranspose`` (its He fan-in depends on the stride and no
exporter convention is shared, and onnx-fe scores ``Conv`` units only); convs inside
control-flow subgraphs; every other parameter (Gemm/MatMul heads, PRelu slopes, other
norms), which does not change the map of any conv upstream of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxFeError
from ..io.lock import os_reason
from ..io.paths import check_output, make_parent, refuse_input, same_file

# Ops that only move or reshape a constant's values (the exporters' weight plumbing).
PASS_THROUGH = {"Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
AFFINE_IDENTITY = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}
BN_IDENTITY = (1.0, 0.0, 0.0, 1.0)  # scale, bias, mean, var
BN_ROLES = ("scale", "bias", "mean", "var")
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
METADATA_KEY = "onnx_fe.randomize"
PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class ConvDraw:
    """One stored weight tensor that was re-drawn."""

    tensor: str  # the initializer / Constant output that holds it
    convs: list[str]  # the Conv nodes that use it
    shape: list[int]  # shape as the conv sees it (OIHW)
    fan_in: int
    std: float


@dataclass
class RandomizeReport:
    """What `randomize_model` changed, with counts."""

    seed: int
    convs: int = 0  # Conv nodes in the main graph
    convs_randomized: int = 0
    weight_tensors: int = 0  # distinct stored weight tensors drawn
    biases_zeroed: int = 0  # Conv bias inputs set to 0
    affine_reset: int = 0  # per-channel Add/Sub/Mul/Div constants after a conv set to identity
    batchnorms: int = 0
    batchnorms_reset: int = 0
    conv_transpose_kept: int = 0
    subgraph_convs_kept: int = 0
    skipped: list[str] = field(default_factory=list)  # "node: reason"
    notes: list[str] = field(default_factory=list)
    draws: list[ConvDraw] = field(default_factory=list)
    output: str | None = None
    external_data: str | None = None  # side file of the written twin, if any

    def lines(self) -> list[str]:
        out = [
            f"Conv weights re-drawn (He-normal, seed {self.seed}): {self.convs_randomized} of {self.convs} convs"
            f" ({self.weight_tensors} tensors)",
            f"conv biases zeroed: {self.biases_zeroed}",
            f"BatchNormalization reset to identity: {self.batchnorms_reset} of {self.batchnorms}",
        ]
        if self.affine_reset:
            out.append(f"per-channel Add/Mul after a conv reset to identity: {self.affine_reset}")
        if self.conv_transpose_kept:
            out.append(f"ConvTranspose kept with its trained weights: {self.conv_transpose_kept}")
        if self.subgraph_convs_kept:
            out.append(f"Conv nodes inside control-flow subgraphs kept: {self.subgraph_convs_kept}")
        out += [f"skipped {s}" for s in self.skipped]
        out += [f"note: {s}" for s in self.notes]
        return out

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- graph helpers


class _Graph:
    """Constants of a graph: where each tensor comes from and who reads it."""

    def __init__(self, graph: onnx.GraphProto):
        self.g = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producers = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in dict.fromkeys(n.input):
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.graph_inputs = {i.name for i in graph.input} - set(self.inits)

    def trace(self, name: str):
        """Follow `name` back through pass-through ops to a stored constant.

        Returns (stored_name, path) where path lists the pass-through nodes from the stored
        constant to `name`, or a string saying why there is none.
        """
        path = []
        seen = set()
        while True:
            if name in seen:
                return "cyclic constant chain"
            seen.add(name)
            if name in self.inits:
                return name, path[::-1]
            node = self.producers.get(name)
            if node is None:
                return "comes from a graph input" if name in self.graph_inputs else f"tensor {name!r} has no producer"
            if node.op_type == "Constant":
                return name, path[::-1]
            if node.op_type not in PASS_THROUGH:
                return f"computed by {node.op_type} {node.name or node.output[0]!r}"
            for side in node.input[1:]:
                if side and not isinstance(self.trace(side), tuple):
                    return f"computed by {node.op_type} with a non-constant input"
            path.append(node)
            name = node.input[0]

    def stored_shape_dtype(self, stored: str):
        """Shape and element type of a stored constant (without reading its values)."""
        if stored in self.inits:
            t = self.inits[stored]
            return [int(d) for d in t.dims], t.data_type
        node = self.producers[stored]
        a = _constant_attr(node)
        if a is None:
            return None, None
        if a.name == "value":
            return [int(d) for d in a.t.dims], a.t.data_type
        if a.name == "value_float":
            return [], TensorProto.FLOAT
        if a.name == "value_floats":
            return [len(a.floats)], TensorProto.FLOAT
        return None, None

    def value(self, name: str) -> np.ndarray:
        """Values of a small constant (a Reshape shape, Squeeze axes)."""
        tr = self.trace(name)
        if not isinstance(tr, tuple):
            raise ValueError(tr)
        stored, path = tr
        if stored in self.inits:
            arr = numpy_helper.to_array(self.inits[stored])
        else:
            a = _constant_attr(self.producers[stored])
            if a is None or a.name == "sparse_value":
                raise ValueError("unsupported Constant")
            arr = numpy_helper.to_array(a.t) if a.name == "value" else np.asarray(helper.get_attribute_value(a))
        for node in path:
            arr = _apply_values(node, arr, self)
        return arr

    def seen_shape(self, stored: str, path: list) -> list[int]:
        """Shape of the stored constant after the pass-through ops, as its user sees it."""
        shape, _ = self.stored_shape_dtype(stored)
        for node in path:
            shape = _apply_shape(node, shape, self)
        return shape


def _constant_attr(node):
    for a in node.attribute:
        if a.name in ("value", "value_float", "value_floats", "value_int", "value_ints", "sparse_value"):
            return a
    return None


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _axes(node, g: _Graph):
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = [int(a) for a in g.value(node.input[1]).reshape(-1)]
    return axes


def _apply_shape(node, shape: list[int], g: _Graph) -> list[int]:
    op, r = node.op_type, len(shape)
    if op in ("Identity", "Cast"):
        return list(shape)
    if op == "Transpose":
        perm = _attr(node, "perm") or list(range(r))[::-1]
        return [shape[p] for p in perm]
    if op == "Reshape":
        target = [int(d) for d in g.value(node.input[1]).reshape(-1)]
        allowzero = _attr(node, "allowzero", 0)
        out = [shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
        if -1 in out:
            known = int(np.prod([d for d in out if d != -1]))
            out[out.index(-1)] = int(np.prod(shape)) // max(known, 1)
        return out
    if op == "Squeeze":
        axes = _axes(node, g)
        if axes is None:
            return [d for d in shape if d != 1]
        axes = {a % r for a in axes}
        return [d for i, d in enumerate(shape) if i not in axes]
    if op == "Unsqueeze":
        axes = _axes(node, g)
        n = r + len(axes)
        axes = sorted(a % n for a in axes)
        out, it = [], iter(shape)
        for i in range(n):
            out.append(1 if i in axes else next(it))
        return out
    if op == "Flatten":
        axis = _attr(node, "axis", 1) % (r + 1) if r else 0
        return [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
    raise ValueError(op)


def _apply_values(node, arr: np.ndarray, g: _Graph) -> np.ndarray:
    if node.op_type == "Cast":
        return arr.astype(helper.tensor_dtype_to_np_dtype(_attr(node, "to")))
    if node.op_type == "Transpose":
        return np.transpose(arr, _attr(node, "perm"))
    return arr.reshape(_apply_shape(node, list(arr.shape), g))


def _rng(seed: int, stored: str) -> np.random.Generator:
    """A generator that depends only on the seed and the stored tensor's name."""
    digest = hashlib.sha256(f"onnx_fe.randomize\0{stored}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def _per_channel(shape: list[int], channels: int, rank: int) -> bool:
    """Does a constant of `shape` broadcast as one value per channel of an N×C×… tensor?"""
    if len(shape) > rank:
        return False
    padded = [1] * (rank - len(shape)) + list(shape)
    return padded[1] == channels and all(d == 1 for i, d in enumerate(padded) if i != 1)


# --------------------------------------------------------------------------- the function


def randomize_model(model: onnx.ModelProto, seed: int = 0) -> tuple[onnx.ModelProto, RandomizeReport]:
    """Return an untrained twin of `model` (a copy) and a report of what was changed.

    The model's external data must already be loaded (``onnx.load`` does so by default).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OnnxFeError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not isinstance(model, onnx.ModelProto):
        raise OnnxFeError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise OnnxFeError(
            "the model's external data is not loaded; load it with onnx.load(path) or use randomize(path, ...)"
        )

    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    g = _Graph(twin.graph)
    rep = RandomizeReport(seed=seed)
    if len(twin.graph.node) == 0:
        raise OnnxFeError("the ONNX model has an empty graph")

    # plan: stored tensor name -> ("he", std) or ("fill", value); the first plan for a tensor wins.
    plans: dict[str, tuple] = {}
    draws: dict[str, ConvDraw] = {}
    role_of: dict[str, str] = {}  # stored name -> who planned it (for conflict notes)

    def plan(stored: str, p: tuple, who: str) -> bool:
        _, dtype = g.stored_shape_dtype(stored)
        if dtype not in FLOAT_TYPES:
            type_name = TensorProto.DataType.Name(dtype) if dtype is not None else "unreadable"
            rep.skipped.append(f"{who}: stored tensor {stored!r} is {type_name}, not float32/float64/float16")
            return False
        if stored in plans and plans[stored][:2] != p[:2]:
            rep.notes.append(f"{who}: {stored!r} is shared with {role_of[stored]}; kept the value planned there")
            return False
        plans.setdefault(stored, p)
        role_of.setdefault(stored, who)
        return True

    for node in twin.graph.node:
        if node.op_type == "ConvTranspose":
            rep.conv_transpose_kept += 1
        if node.op_type == "BatchNormalization":
            rep.batchnorms += 1
            who = f"BatchNormalization {node.name or node.output[0]!r}"
            sources = []
            for role, inp in zip(BN_ROLES, node.input[1:5]):
                tr = g.trace(inp)
                if not isinstance(tr, tuple):
                    rep.skipped.append(f"{who}: its {role} is not a constant ({tr})")
                    break
                sources.append(tr[0])
            else:
                ok = [plan(s, ("fill", v), who) for s, v in zip(sources, BN_IDENTITY)]
                rep.batchnorms_reset += all(ok)
        if node.op_type != "Conv":
            continue
        rep.convs += 1
        who = f"Conv {node.name or node.output[0]!r}"
        if len(node.input) < 2 or not node.input[1]:
            rep.skipped.append(f"{who}: no weight input")
            continue
        tr = g.trace(node.input[1])
        if not isinstance(tr, tuple):
            rep.skipped.append(f"{who}: weight {node.input[1]!r} is not a constant ({tr})")
            continue
        stored, path = tr
        try:
            shape = g.seen_shape(stored, path)
        except Exception as e:  # an unreadable Reshape target and the like
            rep.skipped.append(f"{who}: cannot tell the weight's shape ({type(e).__name__})")
            continue
        if shape is None or len(shape) < 3 or int(np.prod(shape[1:])) == 0:
            rep.skipped.append(f"{who}: weight has shape {shape}, not (out, in/group, k…)")
            continue
        fan_in = int(np.prod(shape[1:]))
        std = float(np.sqrt(2.0 / fan_in))
        if stored in draws and plans.get(stored, (None,))[0] == "he":
            d = draws[stored]
            if d.fan_in != fan_in:
                rep.notes.append(
                    f"{who}: shares {stored!r} with {d.convs[0]!r} but sees fan-in {fan_in}, not {d.fan_in}; drawn for the first"
                )
            d.convs.append(node.name or node.output[0])
        elif plan(stored, ("he", std), who):
            draws[stored] = ConvDraw(
                tensor=stored, convs=[node.name or node.output[0]], shape=shape, fan_in=fan_in, std=std
            )
        else:
            continue
        rep.convs_randomized += 1
        others = [c for c in g.consumers.get(stored, []) if c.op_type not in PASS_THROUGH and c.op_type != "Conv"]
        if others:
            rep.notes.append(
                f"{who}: weight {stored!r} is also read by {others[0].op_type} {others[0].name!r}, which sees the new values"
            )
        out_channels = shape[0]
        # bias input
        if len(node.input) > 2 and node.input[2]:
            tb = g.trace(node.input[2])
            if not isinstance(tb, tuple):
                rep.skipped.append(f"{who}: bias {node.input[2]!r} is not a constant ({tb})")
            elif plan(tb[0], ("fill", 0.0), f"{who} bias"):
                rep.biases_zeroed += 1
        # per-channel affine constants along the conv's single-consumer chain
        t = node.output[0]
        rank = len(shape)
        while t not in g.outputs and len(g.consumers.get(t, [])) == 1:
            nxt = g.consumers[t][0]
            if nxt.op_type == "BatchNormalization" and nxt.input[0] == t:
                t = nxt.output[0]
                continue
            if nxt.op_type not in AFFINE_IDENTITY or len(nxt.input) != 2 or list(nxt.input).count(t) != 1:
                break
            other = nxt.input[1] if nxt.input[0] == t else nxt.input[0]
            if nxt.op_type in ("Sub", "Div") and nxt.input[0] != t:
                break  # c - x and c / x are not an affine of x that has an identity
            tc = g.trace(other)
            if not isinstance(tc, tuple):
                break
            try:
                cshape = g.seen_shape(*tc)
            except Exception:
                break
            if not _per_channel(cshape, out_channels, rank):
                break
            if plan(
                tc[0],
                ("fill", AFFINE_IDENTITY[nxt.op_type]),
                f"{nxt.op_type} {nxt.name or nxt.output[0]!r} after {who}",
            ):
                rep.affine_reset += 1
            t = nxt.output[0]

    rep.subgraph_convs_kept = _count_subgraph_convs(twin.graph)
    if rep.convs == 0:
        raise OnnxFeError("the model has no Conv node: nothing to randomize")
    if rep.convs_randomized == 0:
        raise OnnxFeError(f"no Conv weight could be randomized: {rep.skipped[0] if rep.skipped else 'unknown reason'}")

    # Apply the plans (sorted by name: the result does not depend on the visiting order).
    for stored in sorted(plans):
        kind, val = plans[stored]
        shape, dtype = g.stored_shape_dtype(stored)
        np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
        n = int(np.prod(shape)) if shape else 1
        if kind == "he":
            arr = (_rng(seed, stored).standard_normal(n) * val).reshape(shape).astype(np_dtype)
        else:
            arr = np.full(shape, val, dtype=np_dtype)
        _store(g, stored, arr)

    rep.weight_tensors = len(draws)
    rep.draws = list(draws.values())  # graph order
    meta = json.dumps({"seed": seed, "init": "he_normal_fan_in", "bias": 0, "batchnorm": "identity"}, sort_keys=True)
    for p in list(twin.metadata_props):
        if p.key == METADATA_KEY:
            twin.metadata_props.remove(p)
    twin.metadata_props.add(key=METADATA_KEY, value=meta)
    return twin, rep


def _store(g: _Graph, stored: str, arr: np.ndarray) -> None:
    if stored in g.inits:
        t = g.inits[stored]
        doc = t.doc_string
        t.CopyFrom(numpy_helper.from_array(arr, stored))
        if doc:
            t.doc_string = doc
        return
    a = _constant_attr(g.producers[stored])
    if a.name == "value":
        t = numpy_helper.from_array(arr, a.t.name)
        a.t.CopyFrom(t)
    elif a.name == "value_float":
        a.f = float(arr.reshape(-1)[0])
    else:  # value_floats
        del a.floats[:]
        a.floats.extend(float(x) for x in arr.reshape(-1))


def _count_subgraph_convs(graph: onnx.GraphProto) -> int:
    n = 0
    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for sg in subs:
                n += sum(1 for m in sg.node if m.op_type == "Conv") + _count_subgraph_convs(sg)
    return n


# --------------------------------------------------------------------------- files


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            yield from a.tensors
            for sg in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                yield from _all_tensors(sg)


def _side_files(model: onnx.ModelProto, base: Path) -> list[Path]:
    files = []
    for t in _all_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    f = base / kv.value
                    if f not in files:
                        files.append(f)
    return files


def randomize(path: str | os.PathLike, output: str | os.PathLike, seed: int = 0) -> RandomizeReport:
    """Write the untrained twin of the ONNX model at `path` to `output`; return the report.

    The twin is written with external data (``<output name>.data`` beside it) when the
    input had external data or when it would not fit in one protobuf (2 GB).
    """
    path, output = Path(path), Path(check_output(output))
    if not path.exists():
        raise OnnxFeError(f"model not found: {path}")
    if path.is_dir():
        raise OnnxFeError(f"model path is a directory, expected an .onnx file: {path}")
    if output.is_dir():
        raise OnnxFeError(f"output is a directory, expected an .onnx file path: {output}")
    refuse_input(output, path, what="output")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises a variety of errors on files that are not ONNX
        first = str(e).splitlines()[0] if str(e) else "corrupt file"
        raise OnnxFeError(f"cannot read ONNX model {path}: {type(e).__name__}: {first}") from None
    if len(model.graph.node) == 0:
        raise OnnxFeError(f"not an ONNX model, or one with an empty graph: {path}")
    side = _side_files(model, path.parent)
    for f in side:
        if not f.exists():
            raise OnnxFeError(f"external weights file missing for {path.name}: {f}")
    if side:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as e:
            raise OnnxFeError(f"cannot read external weights of {path}: {type(e).__name__}: {e}") from None

    twin, rep = randomize_model(model, seed)
    del model

    try:
        too_big = twin.ByteSize() > PROTOBUF_LIMIT
    except Exception:
        too_big = True
    make_parent(output)
    try:
        _save(twin, output, side, too_big, rep)
    except OSError as e:
        raise OnnxFeError(f"cannot write {output}: {os_reason(e)}") from None
    rep.output = str(output)
    return rep


def _save(twin, output: Path, side, too_big: bool, rep: RandomizeReport) -> None:
    """Write the twin (and its weights file) in a temporary folder beside the output, then move them into place: a
    kill or a full disk leaves no half-written file under the output's names."""
    import shutil
    import stat
    import tempfile

    location = output.name + ".data"
    data_file = output.parent / location
    external = bool(side or too_big)
    if external and any(same_file(data_file, f) or data_file.resolve() == f.resolve() for f in side):
        raise OnnxFeError(
            f"the twin's weights file {data_file} would overwrite the input's; choose another output name"
        )
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-fe-randomize-", dir=output.parent))
    try:
        if external:
            onnx.save_model(
                twin,
                str(tmp / output.name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=location,
                size_threshold=1024,
            )
            # onnx writes the weights file readable by its owner only (0600); give it the model file's mode (umask)
            os.chmod(tmp / location, stat.S_IMODE((tmp / output.name).stat().st_mode))
            os.replace(tmp / location, data_file)
            rep.external_data = str(data_file)
        else:
            onnx.save_model(twin, str(tmp / output.name))
        os.replace(tmp / output.name, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
