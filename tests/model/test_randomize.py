"""randomize: the untrained twin of an ONNX model (issue 10, item 4)."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import G, simple_cnn
from onnx import TensorProto, helper, numpy_helper

from onnx_fe import OnnxFeError
from onnx_fe.cli import main
from onnx_fe.model.randomize import randomize, randomize_model

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models/digits_vgg/converged/model.onnx"
DIGITS_KERAS = ROOT / "models/digits_vgg/converged/model_keras.onnx"
RESNET = ROOT / "models/shapes_resnet/converged/model.onnx"


def sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def nodes(m):
    return [(n.op_type, n.name, list(n.input), list(n.output)) for n in m.graph.node]


def inits(m):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def stored(m, name):
    """The initializer behind `name`, following Identity nodes (PyTorch dedups equal tensors that way)."""
    vals = inits(m)
    prod = {n.output[0]: n for n in m.graph.node}
    while name not in vals:
        assert prod[name].op_type == "Identity"
        name = prod[name].input[0]
    return vals[name]


def constants(m):
    return {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant"}


def run(m, shape, seed=0):
    s = ort.InferenceSession(
        m.SerializeToString() if isinstance(m, onnx.ModelProto) else str(m), providers=["CPUExecutionProvider"]
    )
    i = s.get_inputs()[0]
    return s.run(None, {i.name: np.random.default_rng(seed).random(shape, dtype=np.float32)})[0]


def he_std(w):
    return np.sqrt(2.0 / np.prod(w.shape[1:]))


def assert_he(w, rtol):
    """Sample std within rtol of the He std, mean near zero."""
    std = he_std(w)
    assert abs(w.std() / std - 1) < rtol, (w.shape, w.std(), std)
    assert abs(w.mean()) < 4 * std / np.sqrt(w.size)


# --------------------------------------------------------------------------- the zoo's PyTorch export


@pytest.fixture(scope="module")
def digits_twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin") / "twin.onnx"
    rep = randomize(DIGITS, out, seed=0)
    return out, rep


def test_twin_of_digits_vgg_same_graph_new_weights(digits_twin):
    out, rep = digits_twin
    src, twin = onnx.load(DIGITS), onnx.load(out)
    assert nodes(twin) == nodes(src)
    assert [i.name for i in twin.graph.input] == [i.name for i in src.graph.input]
    assert [o.name for o in twin.graph.output] == [o.name for o in src.graph.output]
    a, b = inits(src), inits(twin)
    assert a.keys() == b.keys()
    convs = [n for n in twin.graph.node if n.op_type == "Conv"]
    assert (rep.convs, rep.convs_randomized, rep.weight_tensors, rep.biases_zeroed) == (4, 4, 4, 4)
    assert not rep.skipped
    for n in convs:
        w, bias = b[n.input[1]], b[n.input[2]]
        assert w.shape == a[n.input[1]].shape and w.dtype == np.float32
        assert not np.allclose(w, a[n.input[1]])
        assert (bias == 0).all()
        if w.size >= 4096:  # the big layers: 32×16×3×3 and up
            assert_he(w, rtol=0.04)
    # everything that is not a conv parameter is untouched (the Gemm head)
    conv_params = {i for n in convs for i in n.input[1:]}
    for k in a.keys() - conv_params:
        np.testing.assert_array_equal(a[k], b[k])
    meta = {p.key: p.value for p in twin.metadata_props}
    assert '"seed": 0' in meta["onnx_fe.randomize"]


def test_same_seed_bit_identical_other_seed_differs(digits_twin, tmp_path):
    out, _ = digits_twin
    randomize(DIGITS, tmp_path / "again.onnx", seed=0)
    randomize(DIGITS, tmp_path / "other.onnx", seed=1)
    assert sha(tmp_path / "again.onnx") == sha(out)
    assert sha(tmp_path / "other.onnx") != sha(out)
    w0, w1 = inits(onnx.load(out)), inits(onnx.load(tmp_path / "other.onnx"))
    assert not np.allclose(w0["3.weight"], w1["3.weight"])


def test_twin_runs_with_finite_outputs(digits_twin):
    out, _ = digits_twin
    y = run(out, (4, 1, 32, 32))
    assert y.shape == (4, 10) and np.isfinite(y).all() and y.std() > 0


def test_draw_depends_on_tensor_name_not_order():
    """Reversing the node order (still a valid graph for this check) leaves each draw as it was."""
    m = onnx.load(DIGITS)
    t1, _ = randomize_model(m, 5)
    rev = onnx.ModelProto()
    rev.CopyFrom(m)
    del rev.graph.node[:]
    rev.graph.node.extend(reversed(m.graph.node))
    del rev.graph.initializer[:]
    rev.graph.initializer.extend(reversed(m.graph.initializer))
    t2, _ = randomize_model(rev, 5)
    a, b = inits(t1), inits(t2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_input_model_is_not_modified():
    m = onnx.load(DIGITS)
    before = m.SerializeToString()
    randomize_model(m, 0)
    assert m.SerializeToString() == before


def test_batchnorm_reset_to_identity(tmp_path):
    out = tmp_path / "t.onnx"
    rep = randomize(RESNET, out, seed=3)
    src, twin = onnx.load(RESNET), onnx.load(out)
    assert nodes(twin) == nodes(src)
    assert rep.batchnorms == rep.batchnorms_reset == 12 and rep.convs_randomized == 12
    for n in twin.graph.node:
        if n.op_type == "BatchNormalization":
            scale, bias, mean, var = (stored(twin, i) for i in n.input[1:5])
            assert (scale == 1).all() and (bias == 0).all() and (mean == 0).all() and (var == 1).all()
    assert np.isfinite(run(out, (2, 3, 64, 64))).all()


# --------------------------------------------------------------------------- exporter styles


def test_keras_export_of_digits_vgg(tmp_path):
    out = tmp_path / "k.onnx"
    rep = randomize(DIGITS_KERAS, out, seed=0)
    src, twin = onnx.load(DIGITS_KERAS), onnx.load(out)
    assert nodes(twin) == nodes(src)
    assert (rep.convs, rep.convs_randomized, rep.biases_zeroed) == (4, 4, 4)
    b = inits(twin)
    for n in twin.graph.node:
        if n.op_type == "Conv":
            assert (b[n.input[2]] == 0).all()
            if b[n.input[1]].size >= 4096:
                assert_he(b[n.input[1]], rtol=0.04)
    y = run(out, (2, 1, 32, 32))
    assert np.isfinite(y).all()


def tf2onnx_style(seed=0):
    """Weights stored HWIO and transposed to OIHW in the graph; a bias behind Identity+Cast(fp16 → fp32)."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 16, 3])
    nodes_, inits_ = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="in_t")], []
    cur, cin = "xt", 3
    for i, cout in enumerate([8, 16]):
        inits_.append(numpy_helper.from_array(rng.normal(0, 1, (3, 3, cin, cout)).astype(np.float32), f"k{i}_hwio"))
        inits_.append(numpy_helper.from_array(rng.normal(0, 1, cout).astype(np.float16), f"b{i}_h"))
        nodes_ += [
            helper.make_node("Transpose", [f"k{i}_hwio"], [f"k{i}"], perm=[3, 2, 0, 1], name=f"k{i}_t"),
            helper.make_node("Identity", [f"b{i}_h"], [f"b{i}_id"], name=f"b{i}_i"),
            helper.make_node("Cast", [f"b{i}_id"], [f"b{i}"], to=TensorProto.FLOAT, name=f"b{i}_c"),
            helper.make_node(
                "Conv", [cur, f"k{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4, name=f"conv{i}"
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        cur, cin = f"r{i}", cout
    y = helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)
    m = helper.make_model(
        helper.make_graph(nodes_, "tf", [x], [y], initializer=inits_), opset_imports=[helper.make_opsetid("", 17)]
    )
    m.ir_version = 8
    return m


def test_tf2onnx_transposed_weights_use_the_conv_fan_in():
    m = tf2onnx_style()
    twin, rep = randomize_model(m, 0)
    assert rep.convs_randomized == 2 and rep.biases_zeroed == 2 and not rep.skipped
    b = inits(twin)
    assert b["k1_hwio"].shape == (3, 3, 8, 16) and b["b1_h"].dtype == np.float16
    # the fan-in is that of the OIHW weight the conv sees: 8 × 3 × 3, not 3 × 8 × 16
    assert [d.fan_in for d in rep.draws] == [27, 72]
    assert abs(b["k1_hwio"].std() / np.sqrt(2 / 72) - 1) < 0.1
    assert (b["b0_h"] == 0).all() and (b["b1_h"] == 0).all()
    assert np.isfinite(run(twin, (2, 16, 16, 3))).all()


def test_paddle_style_constant_weights():
    m = simple_cnn(seed=1, weights_as_constants=True)
    assert not m.graph.initializer
    twin, rep = randomize_model(m, 0)
    assert nodes(twin)[0][0] == "Constant" and [n[0] for n in nodes(twin)] == [n[0] for n in nodes(m)]
    assert (rep.convs, rep.convs_randomized, rep.biases_zeroed) == (3, 3, 2)
    assert rep.batchnorms_reset == 1
    a, c = constants(m), constants(twin)
    for n in twin.graph.node:
        if n.op_type == "Conv":
            w = c[n.input[1]]
            assert w.shape == a[n.input[1]].shape and not np.allclose(w, a[n.input[1]])
            if len(n.input) > 2:
                assert (c[n.input[2]] == 0).all()
        if n.op_type == "BatchNormalization":
            assert [float(c[i].mean()) for i in n.input[1:5]] == [1.0, 0.0, 0.0, 1.0]
    assert np.isfinite(run(twin, (2, 3, 16, 16))).all()


def test_exporter_bias_add_and_folded_bn_affine_reset():
    g = G(seed=0)
    g.conv(4, bias=False, name="conv1")
    g.bias_add()
    g.act("relu")
    g.conv(6, bias=False, name="conv2")
    g.affine()
    g.act("hardswish_decomposed")
    g.head()
    m = g.model()
    twin, rep = randomize_model(m, 0)
    assert rep.convs_randomized == 2 and rep.affine_reset == 3 and rep.biases_zeroed == 0
    a, b = inits(m), inits(twin)
    consumer = {i: n for n in twin.graph.node for i in n.input}
    conv = {n.name: n for n in twin.graph.node}
    add1 = consumer[conv["conv1"].output[0]]
    mul2 = consumer[conv["conv2"].output[0]]
    add2 = consumer[mul2.output[0]]
    assert (add1.op_type, mul2.op_type, add2.op_type) == ("Add", "Mul", "Add")
    assert (b[add1.input[1]] == 0).all() and (b[add2.input[1]] == 0).all() and (b[mul2.input[1]] == 1).all()
    assert b[mul2.input[1]].shape == (1, 6, 1, 1)
    # the decomposed HardSwish's scalars (3, 0, 6) are not per-channel: kept
    for k, v in a.items():
        if v.size == 1:
            np.testing.assert_array_equal(b[k], v)
    assert np.isfinite(run(twin, (2, 3, 16, 16))).all()


def test_shared_weight_drawn_once_depthwise_fan_in():
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])
    w = numpy_helper.from_array(rng.normal(size=(8, 8, 3, 3)).astype(np.float32), "shared_w")
    dw = numpy_helper.from_array(rng.normal(size=(8, 1, 5, 5)).astype(np.float32), "dw_w")
    n = [
        helper.make_node("Conv", ["x", "shared_w"], ["a"], pads=[1] * 4, name="c1"),
        helper.make_node("Relu", ["a"], ["ar"], name="r1"),
        helper.make_node("Conv", ["ar", "shared_w"], ["b"], pads=[1] * 4, name="c2"),
        helper.make_node("Conv", ["b", "dw_w"], ["c"], pads=[2] * 4, group=8, name="dw"),
    ]
    m = helper.make_model(
        helper.make_graph(
            n, "s", [x], [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], initializer=[w, dw]
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    twin, rep = randomize_model(m, 0)
    assert rep.convs_randomized == 3 and rep.weight_tensors == 2
    assert len(twin.graph.initializer) == 2
    d = {x.tensor: x for x in rep.draws}
    assert d["shared_w"].convs == ["c1", "c2"] and d["shared_w"].fan_in == 72
    assert d["dw_w"].fan_in == 25  # in_channels / group × 5 × 5
    assert np.isfinite(run(twin, (1, 8, 12, 12))).all()


def test_computed_weight_skipped_with_a_note_and_convtranspose_kept():
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    inits_ = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w2raw"),
        numpy_helper.from_array(np.float32(2.0), "two"),
        numpy_helper.from_array(rng.normal(size=(4, 2, 2, 2)).astype(np.float32), "wt"),
    ]
    n = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4, name="plain"),
        helper.make_node("Mul", ["w2raw", "two"], ["w2"], name="scale_w"),
        helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1] * 4, name="computed"),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("ConvTranspose", ["c", "wt"], ["d"], strides=[2, 2], name="up"),
    ]
    m = helper.make_model(
        helper.make_graph(
            n, "c", [x], [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)], initializer=inits_
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    twin, rep = randomize_model(m, 0)
    assert rep.convs == 2 and rep.convs_randomized == 1 and rep.conv_transpose_kept == 1
    assert len(rep.skipped) == 1 and "computed" in rep.skipped[0] and "Mul" in rep.skipped[0]
    a, b = inits(m), inits(twin)
    np.testing.assert_array_equal(a["w2raw"], b["w2raw"])
    np.testing.assert_array_equal(a["wt"], b["wt"])
    assert not np.allclose(a["w1"], b["w1"])
    assert any("ConvTranspose" in line for line in rep.lines())


# --------------------------------------------------------------------------- external data


def test_external_data_model(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save_model(
        onnx.load(RESNET),
        src,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=1024,
    )
    out = tmp_path / "twin" / "ext_twin.onnx"
    rep = randomize(src, out, seed=0)
    assert rep.external_data == str(out.parent / "ext_twin.onnx.data")
    assert (out.parent / "ext_twin.onnx.data").stat().st_size > 100_000
    skeleton = onnx.load(out, load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in skeleton.graph.initializer)
    direct = tmp_path / "direct.onnx"
    randomize(RESNET, direct, seed=0)
    a, b = inits(onnx.load(out)), inits(onnx.load(direct))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # same twin, whatever the storage
    assert np.isfinite(run(out, (2, 3, 64, 64))).all()
    # rewriting over an existing twin does not append to its side file
    size = (out.parent / "ext_twin.onnx.data").stat().st_size
    data_sha = sha(out.parent / "ext_twin.onnx.data")
    randomize(src, out, seed=0)
    assert (out.parent / "ext_twin.onnx.data").stat().st_size == size
    assert sha(out.parent / "ext_twin.onnx.data") == data_sha


def test_external_twin_files_are_readable_like_the_model_and_never_half_written(tmp_path, monkeypatch):
    """The side file gets the .onnx file's permissions (onnx writes it 0600), and a write that fails part-way leaves
    neither file under the output's names (the twin is written in a temporary folder and moved into place)."""
    import stat

    import onnx_fe.model.randomize as mod

    src = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(RESNET), src, save_as_external_data=True, location="ext.onnx.data", size_threshold=1024)
    out = tmp_path / "twin.onnx"
    randomize(src, out, seed=0)
    mode = stat.S_IMODE(out.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "twin.onnx.data").stat().st_mode) == mode

    real_save = onnx.save_model

    def dies_after_writing(model, path, **kw):
        real_save(model, path, **kw)
        with open(path, "r+b") as f:
            f.truncate(10)  # half a file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mod.onnx, "save_model", dies_after_writing)
    fresh = tmp_path / "fresh.onnx"
    with pytest.raises(OnnxFeError, match="No space left"):
        randomize(src, fresh, seed=0)
    assert not fresh.exists() and not (tmp_path / "fresh.onnx.data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx-fe-")]
    monkeypatch.undo()
    with pytest.raises(OnnxFeError):
        monkeypatch.setattr(mod.onnx, "save_model", dies_after_writing)
        randomize(src, out, seed=0)  # a failed rewrite keeps the previous twin whole
    monkeypatch.undo()
    assert np.isfinite(run(out, (2, 3, 64, 64))).all()


def test_too_big_for_one_protobuf_goes_external(tmp_path, monkeypatch):
    """Past the 2 GB protobuf limit the twin is written with external data (the limit lowered to test it)."""
    import onnx_fe.model.randomize as mod

    monkeypatch.setattr(mod, "PROTOBUF_LIMIT", 10_000)
    out = tmp_path / "big.onnx"
    rep = randomize(DIGITS, out, seed=0)
    assert rep.external_data == str(tmp_path / "big.onnx.data") and (tmp_path / "big.onnx.data").exists()
    monkeypatch.undo()
    randomize(DIGITS, tmp_path / "small.onnx", seed=0)
    a, b = inits(onnx.load(out)), inits(onnx.load(tmp_path / "small.onnx"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --------------------------------------------------------------------------- bad input


def test_bad_inputs(tmp_path):
    with pytest.raises(OnnxFeError, match="model not found"):
        randomize(tmp_path / "nope.onnx", tmp_path / "t.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an onnx file\x00\xff" * 10)
    with pytest.raises(OnnxFeError, match="ONNX"):
        randomize(junk, tmp_path / "t.onnx")
    with pytest.raises(OnnxFeError, match="directory"):
        randomize(DIGITS, tmp_path)
    with pytest.raises(OnnxFeError, match="seed"):
        randomize_model(onnx.load(DIGITS), -1)
    g = G(seed=0)
    g.head()
    with pytest.raises(OnnxFeError, match="no Conv"):
        randomize_model(g.model(), 0)


# --------------------------------------------------------------------------- command line


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_same_twin_as_the_api(tmp_path, capsys):
    code, out, err = cli(capsys, "randomize", DIGITS, "-o", tmp_path / "sub" / "twin.onnx", "--seed", "7")
    assert code == 0 and out == ""
    assert "Conv weights re-drawn (He-normal, seed 7): 4 of 4 convs" in err
    assert "conv biases zeroed: 4" in err and "twin written to" in err
    randomize(DIGITS, tmp_path / "api.onnx", seed=7)
    assert sha(tmp_path / "sub" / "twin.onnx") == sha(tmp_path / "api.onnx")
    code, out, err = cli(capsys, "randomize", DIGITS, "-o", tmp_path / "q.onnx", "-q")
    assert code == 0 and out == "" and err == ""


def test_cli_as_a_subprocess(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "onnx_fe", "randomize", str(RESNET), "-o", str(tmp_path / "t.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "BatchNormalization reset to identity: 12 of 12" in r.stderr
    assert np.isfinite(run(tmp_path / "t.onnx", (1, 3, 64, 64))).all()


def _junk(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(np.random.default_rng(1).bytes(300))
    return p


BAD = {
    "missing model": (lambda d: [d / "nope.onnx", "-o", d / "t.onnx"], ["model not found", "nope.onnx"]),
    "not an ONNX file": (lambda d: [_junk(d), "-o", d / "t.onnx"], ["ONNX", "junk.onnx"]),
    "output is a directory": (lambda d: [DIGITS, "-o", d], ["output is a directory"]),
    "output is the input": (lambda d: [DIGITS, "-o", DIGITS], ["output is the input"]),
    "negative seed": (lambda d: [DIGITS, "-o", d / "t.onnx", "--seed", "-1"], ["seed"]),
    "no -o": (lambda d: [DIGITS], ["--output"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_input_is_one_error_line(case, tmp_path, capsys):
    spec, words = BAD[case]
    before = sha(DIGITS)
    code, out, err = cli(capsys, "randomize", *spec(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in out + err
    assert not (tmp_path / "t.onnx").exists()
    assert sha(DIGITS) == before
