"""Structural pruning on small graphs, one per coupling kind: the pruned model equals the original with the removed
units masked at their taps, removing dead units changes nothing, and the graph stays valid."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from prune_graphs import (
    B,
    affine,
    c2f,
    concat,
    depthwise,
    dynamo_head,
    flatten_gemm,
    fold,
    gap_matmul,
    gather_channels,
    grouped,
    initializers_as_inputs,
    residual,
    se_block,
    shufflenet_stage,
    tf2onnx_weights,
    zero,
)

from onnx_fe.errors import OnnxFeError
from onnx_fe.model.graph import find_units
from onnx_fe.model.masks import add_unit_masks
from onnx_fe.model.prune import analyze, cost

TOL = 1e-5


def run(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def layer(model, name):
    return next(u for u in find_units(model) if u.name == name)


def prune_units(model, pairs):
    """Prune (layer name, unit) pairs; return the pruned model, the report and the analysis."""
    pg = analyze(model)
    roots = [int(pg.layer_roots[layer(model, n).index][u]) for n, u in pairs]
    pm, rep = pg.apply(roots)
    onnx.checker.check_model(pm, full_check=True)
    onnx.shape_inference.infer_shapes(pm, strict_mode=True)
    return pm, rep, pg


def masked_run(model, rep, x):
    units = find_units(model)
    taps = {}
    for u in units:
        if u.index in rep.removed:
            taps.setdefault(u.tap, []).append(u)
    mm, info = add_unit_masks(model, list(taps))
    shapes = {}
    for vi in onnx.shape_inference.infer_shapes(model).graph.value_info:
        if len(vi.type.tensor_type.shape.dim) > 1:
            shapes[vi.name] = vi.type.tensor_type.shape.dim[1].dim_value
    feeds = {"x": x}
    for tap, (mask, _) in info.items():
        m = np.ones((1, shapes[tap], 1, 1), np.float32)
        for u in taps[tap]:
            m[0, rep.removed[u.index]] = 0
        feeds[mask] = m
    return run(mm, feeds)


def inputs(shape=(4, 3, 8, 8), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def check_live(model, pairs, x=None, expect_layers=None):
    """Pruning live units equals masking them, and masking them does change the outputs (the test can fail)."""
    x = inputs() if x is None else x
    pm, rep, pg = prune_units(model, pairs)
    a, b = masked_run(model, rep, x), run(pm, {"x": x})
    assert a.shape == b.shape
    assert np.abs(a - b).max() < TOL
    assert np.abs(run(model, {"x": x}) - b).max() > 1e-3  # the removed units mattered
    assert rep.folds == [] and rep.inexact == []
    if expect_layers is not None:
        assert {find_units(model)[i].name: u for i, u in rep.removed.items()} == expect_layers
    return pm, rep, pg


def check_dead(model, pairs, x=None):
    x = inputs() if x is None else x
    pm, rep, _ = prune_units(model, pairs)
    assert np.abs(run(model, {"x": x}) - run(pm, {"x": x})).max() < TOL
    assert cost(pm)[0] < cost(model)[0]
    return pm, rep


def weight_shape(model, name):
    """Shape of the weight a Conv/Gemm named ``name`` reads (traced through Constant nodes)."""
    node = next(n for n in model.graph.node if n.name == name)
    w = node.input[1]
    for t in model.graph.initializer:
        if t.name == w:
            return tuple(t.dims)
    for n in model.graph.node:
        if n.output[0] == w and n.op_type == "Constant":
            return tuple(n.attribute[0].t.dims)
    raise KeyError(w)


# --------------------------------------------------------------------------- graphs, one per coupling kind


def _residual_dead(chs):
    m = residual()
    names = {"A.w", "A.b", "B.w", "B.b", "bnB.scale", "bnB.bias"}
    return zero(m, names, list(chs))


def test_residual_add_group_pruned_as_one():
    m = residual()
    pg = analyze(m)
    ga = pg.group(layer(m, "A").index)
    assert ga is pg.group(layer(m, "B").index) and ga.prunable and len(ga.layers) == 2
    assert "coupled through Add" in ga.how[0]
    pm, rep, _ = check_live(m, [("B", 2), ("B", 4)], expect_layers={"A": [2, 4], "B": [2, 4]})
    assert weight_shape(pm, "A") == (4, 3, 3, 3)
    assert weight_shape(pm, "B") == (4, 4, 3, 3)
    assert weight_shape(pm, "C") == (4, 4, 3, 3)


def test_residual_dead_units_change_nothing():
    check_dead(_residual_dead([1, 3]), [("A", 1), ("A", 3)])


def test_concat_offsets():
    m = concat()
    pg = analyze(m)
    assert pg.group(layer(m, "A").index) is not pg.group(layer(m, "Bc").index)
    pm, rep, _ = check_live(m, [("A", 1), ("Bc", 3)], expect_layers={"A": [1], "Bc": [3]})
    assert weight_shape(pm, "C") == (4, 7, 3, 3)
    check_dead(concat(dead=True), [("A", 1), ("Bc", 3)])


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_follows_its_input(mult):
    m = depthwise(mult)
    pm, rep, pg = check_live(m, [("D", 2 * mult)])
    assert rep.removed[layer(m, "A").index] == [2]
    assert rep.removed[layer(m, "D").index] == [2 * mult + k for k in range(mult)]
    assert weight_shape(pm, "D") == (5 * mult, 1, 3, 3)
    conv = next(n for n in pm.graph.node if n.name == "D")
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "group")) == 5
    check_dead(depthwise(mult, dead=True), [("A", 2)])


def test_grouped_conv_keeps_groups_balanced():
    m = grouped()
    pm, rep, _ = check_live(m, [("A", 1)], expect_layers={"A": [1, 5]})
    assert weight_shape(pm, "G") == (6, 3, 3, 3)
    pm, rep, _ = check_live(m, [("G", 0)], expect_layers={"G": [0, 3]})
    assert weight_shape(pm, "G") == (4, 4, 3, 3) and weight_shape(pm, "C") == (4, 4, 3, 3)
    check_dead(grouped(dead=True), [("A", 5)])


@pytest.mark.parametrize("reshape", [False, True])
def test_conv_flatten_gemm_row_blocks(reshape):
    m = flatten_gemm(reshape=reshape)
    pm, rep, _ = check_live(m, [("A", 2)])
    assert weight_shape(pm, next(n.name for n in pm.graph.node if n.op_type == "Gemm")) == (3, 48)
    check_dead(flatten_gemm(dead=True, reshape=reshape), [("A", 2)])


def test_gap_flatten_gemm_and_matmul():
    pm, rep, _ = check_live(residual(), [("C", 1)])
    assert weight_shape(pm, next(n.name for n in pm.graph.node if n.op_type == "Gemm")) == (3, 3)
    pm, rep, _ = check_live(gap_matmul(), [("A", 0), ("A", 3)])
    assert weight_shape(pm, next(n.name for n in pm.graph.node if n.op_type == "MatMul")) == (3, 3)
    check_dead(gap_matmul(dead=True), [("A", 0)])


@pytest.mark.parametrize("constants", [False, True])
def test_bn_and_affine_constants_follow(constants):
    m = affine(constants=constants)
    pm, rep, _ = check_live(m, [("A", 1), ("M", 3), ("P", 2)])
    assert weight_shape(pm, "M") == (4, 3, 3, 3) and weight_shape(pm, "P") == (3, 4, 3, 3)
    shapes = {t.name: tuple(t.dims) for t in pm.graph.initializer}
    shapes.update({n.output[0]: tuple(n.attribute[0].t.dims) for n in pm.graph.node if n.op_type == "Constant"})
    assert shapes["bnA.scale"] == (3,) and shapes["M.t"] == (1, 4, 1, 1)
    check_dead(affine(dead=True, constants=constants), [("A", 1), ("M", 3), ("P", 2)])


def test_tf2onnx_transposed_weights():
    m = tf2onnx_weights()
    pm, rep, _ = check_live(m, [("A", 0), ("A", 4)])
    c = next(n for n in pm.graph.node if n.name == "C")
    w = next(t for t in pm.graph.initializer if t.name == c.input[1])
    assert tuple(w.dims) == (4, 4, 1, 1)  # written as the conv sees it; the Transpose is gone
    assert not any(n.op_type == "Transpose" and n.input[0] == "C.hwio" for n in pm.graph.node)


def test_dynamo_head_allowzero_reshape_and_weight_value_info():
    m = dynamo_head()
    pm, rep, _ = check_live(m, [("C", 1), ("C", 3)], expect_layers={"C": [1, 3]})
    reshape = next(n for n in pm.graph.node if n.op_type == "Reshape")
    assert helper.get_attribute_value(next(a for a in reshape.attribute if a.name == "allowzero")) == 0
    declared = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in pm.graph.value_info}
    assert declared.get("C.w", [2, 5, 3, 3]) == [2, 5, 3, 3]  # dropped or right, never the old (4, 5, 3, 3)
    assert weight_shape(pm, next(n.name for n in pm.graph.node if n.op_type == "Gemm")) == (3, 2)
    check_live(m, [("A", 0)])
    m0 = dynamo_head(target=(0, 4))  # a literal 0 with allowzero=1 is not a batch copy: left alone
    assert "allowzero" in analyze(m0).group(layer(m0, "C").index).reason


def test_initializers_listed_as_inputs_get_their_new_shape():
    m = initializers_as_inputs()
    pm, rep, _ = check_live(m, [("B", 2), ("B", 4)], expect_layers={"A": [2, 4], "B": [2, 4]})
    inputs = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in pm.graph.input}
    assert inputs["A.w"] == [4, 3, 3, 3] and inputs["bnB.scale"] == [4]


def test_se_block_hardswish_pad_clip_hardsigmoid_mul():
    m = se_block()
    pg = analyze(m)
    g = pg.group(layer(m, "D").index)
    assert g is pg.group(layer(m, "A").index) is pg.group(layer(m, "S2").index) and g.prunable
    assert "coupled through Mul" in g.how[0] and "depthwise" in g.how
    pm, rep, _ = check_live(m, [("D", 1), ("D", 4)], expect_layers={"A": [1, 4], "D": [1, 4], "S2": [1, 4]})
    assert weight_shape(pm, "S1") == (3, 4, 1, 1) and weight_shape(pm, "C") == (4, 4, 1, 1)
    check_live(m, [("S1", 2)], expect_layers={"S1": [2]})
    check_dead(se_block(dead=True), [("A", 4)])


# --------------------------------------------------------------------------- Split, Slice, Gather, channel shuffle


def widths(model, op):
    """Channel widths of the outputs of every ``op`` node, in graph order (from shape inference)."""
    dims = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.value_info
    }
    return [dims[o][1] for n in model.graph.node if n.op_type == op for o in n.output]


def roots_of(pg, model, name, units):
    return [int(pg.layer_roots[layer(model, name).index][u]) for u in units]


C2F_FORMS = [
    ("sizes", 17),
    ("sizes", 11),
    ("num_outputs", 18),
    ("equal", 13),
    ("slice", 17),
    ("slice-neg", 13),
    ("slice-attr", 9),
    ("torch", 17),
]


@pytest.mark.parametrize("form, opset", C2F_FORMS)
def test_c2f_split_halves_prune_independently(form, opset):
    m = c2f(form, opset)
    op = "Slice" if form.startswith("slice") or form == "torch" else "Split"
    assert widths(m, op) == ([0, 0] if form == "torch" else [4, 4])  # shape inference cannot follow torch's Div
    pg = analyze(m)
    g = pg.group(layer(m, "cv1").index)
    assert g.prunable and g is pg.group(layer(m, "m2").index) and op in g.how
    # a channel of the first half: only cv1 loses it, the first part shrinks, the bottleneck is untouched
    pm, _, _ = check_live(m, [("cv1", 1)], expect_layers={"cv1": [1]})
    assert widths(pm, op) == [3, 4]
    assert weight_shape(pm, "cv1") == (7, 3, 1, 1) and weight_shape(pm, "cv2") == (6, 11, 1, 1)
    assert weight_shape(pm, "m1") == (4, 4, 3, 3)
    # a channel of the second half goes with the bottleneck output it is added to
    pm, _, _ = check_live(m, [("cv1", 6)], expect_layers={"cv1": [6], "m2": [2]})
    assert widths(pm, op) == [4, 3]
    assert weight_shape(pm, "m1") == (4, 3, 3, 3) and weight_shape(pm, "cv2") == (6, 10, 1, 1)
    # both halves at once: the producer loses exactly the union
    pm, _, _ = check_live(m, [("cv1", 1), ("cv1", 2), ("m2", 0)], expect_layers={"cv1": [1, 2, 4], "m2": [0]})
    assert widths(pm, op) == [2, 3] and weight_shape(pm, "cv1") == (5, 3, 1, 1)
    check_dead(c2f(form, opset, dead=True), [("cv1", 1), ("cv1", 6)])
    with pytest.raises(OnnxFeError, match="every channel of"):  # a half never loses all its channels
        pg.apply(roots_of(pg, m, "cv1", [0, 1, 2, 3]))


def test_split_sizes_are_new_constants():
    m = c2f("sizes", 17)
    pm, _, _ = prune_units(m, [("cv1", 1)])
    name = next(n for n in m.graph.node if n.op_type == "Split").input[1]
    split = next(n for n in pm.graph.node if n.op_type == "Split")
    sizes = next(t for t in pm.graph.initializer if t.name == split.input[1])
    assert split.input[1] != name and numpy_helper.to_array(sizes).tolist() == [3, 4]
    assert numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == name)).tolist() == [4, 4]


@pytest.mark.parametrize("form, opset", [("sizes", 17), ("slice", 13), ("sizes", 11), ("torch", 17)])
def test_shufflenet_units_couple_the_shuffled_columns(form, opset):
    m = shufflenet_stage(form, opset)
    pg = analyze(m)
    g = pg.group(layer(m, "b1pw").index)
    assert g.prunable and "channel shuffle" in g.how
    assert {find_units(m)[i].name for i in g.layers} == {"b1pw", "b2pw2", "u2pw2"}
    # position 1 of both branches of the stride-2 unit is one column of its shuffle; after the shuffle it lies in
    # the first half of the stride-1 unit, whose shuffle couples it with that unit's branch outputs 2 and 3
    pm, _, _ = check_live(m, [("b1pw", 1)], expect_layers={"b1pw": [1], "b2pw2": [1], "u2pw2": [2, 3]})
    assert widths(pm, "Reshape") == [2, 6, 2, 4]  # every group keeps the same width, the targets follow
    assert weight_shape(pm, "u2pw2") == (2, 4, 1, 1) and weight_shape(pm, "C") == (6, 4, 1, 1)
    assert weight_shape(pm, "b1dw") == (8, 1, 3, 3) and weight_shape(pm, "u2pw1") == (4, 4, 1, 1)
    # column 3 goes to the stride-1 unit's second half: its branch reads two channels fewer, C is untouched
    pm, _, _ = check_live(m, [("b2pw2", 3)], expect_layers={"b1pw": [3], "b2pw2": [3]})
    # (the second shuffle's computed targets of the torch form stay as they are: shape inference cannot follow Div)
    assert widths(pm, "Reshape")[: 2 if form == "torch" else 4] == [2, 6, 2, 8][: 2 if form == "torch" else 4]
    assert weight_shape(pm, "u2pw1") == (4, 2, 1, 1) and weight_shape(pm, "C") == (6, 8, 1, 1)
    # a branch conv of the stride-1 unit alone, and the depthwise groups around the shuffle
    check_live(m, [("u2pw1", 2)], expect_layers={"u2pw1": [2], "u2dw": [2]})
    check_live(m, [("A", 5)], expect_layers={"A": [5], "b1dw": [5]})
    check_dead(shufflenet_stage(form, opset, dead=True), [("b1pw", 1)])


def test_gather_selects_permutes_and_repeats_channels():
    m = gather_channels()
    pg = analyze(m)
    assert pg.group(layer(m, "A").index).prunable
    pm, _, _ = check_live(m, [("A", 3)], expect_layers={"A": [3]})  # taken twice: both go
    gather = next(n for n in pm.graph.node if n.op_type == "Gather")
    idx = next(t for t in pm.graph.initializer if t.name == gather.input[1])
    assert numpy_helper.to_array(idx).tolist() == [4, 0, 1]
    assert weight_shape(pm, "C") == (4, 3, 3, 3)
    check_live(m, [("A", 0), ("A", 5)])
    pm, rep = check_dead(gather_channels(dead=True), [("A", 3)])
    # channels 2 and 4 are not gathered: removing them changes nothing, and the indices follow
    pm, rep = check_dead(m, [("A", 2), ("A", 4)])
    gather = next(n for n in pm.graph.node if n.op_type == "Gather")
    idx = next(t for t in pm.graph.initializer if t.name == gather.input[1])
    assert numpy_helper.to_array(idx).tolist() == [3, 0, 2, 2, 1]


def test_ratio_keeps_a_channel_in_every_split_part_and_verify_agrees(tmp_path):
    import onnx_fe
    from onnx_fe.scores.ranking import LayerRanking, Ranking

    m = c2f("sizes", 17)
    p = tmp_path / "c2f.onnx"
    onnx.save(m, p)
    layers = []
    for u in find_units(m):
        n = weight_shape(m, u.name)[0]
        score = np.arange(n, 0, -1, dtype=float)
        if u.name == "cv1":
            score[:4] = -np.arange(1, 5)  # the whole first half last
        layers.append(LayerRanking(layer=u.name, layer_index=u.index, score=score, order=np.argsort(-score)))
    rk, _ = Ranking(by="weight_l1", layers=layers).save(tmp_path / "rank.csv")
    r = onnx_fe.prune(p, tmp_path / "small.onnx", ranking=rk, ratio=0.6, verify=True, latency_runs=0)
    assert r.max_diff is not None and r.max_diff <= TOL
    # cv1's group (8 classes) loses round(4.8) = 5: units 3, 2, 1 of the first half (unit 0 must stay), then the
    # lowest of the second half
    removed = sorted(r.removed[layer(m, "cv1").index])
    assert len(removed) == 5 and removed[:3] == [1, 2, 3] and min(removed[3:]) >= 4
    assert widths(onnx.load(tmp_path / "small.onnx"), "Split") == [1, 2]
    r = onnx_fe.prune(p, tmp_path / "g.onnx", ranking=rk, global_ratio=0.7, verify=True, latency_runs=0)
    assert r.max_diff <= TOL and min(widths(onnx.load(tmp_path / "g.onnx"), "Split")) >= 1


@pytest.mark.parametrize(
    "build, units",
    [
        (lambda: c2f("sizes", 11), "0:1,0:6"),
        (lambda: c2f("torch", 17), "0:2,0:5"),
        (lambda: shufflenet_stage("torch", 17), "4:1,4:3,6:0"),
        (lambda: shufflenet_stage("slice", 13), "4:0,8:1"),
        (gather_channels, "0:0,0:3"),
    ],
)
def test_verify_equals_masking(tmp_path, build, units):
    import onnx_fe

    p = tmp_path / "m.onnx"
    onnx.save(build(), p)
    r = onnx_fe.prune(p, tmp_path / "small.onnx", units=units, verify=True, latency_runs=0)
    assert r.max_diff is not None and r.max_diff <= TOL and r.max_output > 0.01
    assert r.n_removed > len(units.split(",")) - 1 and not r.inexact
    onnx.checker.check_model(str(tmp_path / "small.onnx"), full_check=True)


def test_a_reshape_that_adds_a_unit_dim_is_no_shuffle():
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 6)])
    r = b.op("Reshape", [a, b.const("shape", np.asarray([0, 6, 1, 8, 8]))])
    r = b.op("Reshape", [b.op("Relu", [r]), b.const("back", np.asarray([0, 6, 8, 8]))])
    m = b.model(b.head(b.op("Relu", [b.conv(r, "C", 6, 4)]), 4))
    pg = analyze(m)
    assert pg.group(layer(m, "A").index).how == []  # nothing coupled: each channel alone
    check_live(m, [("A", 2), ("A", 4)], expect_layers={"A": [2, 4]})


def test_unfollowed_channel_splits_say_why():
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 8)])
    s = b.op(
        "Slice",
        [a] + [b.const(k, np.asarray([v])) for k, v in (("st", 0), ("en", 8), ("ax", 1), ("step", 2))],
    )
    c = b.op("Relu", [b.conv(s, "C", 4, 4)])
    r = b.op("Reshape", [c, b.const("shape", np.asarray([0, 2, 2, 8, 8]))])
    r = b.op("ReduceMean", [r], axes=[1], keepdims=0)  # groups read by something else
    m = b.model(b.head(b.op("Relu", [b.conv(r, "D", 2, 4)]), 4))
    pg = analyze(m)
    assert "step 2" in pg.group(layer(m, "A").index).reason
    assert "split into groups" in pg.group(layer(m, "C").index).reason
    assert pg.group(layer(m, "D").index).prunable


# --------------------------------------------------------------------------- folding and refusals


def test_constant_of_removed_channel_folded_into_bias():
    x = inputs()
    m = fold(pad=0)
    pm, rep, _ = prune_units(m, [("A", 1)])
    assert rep.folds and rep.inexact == []
    assert np.abs(masked_run(m, rep, x) - run(pm, {"x": x})).max() < TOL
    m = fold(pad=1)
    pm, rep, _ = prune_units(m, [("A", 1)])
    assert rep.folds and any("border" in s for s in rep.inexact)
    assert np.abs(masked_run(m, rep, x) - run(pm, {"x": x})).max() > 1e-4  # reported, and really inexact


def test_unprunable_groups_say_why():
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 4)])
    sm = b.op("Softmax", [a], axis=1)  # over the channels
    c = b.op("Relu", [b.conv(sm, "C", 4, 6)])
    r = b.op("Reshape", [c, b.const("shape", np.asarray([0, 3, -1]))])  # mixes channels and pixels
    m = b.model(r, rank=3)
    pg = analyze(m)
    assert "channel axis" in pg.group(layer(m, "A").index).reason
    assert "mixes" in pg.group(layer(m, "C").index).reason
    with pytest.raises(OnnxFeError, match="cannot be pruned"):
        pg.apply([int(pg.layer_roots[layer(m, "A").index][0])])
    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 4)])
    m = b.model(a, rank=4)  # the tap is the graph output
    assert "graph output" in analyze(m).group(0).reason


def test_removing_every_unit_of_a_layer_is_refused():
    m = residual()
    pg = analyze(m)
    with pytest.raises(OnnxFeError, match="every unit"):
        pg.apply(list(pg.layer_roots[layer(m, "C").index]))
