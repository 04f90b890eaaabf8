"""Layers get the same index whatever valid topological order the exporter wrote the nodes in."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_fe.model.graph import find_units

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["models/shapes_resnet/converged/model.onnx", "models/digits_vgg/converged/model.onnx"]


def _reordered(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same graph with its nodes in another valid topological order (Kahn's algorithm, random tie-breaks)."""
    nodes = list(model.graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    preds = [{producer[i] for i in n.input if i in producer} for n in nodes]
    rng = np.random.default_rng(seed)
    done, out = set(), []
    while len(out) < len(nodes):
        ready = [k for k in range(len(nodes)) if k not in done and preds[k] <= done]
        k = ready[int(rng.integers(len(ready)))]
        done.add(k)
        out.append(nodes[k])
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m


@pytest.mark.parametrize("path", MODELS)
def test_layer_indices_do_not_depend_on_the_node_order(path):
    model = onnx.load(str(ROOT / path))
    ref = {u.index: u.name for u in find_units(model)}
    assert sorted(ref) == list(range(len(ref)))
    moved = 0
    for seed in range(8):
        m = _reordered(model, seed)
        onnx.checker.check_model(m)
        units = find_units(m)
        moved += [u.name for u in sorted(units, key=lambda u: u.file_order)] != [ref[i] for i in sorted(ref)]
        assert {u.index: u.name for u in units} == ref
    if "resnet" in path:
        assert moved > 0  # the test did reorder convs in the file


def test_a_shortcut_conv_written_first_still_comes_after_the_main_branch_conv():
    """tf2onnx writes a downsampling block's 1×1 shortcut conv before the main branch; PyTorch after it."""
    model = onnx.load(str(ROOT / MODELS[0]))
    units = find_units(model)
    names = [u.name for u in units]
    shortcut = [n for n in names if "short" in n]
    assert shortcut, names
    for s in shortcut:
        block = s.split("/short")[0]
        first = next(n for n in names if n.startswith(block) and "conv1" in n)
        assert names.index(first) < names.index(s)
    tap_kinds = {u.tap_kind for u in units}
    assert any(k.startswith("post-activation") for k in tap_kinds)
