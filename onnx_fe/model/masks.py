"""Graph rewrites for ablation: a per-unit mask after a tap, and a split of the graph at a tensor.

``add_unit_masks`` inserts ``masked = Mul(tap, mask)`` right after a layer's tap (the tensor its units are scored
on) and rewires every consumer of the tap to ``masked``; ``mask`` is an extra graph input of shape (1, C, 1, 1).
``split_at`` cuts the graph at a tensor into the part before it and the part that depends on it.
"""

from __future__ import annotations

import onnx
from onnx import helper

from ..errors import OnnxFeError

MASK_INPUT = "onnx_fe_mask"


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type is declared or can be inferred."""
    types = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # e.g. a model above protobuf's 2 GB limit
        inferred = model
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def _all_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {i.name for i in g.input} | {o.name for o in g.output} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    return names


def _unique(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str, skip=None) -> None:
    """Replace ``old`` by ``new`` in the inputs of every node, subgraphs included (outer-scope references)."""
    for n in graph.node:
        if n is skip:
            continue
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(a.g, old, new)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    _rename_inputs(sg, old, new)


def add_unit_masks(model: onnx.ModelProto, taps: list[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """A copy of ``model`` where each tap tensor is multiplied by a per-channel mask fed as a graph input.

    Returns the new model and, for each tap, ``(mask input name, masked tensor name)``. The mask has shape
    (1, C, 1, 1) and the tap's element type; feeding ones gives the original model's outputs. Every node that
    read the tap reads the masked tensor instead; a graph output that is the tap itself stays unmasked.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    types = _elem_types(model)
    taken = _all_names(m)
    producers = {o: k for k, n in enumerate(g.node) for o in n.output}
    info: dict[str, tuple[str, str]] = {}
    for tap in dict.fromkeys(taps):
        if tap not in producers:
            raise OnnxFeError(f"tensor {tap!r} is not produced by a node of the graph; it cannot be masked")
        mask = _unique(f"{MASK_INPUT}_{len(info)}", taken)
        masked = _unique(f"{tap}_masked", taken)
        elem = types.get(tap, onnx.TensorProto.FLOAT)
        g.input.append(helper.make_tensor_value_info(mask, elem, [1, None, 1, 1]))
        mul = helper.make_node("Mul", [tap, mask], [masked], name=_unique(f"{tap}_mask_mul", taken))
        _rename_inputs(g, tap, masked)
        producers = {o: k for k, n in enumerate(g.node) for o in n.output}
        g.node.insert(producers[tap] + 1, mul)
        info[tap] = (mask, masked)
    return m, info


def _has_subgraphs(model: onnx.ModelProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute
    )


def _submodel(model: onnx.ModelProto, nodes, inputs: list[str], outputs: list[str], types: dict) -> onnx.ModelProto:
    g = model.graph
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    declared = {vi.name: vi for vi in list(g.input) + list(g.output)}

    def vi(name):
        if name in declared:
            return declared[name]
        return helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)

    sub = helper.make_graph(
        list(nodes), g.name or "g", [vi(i) for i in inputs], [vi(o) for o in outputs], initializer=inits
    )
    m = helper.make_model(sub, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    m.functions.extend(model.functions)
    return m


def split_at(model: onnx.ModelProto, cut: str, output: str, direct: set[str]):
    """Split ``model`` at tensor ``cut`` into a prefix (what ``output`` needs that does not depend on ``cut``)
    and a suffix (every node that depends on ``cut``).

    ``direct`` names graph inputs fed straight to the suffix. Returns ``(prefix, prefix_outputs, suffix,
    suffix_inputs)``; ``prefix`` is None (and the suffix is the whole model) when the graph holds subgraphs.
    Raises OnnxFeError if ``output`` does not depend on ``cut``.
    """
    g = model.graph
    dep, suffix_nodes = {cut}, []
    for n in g.node:
        if any(i in dep for i in n.input):
            suffix_nodes.append(n)
            dep.update(n.output)
    if output not in dep:
        raise OnnxFeError(f"the model's first output {output!r} does not depend on {cut!r}")
    if _has_subgraphs(model):
        return None, [], model, [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
    types = _elem_types(model)
    produced = {o for n in suffix_nodes for o in n.output}
    inits = {t.name for t in g.initializer}
    ext = list(dict.fromkeys(i for n in suffix_nodes for i in n.input if i and i not in produced and i not in inits))
    pre_out = [i for i in ext if i not in direct]
    need, pre_nodes = set(pre_out), []
    for n in reversed(g.node):
        if any(o in need for o in n.output):
            pre_nodes.append(n)
            need.update(i for i in n.input if i)
    pre_nodes.reverse()
    graph_inputs = [i.name for i in g.input if i.name not in inits and i.name in need]
    prefix = _submodel(model, pre_nodes, graph_inputs, pre_out, types) if pre_out else None
    suffix = _submodel(model, suffix_nodes, ext, [output], types)
    return prefix, pre_out, suffix, ext
