"""Issue 11, model side: fixed batch sizes, whole onnxruntime messages, quantized and nested convs, integer
inputs, the API's layer selection, and Ctrl-C while onnxruntime is imported."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import OPSET, G, simple_cnn
from onnx import TensorProto, helper, numpy_helper

from onnx_fe.errors import OnnxFeError
from onnx_fe.model.graph import load_model, require_units, select_units
from onnx_fe.model.runner import make_runner, ort_message, probe_shapes

ROOT = Path(__file__).resolve().parents[2]


def _save(m, path):
    onnx.save(m, path)
    return path


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# --------------------------------------------------------------------------- fixed batch


@pytest.mark.parametrize("batch", [1, 2])
def test_a_fixed_batch_is_read_and_any_number_of_images_runs(tmp_path, batch):
    lm = load_model(_save(simple_cnn(in_shape=(batch, 3, 16, 16)), tmp_path / "fixed.onnx"))
    assert lm.fixed_batch == batch
    runner = make_runner(lm, lm.units, device="cpu")
    assert runner.fixed_batch == batch
    x = np.random.default_rng(0).random((5, 3, 16, 16)).astype(np.float32)
    outs = runner.run(x)  # 5 images through a model that takes exactly `batch` at a time
    one_by_one = [runner.run(x[i : i + 1]) for i in range(5)]
    for k, o in enumerate(outs):
        assert o.shape[0] == 5
        np.testing.assert_array_equal(o, np.concatenate([r[k] for r in one_by_one]))
    assert load_model(_save(simple_cnn(), tmp_path / "dyn.onnx")).fixed_batch is None


def test_onnxruntime_messages_are_kept_whole_on_one_line(tmp_path):
    lm = load_model(_save(simple_cnn(in_shape=(None, 3, 16, 16)), tmp_path / "m.onnx"))
    runner = make_runner(lm, lm.units, device="cpu")
    with pytest.raises(OnnxFeError) as e:
        probe_shapes(runner, lm.units, np.zeros((1, 3, 8, 8), np.float32))
    msg = _one_line(e)
    assert "Got: 8 Expected: 16" in msg  # onnxruntime gives the reason on its second line
    try:
        runner.session.run(runner.outputs, {"image": np.zeros((2, 3, 8, 8), np.float32)})
    except Exception as ex:
        raw = str(ex)
    assert "\n" in raw and ort_message(Exception(raw)) == " ".join(raw.split())


# --------------------------------------------------------------------------- convs that are not layers


def _qlinear_model(extra_float_conv=False):
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [None, 2, 6, 6])
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.ones((2, 1, 3, 3), np.uint8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.uint8), "wz"),
        numpy_helper.from_array(np.array(0.1, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["q"], name="qconv"),
        helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["ci"], name="iconv"),
        helper.make_node("Cast", ["ci"], ["cif"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["q"], ["y"]),
    ]
    outs = [y, helper.make_tensor_value_info("cif", TensorProto.FLOAT, [None, 2, 6, 6])]
    if extra_float_conv:
        inits.append(numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "wf"))
        nodes += [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Conv", ["xf", "wf"], ["c"], name="fconv", pads=[1, 1, 1, 1]),
        ]
        outs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, 2, 8, 8]))
    g = helper.make_graph(nodes, "q", [x], outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_quantized_convs_are_said_to_be_unsupported_not_absent(tmp_path):
    lm = load_model(_save(_qlinear_model(), tmp_path / "q.onnx"))
    assert lm.units == []
    assert any("QLinearConv" in s and "not supported" in s for s in lm.skipped)
    assert any("ConvInteger" in s for s in lm.skipped)
    with pytest.raises(OnnxFeError) as e:
        require_units(lm)
    msg = _one_line(e)
    assert "quantized" in msg and "QLinearConv" in msg and "has no Conv node" not in msg
    mixed = load_model(_save(_qlinear_model(extra_float_conv=True), tmp_path / "mixed.onnx"))
    assert [u.name for u in mixed.units] == ["fconv"] and len(mixed.skipped) == 2
    require_units(mixed)  # the float conv is scored; the quantized ones are reported


def _conv_branch(name, c_in=3):
    w = numpy_helper.from_array(np.ones((2, c_in, 3, 3), np.float32), f"{name}_w")
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
    n = helper.make_node("Conv", ["image", f"{name}_w"], [f"{name}_out"], name=name, pads=[1, 1, 1, 1])
    return helper.make_graph([n], f"{name}_g", [], [out], initializer=[w])


def _if_model(with_top_conv=False):
    g = G((None, 3, 8, 8))
    cond = "cond"
    g.inits.append(numpy_helper.from_array(np.array(True), cond))
    g.nodes.append(
        helper.make_node(
            "If",
            [cond],
            ["branch_out"],
            name="choose",
            then_branch=_conv_branch("then_conv"),
            else_branch=_conv_branch("else_conv"),
        )
    )
    g.cur = "branch_out"
    if with_top_conv:
        g.c = 2
        g.conv(4, name="top")
    out = helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, None)
    graph = helper.make_graph(g.nodes, "g", [g.input], [out], initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def test_convs_inside_if_subgraphs_are_reported_as_skipped(tmp_path):
    m = _if_model()
    lm = load_model(_save(m, tmp_path / "if.onnx"))
    assert lm.units == []
    assert lm.skipped and "If 'choose'" in lm.skipped[0] and "2 Conv nodes" in lm.skipped[0]
    with pytest.raises(OnnxFeError) as e:
        require_units(lm)
    msg = _one_line(e)
    assert "If/Loop/Scan" in msg and "If 'choose'" in msg
    both = load_model(_save(_if_model(with_top_conv=True), tmp_path / "top.onnx"))
    assert [u.name for u in both.units] == ["top"] and len(both.skipped) == 1
    # the model runs: the skipped convs are really there, only not tappable
    runner = make_runner(both, both.units, device="cpu")
    assert runner.run(np.zeros((1, 3, 8, 8), np.float32))[0].shape == (1, 4, 8, 8)


# --------------------------------------------------------------------------- integer inputs


def _uint8_model():
    g = G((None, 1, 8, 8))
    g.input = helper.make_tensor_value_info("image", TensorProto.UINT8, [None, 1, 8, 8])
    g.cur = g.node("Cast", ["image"], to=TensorProto.FLOAT)
    g.conv(2, name="c")
    out = helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, None)
    graph = helper.make_graph(g.nodes, "g", [g.input], [out], initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def test_an_integer_input_gets_exact_values_and_never_wraps(tmp_path):
    lm = load_model(_save(_uint8_model(), tmp_path / "u8.onnx"))
    assert lm.input_elem_type == TensorProto.UINT8
    runner = make_runner(lm, lm.units, device="cpu", keep_outputs=True)
    assert runner.input_dtype == np.uint8
    px = np.full((1, 1, 8, 8), 200.0, np.float32)
    a = runner.run(px)[0]
    b = runner.run(px.astype(np.uint8))[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(OnnxFeError, match=r"uint8 input \(0\.\.255\)"):
        runner.run(px + 100)  # 300 would wrap to 44


# --------------------------------------------------------------------------- API: what the CLI accepts


@pytest.mark.parametrize("layers,want", [([0], [0]), (0, [0]), ([0, "conv3"], [0, 2]), ([2, "0"], [0, 2])])
def test_layers_given_as_ints_select_as_their_strings_do(tmp_path, layers, want):
    lm = load_model(_save(simple_cnn(), tmp_path / "m.onnx"))
    probe_shapes(make_runner(lm, lm.units, device="cpu"), lm.units, np.zeros((1, 3, 16, 16), np.float32))
    assert [u.index for u in select_units(lm.units, layers)] == want
    assert [u.index for u in select_units(lm.units, [",".join(map(str, want))])] == want


# --------------------------------------------------------------------------- Ctrl-C during the import

_HOOK = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, os, signal, sys, time, types

    class Interrupted(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # stands for onnxruntime's native module, which turns a SIGINT during its initialisation into ImportError
        def find_spec(self, name, path, target=None):
            return importlib.machinery.ModuleSpec(name, self) if name == "onnxruntime" else None
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None
            module.InferenceSession = object

    sys.meta_path.insert(0, Interrupted())
    # as in an interactive shell, whatever the test runner inherited (a background job ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from onnx_fe.model.runner import import_onnxruntime
    try:
        import_onnxruntime()
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    except ImportError as e:
        print("ImportError", e)
    """
)


def test_ctrl_c_while_onnxruntime_is_imported_is_an_interrupt_not_an_import_error():
    r = subprocess.run(
        [sys.executable, "-c", _HOOK], capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)}
    )
    assert r.stdout.strip() == "KeyboardInterrupt", (r.stdout, r.stderr)
