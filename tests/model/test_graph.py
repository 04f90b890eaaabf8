"""Graph rewrite: the unit taps on every exporter style, checked against onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import G, simple_cnn

from onnx_fe.errors import OnnxFeError
from onnx_fe.model.graph import expose, find_units, load_model, select_units


def run(model, names, x):
    m = expose(model, names)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, s.run(names, {"image": x})))


def one_block(act, norm=None, **kw):
    g = G((None, 3, 12, 12), **kw)
    conv_out = g.conv(5, bias=norm is None, name="c")
    if norm == "bn":
        g.bn()
    elif norm == "affine":
        g.affine()
    elif norm == "bias_add":
        g.bias_add()
    if act:
        g.act(act)
    tap = g.cur
    g.head()
    return g.model(), conv_out, tap


X = np.random.default_rng(1).normal(size=(2, 3, 12, 12)).astype(np.float32)

ACTS = {
    "relu": lambda z: np.maximum(z, 0),
    "relu6": lambda z: np.clip(z, 0, 6),
    "leaky": lambda z: np.where(z > 0, z, 0.1 * z),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "hardswish": lambda z: z * np.clip(z + 3, 0, 6) / 6,
    "hardswish_decomposed": lambda z: z * np.clip(z + 3, 0, 6) / 6,
    "prelu": lambda z: np.where(z > 0, z, 0.2 * z),
    "tanh": np.tanh,
}


@pytest.mark.parametrize("act", list(ACTS))
def test_activation_chains_end_after_the_activation(act):
    model, conv_out, tap = one_block(act)
    (u,) = find_units(model)
    assert u.tap == tap, u.chain
    assert u.chain[0] == "Conv" and len(u.chain) >= 2
    got = run(model, [conv_out, u.tap], X)
    np.testing.assert_allclose(got[u.tap], ACTS[act](got[conv_out].astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "norm,chain",
    [
        ("bn", ["Conv", "BatchNormalization", "Relu"]),  # PyTorch, BN not folded
        ("affine", ["Conv", "Mul", "Add", "Relu"]),  # TF/Keras: BN folded into Mul/Add
        ("bias_add", ["Conv", "Add", "Relu"]),  # bias as a separate Add
    ],
)
def test_normalisation_styles(norm, chain):
    model, _, tap = one_block("relu", norm=norm)
    (u,) = find_units(model)
    assert u.chain == chain and u.tap == tap


def test_paddle_style_constant_weights_and_tf_style_nhwc_transpose():
    g = G((None, 3, 12, 12), weights_as_constants=True, nhwc_input=True)
    g.conv(4, name="c1")
    g.affine()
    g.act("relu6")
    tap1 = g.cur
    g.conv(4, name="c2")
    g.act("relu")
    tap2 = g.cur
    g.head()
    model = g.model()
    u1, u2 = find_units(model)
    assert (u1.tap, u2.tap) == (tap1, tap2)
    assert u1.chain == ["Conv", "Mul", "Add", "Clip"]
    got = run(model, [u1.tap], X.transpose(0, 2, 3, 1).copy())
    assert got[u1.tap].shape == (2, 4, 12, 12) and got[u1.tap].min() >= 0 and got[u1.tap].max() <= 6


def test_chain_stops_at_residual_add_and_branch_points():
    g = G((None, 3, 12, 12))
    g.conv(4, name="stem")
    g.act("relu")
    skip = g.cur
    g.conv(4, name="a")
    g.bn()
    g.act("relu")
    g.conv(4, name="b", bias=False)
    g.bn()
    b_tap = g.cur
    g.cur = g.node("Add", [g.cur, skip])  # residual: two data inputs
    g.act("relu")
    g.head()
    units = find_units(g.model())
    assert [u.name for u in units] == ["stem", "a", "b"]
    # stem's ReLU output feeds two consumers (conv a and the residual Add): the chain ends there
    assert units[0].chain == ["Conv", "Relu"]
    assert units[2].tap == b_tap and units[2].chain == ["Conv", "BatchNormalization"]


def test_conv_output_with_two_consumers_is_tapped_raw():
    g = G((None, 3, 12, 12))
    c = g.conv(4, name="c")
    r = g.node("Relu", [c])
    s = g.node("Sigmoid", [c])
    g.cur = g.node("Add", [r, s])
    g.head()
    (u,) = find_units(g.model())
    assert u.tap == c and u.chain == ["Conv"]


def test_unnamed_conv_takes_its_output_name_and_indices_follow_graph_order():
    g = G((None, 3, 12, 12))
    g.conv(4, name="")
    first = g.cur
    g.act("relu")
    g.conv(4, name="named")
    g.act("relu")
    g.head()
    units = find_units(g.model())
    assert units[0].name == first and units[1].name == "named"
    assert [u.index for u in units] == [0, 1]


def test_layer_selection_by_index_name_and_glob(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(simple_cnn(), p)
    lm = load_model(p)
    for u in lm.units:
        u.height = u.width = 4
    assert [u.index for u in select_units(lm.units, ["0,conv3"])] == [0, 2]
    assert [u.index for u in select_units(lm.units, ["conv[12]"])] == [0, 1]
    assert [u.index for u in select_units(lm.units, ["2", "conv*"])] == [0, 1, 2]
    with pytest.raises(OnnxFeError, match="matches no Conv"):
        select_units(lm.units, ["nope*"])
    lm.units[1].reason = "1×1 output (no spatial map)"
    assert [u.index for u in select_units(lm.units, None)] == [0, 2]
    with pytest.raises(OnnxFeError, match="not scorable"):
        select_units(lm.units, ["1"])


def test_external_data_model_loads_and_hashes_side_file(tmp_path):
    m = simple_cnn()
    p = tmp_path / "ext.onnx"
    onnx.save(
        m, p, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0
    )
    assert (tmp_path / "ext.onnx.data").exists()
    lm = load_model(p)
    assert len(lm.units) == 3
    assert all(len(t.raw_data) or t.float_data for t in lm.model.graph.initializer)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(OnnxFeError, match="external weights file missing"):
        load_model(p)
