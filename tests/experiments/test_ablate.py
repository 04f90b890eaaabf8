"""Cumulative ablation: the mask rewrite really zeroes channels, the split is exact, curves and errors."""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from graphs import G, simple_cnn, write_image_folder
from onnx import helper, numpy_helper
from PIL import Image

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.data import Preprocess, open_dataset
from onnx_fe.errors import OnnxFeError
from onnx_fe.experiments.ablate import check_labels, removal_counts
from onnx_fe.model.graph import expose, find_units
from onnx_fe.model.masks import add_unit_masks, split_at


def run(model, feeds, outputs=None):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = outputs or [o.name for o in model.graph.output]
    return dict(zip(outputs, s.run(outputs, feeds)))


def residual_cnn():
    """conv1-relu feeds both conv2 and a residual Add: its tap has two consumers."""
    g = G((None, 3, 12, 12), seed=3)
    g.conv(4, name="conv1")
    g.act("relu")
    skip = g.cur
    g.conv(4, name="conv2")
    g.cur = g.node("Add", [g.cur, skip])
    g.act("relu")
    g.conv(5, name="conv3")
    g.act("relu")
    g.head(3)
    return g.model()


@pytest.mark.parametrize("make", [simple_cnn, residual_cnn])
def test_masks_zero_exactly_the_chosen_channels(make):
    model = make()
    units = find_units(model)
    x = np.random.default_rng(0).random(
        (3, 3) + tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]), dtype=np.float32
    )
    out_name = model.graph.output[0].name
    ref = run(expose(model, [u.tap for u in units]), {"image": x}, [out_name] + [u.tap for u in units])
    for u in units:
        masked, info = add_unit_masks(model, [u.tap])
        onnx.checker.check_model(masked)
        mask_name, masked_name = info[u.tap]
        # every former consumer of the tap now reads the masked tensor
        readers = [n for n in masked.graph.node if u.tap in n.input]
        assert len(readers) == 1 and readers[0].op_type == "Mul" and readers[0].output[0] == masked_name
        c = ref[u.tap].shape[1]
        m = expose(masked, [u.tap, masked_name])
        ones = run(m, {"image": x, mask_name: np.ones((1, c, 1, 1), np.float32)}, [out_name, u.tap, masked_name])
        # ones: the original model (up to float rounding: onnxruntime may fuse the rewritten graph differently)
        np.testing.assert_allclose(ones[out_name], ref[out_name], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(ones[masked_name], ref[u.tap])
        drop = [0, c - 1]
        mask = np.ones((1, c, 1, 1), np.float32)
        mask[0, drop] = 0
        got = run(m, {"image": x, mask_name: mask}, [out_name, u.tap, masked_name])
        np.testing.assert_array_equal(got[u.tap], ref[u.tap])  # the tap itself is untouched
        assert (got[masked_name][:, drop] == 0).all()
        keep = [k for k in range(c) if k not in drop]
        np.testing.assert_array_equal(got[masked_name][:, keep], ref[u.tap][:, keep])
        assert not np.allclose(got[out_name], ref[out_name])  # downstream outputs change
        # prefix + suffix give exactly what the whole masked model gives
        prefix, pre_out, suffix, ext = split_at(masked, u.tap, out_name, {"image", mask_name})
        feeds = dict(zip(pre_out, run(prefix, {"image": x}, pre_out).values()))
        feeds.update({k: v for k, v in (("image", x), (mask_name, mask)) if k in ext})
        # (equal up to float rounding: onnxruntime fuses the two smaller graphs differently)
        np.testing.assert_allclose(run(suffix, feeds)[out_name], got[out_name], rtol=1e-5, atol=1e-7)
        assert mask_name in ext and u.tap in ext


def test_removing_units_equals_zeroing_their_filters(tmp_path):
    """The whole ablation against an independent rewrite: conv1 is Conv→Relu, so zeroing a unit's filter and bias
    zeroes its map; accuracy and loss of the ablation CSV must equal those of that edited model."""
    model = simple_cnn(in_shape=(None, 3, 16, 16))
    onnx.save(model, tmp_path / "m.onnx")
    data = write_image_folder(tmp_path / "data", n_classes=4, per_class=6, size=(16, 16))
    onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "out", device="cpu")
    res = onnx_fe.ablate(
        tmp_path / "m.onnx",
        data,
        tmp_path / "out",
        tmp_path / "abl",
        layers=["conv1"],
        by=["feature_entropy", "weight_l1"],
        device="cpu",
        plot=True,
    )
    assert res.png.exists() and res.png.stat().st_size > 1000
    df = pd.read_csv(res.csv)
    assert set(df["by"]) == {"feature_entropy", "weight_l1"} and set(df["layer"]) == {"conv1"}
    assert len(df) == 2 * 2 * 5  # indicators × orders × (0..4 units removed)
    ds = open_dataset(data, images_per_class=None)
    x = ds.load(0, len(ds), Preprocess(16, 16))
    conv = next(n for n in model.graph.node if n.name == "conv1")
    order = onnx_fe.rank(tmp_path / "out", "feature_entropy").layer("conv1").order
    for k in range(5):
        for oname, seq in (("most_important_first", order), ("least_important_first", order[::-1])):
            m = onnx.ModelProto()
            m.CopyFrom(model)
            for t in m.graph.initializer:
                if t.name in conv.input[1:]:
                    a = numpy_helper.to_array(t).copy()
                    a[seq[:k]] = 0
                    t.CopyFrom(numpy_helper.from_array(a, t.name))
            logits = run(m, {"image": x})[m.graph.output[0].name].astype(np.float64)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            row = df[(df["by"] == "feature_entropy") & (df["order"] == oname) & (df["removed"] == k)]
            assert len(row) == 1
            assert row["top1"].item() == pytest.approx((logits.argmax(1) == ds.labels).mean())
            assert row["loss"].item() == pytest.approx(-np.log(p[np.arange(len(x)), ds.labels]).mean(), rel=1e-5)
            assert np.isnan(row["top5"].item())  # 4 outputs: top-5 is meaningless
    # nothing removed: every curve starts at the plain model; everything removed: every curve ends at one value
    for k in (0, 4):
        assert df[df["removed"] == k]["top1"].nunique() == 1
    assert df[df["removed"] == 0]["top1"].iloc[0] == pytest.approx(
        onnx_fe.experiments.ablate.evaluate(tmp_path / "m.onnx", data, device="cpu")["top1"]
    )
    s = pd.read_csv(res.summary_csv)
    assert set(s["by"]) == {"feature_entropy", "weight_l1"}


def test_ablate_cli_with_a_ranking_csv_steps_and_random_repeats(tmp_path, capsys):
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16), n_classes=6), tmp_path / "m.onnx")
    data = write_image_folder(tmp_path / "data", n_classes=6, per_class=2, size=(16, 16))
    assert (
        main(["score", str(tmp_path / "m.onnx"), str(data), "-o", str(tmp_path / "out"), "--device", "cpu", "-q"]) == 0
    )
    assert main(["rank", str(tmp_path / "out"), "--by", "mean_activation", "-o", str(tmp_path / "r.csv"), "-q"]) == 0
    assert (
        main(
            [
                "ablate",
                str(tmp_path / "m.onnx"),
                str(data),
                "-r",
                str(tmp_path / "r.csv"),
                "-l",
                "2",
                "--steps",
                "4",
                "-o",
                str(tmp_path / "a"),
                "--no-plot",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "mean_activation" in out and "Traceback" not in err
    df = pd.read_csv(tmp_path / "a" / "ablation.csv")
    assert sorted(set(df["removed"])) == [0, 2, 4, 6, 8] and set(df["by"]) == {"mean_activation"}
    assert df["top5"].notna().all() and not (tmp_path / "a" / "ablation.png").exists()
    assert (
        main(
            [
                "ablate",
                str(tmp_path / "m.onnx"),
                str(data),
                "-r",
                str(tmp_path / "out"),
                "--by",
                "random",
                "--random-repeats",
                "3",
                "-o",
                str(tmp_path / "b"),
                "--no-plot",
                "--device",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "b" / "ablation.csv")
    assert sorted(set(df["seed"])) == [0, 1, 2] and set(df["layer"]) == {"conv3"}  # default: the last layer


def test_removal_counts():
    assert removal_counts(4, None) == [0, 1, 2, 3, 4]
    assert removal_counts(10, 4) == [0, 2, 5, 8, 10]
    assert removal_counts(3, 10) == [0, 1, 2, 3]


def test_check_labels():
    check_labels(["0", "1", "2"], 10)
    check_labels(["cat", "dog"], 2)
    with pytest.raises(OnnxFeError, match="labels do not match the model outputs"):
        check_labels(["0", "1", "10", "2"], 11)
    with pytest.raises(OnnxFeError, match="only 2 entries"):
        check_labels(["a", "b", "c"], 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("abl")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16), n_classes=4), root / "m.onnx")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16), n_classes=4, seed=5), root / "other.onnx")
    data = write_image_folder(root / "data", n_classes=3, per_class=2, size=(16, 16))
    onnx_fe.score(root / "m.onnx", data, root / "out", device="cpu")
    # integer class names out of output order: sorted "0", "1", "10" gives "10" index 2
    for k in ("0", "1", "10"):
        (root / "intdata" / k).mkdir(parents=True)
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(root / "intdata" / k / "a.png")
    write_image_folder(root / "five", n_classes=5, per_class=1, size=(16, 16))
    (root / "bad.csv").write_text("layer,unit,rank\nconv1,0,0\n")
    (root / "dup.csv").write_text("layer,layer_index,unit,rank\nconv1,0,0,0\nconv1,0,0,1\n")
    return root


@pytest.mark.parametrize(
    "case,words",
    [
        ("no_ranking", "--ranking is required"),
        ("ranking_missing", "ranking not found"),
        ("bad_csv", "lacks the column(s) layer_index"),
        ("dup_csv", "each unit 0..1 once"),
        ("int_labels", "labels do not match the model outputs: class '10' has index 2"),
        ("too_many_classes", "labels do not match the model outputs: the data has 5 classes"),
        ("other_model", "does not match the model's Conv layer"),
        ("bad_layer", "--layer 'conv9' matches no layer"),
        ("no_matplotlib", "plots need matplotlib"),
    ],
)
def test_ablate_errors_are_one_line(case, words, files, tmp_path, capsys, monkeypatch):
    m, d, out = str(files / "m.onnx"), str(files / "data"), str(files / "out")
    args = {
        "no_ranking": [m, d],
        "ranking_missing": [m, d, "-r", str(files / "nope.csv")],
        "bad_csv": [m, d, "-r", str(files / "bad.csv")],
        "dup_csv": [m, d, "-r", str(files / "dup.csv")],
        "int_labels": [m, str(files / "intdata"), "-r", out, "--no-plot"],
        "too_many_classes": [m, str(files / "five"), "-r", out, "--no-plot"],
        "other_model": [m, d, "-r", out, "--no-plot"],
        "bad_layer": [m, d, "-r", out, "-l", "conv9", "--no-plot"],
        "no_matplotlib": [m, d, "-r", out],
    }[case]
    if case == "other_model":  # a model whose layers carry other names
        other = simple_cnn(in_shape=(None, 3, 16, 16), n_classes=4)
        for n in other.graph.node:
            n.name = "x_" + n.name
        onnx.save(other, tmp_path / "renamed.onnx")
        args[0] = str(tmp_path / "renamed.onnx")
    if case == "no_matplotlib":
        for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
            monkeypatch.setitem(sys.modules, mod, None)
    code = main(["ablate", *args, "-o", str(tmp_path / "o"), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: ") and words in lines[0], err
    assert not (tmp_path / "o" / "ablation.csv").exists()


def test_a_layer_that_does_not_feed_the_output_is_refused(tmp_path):
    g = G((None, 3, 8, 8), seed=0)
    g.conv(2, name="side")
    g.act("relu")
    side = g.cur
    g.cur = "image"
    g.c = 3
    g.conv(3, name="main")
    g.act("relu")
    g.head(3)
    m = g.model()
    m.graph.output.append(helper.make_tensor_value_info(side, onnx.TensorProto.FLOAT, None))
    masked, info = add_unit_masks(m, [side])
    with pytest.raises(OnnxFeError, match="does not depend"):
        split_at(masked, side, m.graph.output[0].name, {"image", info[side][0]})


def test_probability_outputs_are_read_as_probabilities(tmp_path):
    """A model ending in Softmax gives the same accuracy and loss as its logits version."""
    logits = simple_cnn(in_shape=(None, 3, 16, 16), n_classes=3)
    probs = onnx.ModelProto()
    probs.CopyFrom(logits)
    out = probs.graph.output[0].name
    probs.graph.node.append(helper.make_node("Softmax", [out], ["prob"], axis=1))
    probs.graph.output[0].name = "prob"
    onnx.save(logits, tmp_path / "logits.onnx")
    onnx.save(probs, tmp_path / "probs.onnx")
    data = write_image_folder(tmp_path / "data", n_classes=3, per_class=3, size=(16, 16))
    a = onnx_fe.experiments.ablate.evaluate(tmp_path / "logits.onnx", data, device="cpu")
    b = onnx_fe.experiments.ablate.evaluate(tmp_path / "probs.onnx", data, device="cpu")
    assert (a["output"], b["output"]) == ("logits", "probabilities")
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
