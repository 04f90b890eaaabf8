"""Unit rankings from stored results: the reference rule, tie-breaking, the baselines, files and errors."""

import json
import math

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from graphs import simple_cnn, write_image_folder

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.data import Preprocess, open_dataset
from onnx_fe.model.graph import expose, find_units
from onnx_fe.scores.entropy import entropy_table
from onnx_fe.scores.ranking import DEGENERATE_SCORE, load_rankings, order_from_scores, reference_scores

BIG = 100 * math.log(100)


def write_results(path, bp, labels, classes, ma=None, zf=None, l1=None, name="convA", index=0):
    """A minimal complete results.h5 holding one layer with the given birth points."""
    bp = np.asarray(bp, dtype=np.int32)
    n, c = bp.shape
    n_img, fe, br, ie = entropy_table(bp, labels, len(classes))
    path.mkdir(parents=True, exist_ok=True)
    with h5py.File(path / "results.h5", "w") as f:
        f.attrs.update(
            {
                "format": "onnx-fe/1",
                "complete": True,
                "n_done": n,
                "model_sha256": "x",
                "params": json.dumps(
                    {
                        "preprocess": {
                            "height": 8,
                            "width": 8,
                            "layout": "nchw",
                            "color": "gray",
                            "scale": 1.0,
                            "mean": [0.0],
                            "std": [1.0],
                        }
                    }
                ),
            }
        )
        f["classes"] = np.asarray(classes, dtype=object).astype(h5py.string_dtype())
        f["labels"] = np.asarray(labels, dtype=np.int64)
        g = f.create_group("layers").create_group(f"{index:03d}")
        g.attrs.update(
            {"index": index, "name": name, "tap": "t", "chain": "Conv", "channels": c, "height": 8, "width": 8}
        )
        g["birth_points"] = bp
        g["mean_activation"] = np.zeros((n, c), np.float32) if ma is None else np.asarray(ma, np.float32)
        g["zero_fraction"] = np.zeros((n, c), np.float32) if zf is None else np.asarray(zf, np.float32)
        g["weight_l1"] = np.ones(c) if l1 is None else np.asarray(l1, dtype=np.float64)
        for k, v in (("n_images", n_img), ("feature_entropy", fe), ("birth_rate", br), ("ineffectiveness", ie)):
            g[k] = v
    return path


# Hand-made birth points: 2 classes × 4 images, 7 units (columns).
HAND = np.array(
    [
        # u0  u1  u2  u3  u4  u5  u6
        [5, 0, 1, 1, 1, 0, 2],  # class 0
        [5, 0, 2, 2, 2, 0, 2],
        [5, 0, 3, 0, 3, 0, 2],
        [5, 0, 4, 0, 4, 0, 3],
        [3, 0, 1, 1, 1, 0, 0],  # class 1
        [7, 0, 1, 2, 1, 0, 0],
        [3, 0, 2, 0, 2, 0, 0],
        [7, 0, 2, 0, 2, 0, 0],
    ]
)
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_reference_rule_on_hand_made_birth_points(tmp_path):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    r = onnx_fe.rank(res, "feature_entropy")
    lr = r.layers[0]
    ln2, ln4 = math.log(2), math.log(4)
    h6 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # per class: u0 = (all equal → 100 ln 100, ln 2); u1, u5 no birth point; u2 = u4 = (ln 4, ln 2);
    # u3 = (ln 2 / 0.5, ln 2 / 0.5); u6 = (h6, no birth point)
    want = [(BIG + ln2) / 2, BIG, (ln4 + ln2) / 2, 2 * ln2, (ln4 + ln2) / 2, BIG, (h6 + BIG) / 2]
    np.testing.assert_allclose(lr.score, want, rtol=1e-12)
    # u2 and u4 tie (u2 first: lower index), degenerate u1 and u5 last (u1 first)
    assert lr.order.tolist() == [2, 4, 3, 6, 0, 1, 5]
    assert lr.n_tied == 4  # u2 = u4 and u1 = u5
    assert lr.rank.tolist() == [4, 5, 0, 2, 1, 6, 3]
    # the plain ineffectiveness ranking puts the degenerate units first instead
    plain = onnx_fe.rank(res, "ineffectiveness").layers[0]
    assert plain.order.tolist() == [1, 5, 6, 0, 2, 4, 3]
    # one class only: the reference's unit_importance_rank (stable ascending argsort after the substitution)
    only_b = onnx_fe.rank(res, "feature_entropy", classes=["b"]).layers[0]
    np.testing.assert_allclose(only_b.score, [ln2, BIG, ln2, 2 * ln2, ln2, BIG, BIG])
    assert only_b.order.tolist() == [0, 2, 4, 3, 1, 5, 6]


def test_threshold_is_strictly_below_a_tenth():
    assert pytest.approx(460.517, abs=1e-3) == DEGENERATE_SCORE
    np.testing.assert_array_equal(reference_scores([0.0, 0.0999, 0.1, 0.5]), [BIG, BIG, 0.1, 0.5])
    # 49 equal birth points and one other: entropy 0.098 < 0.1 counts as degenerate
    fe = onnx_fe.feature_entropy([4] * 49 + [9])
    assert fe.ineffectiveness < 0.1 and reference_scores([fe.ineffectiveness])[0] == BIG


def test_single_class_matches_the_reference_procedure_on_random_birth_points(tmp_path):
    rng = np.random.default_rng(1)
    bp = rng.integers(0, 4, size=(30, 40))
    bp[:, :5] = 0  # dead units
    bp[:, 5:8] = 2  # constant birth point
    res = write_results(tmp_path / "r", bp, np.zeros(30, dtype=int), ["only"])
    ie = np.array([onnx_fe.feature_entropy(bp[:, j]).ineffectiveness for j in range(40)])
    dh = np.where(np.abs(ie) < 0.1, BIG, ie)
    assert onnx_fe.rank(res).layers[0].order.tolist() == np.argsort(dh, kind="stable").tolist()
    assert onnx_fe.rank(res).layers[0].order[-8:].tolist() == list(range(8))


def test_order_from_scores_breaks_ties_by_index_and_puts_nan_last():
    s = np.array([1.0, np.nan, 0.0, -0.0, 1.0, 2.0])
    assert order_from_scores(s, higher_is_important=False).tolist() == [2, 3, 0, 4, 5, 1]
    assert order_from_scores(s, higher_is_important=True).tolist() == [5, 0, 4, 2, 3, 1]


def test_keep_mask():
    from onnx_fe.scores.ranking import LayerRanking

    lr = LayerRanking("l", 0, np.array([3.0, 1.0, 2.0, 0.0]), np.array([3, 1, 2, 0]))
    assert lr.keep_mask(2).tolist() == [False, True, False, True]
    assert lr.keep_mask(0.75).tolist() == [False, True, True, True]
    with pytest.raises(ValueError):
        lr.keep_mask(5)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    model = simple_cnn(in_shape=(None, 3, 16, 16))
    onnx.save(model, root / "m.onnx")
    data = write_image_folder(root / "data", n_classes=3, per_class=4, size=(16, 16))
    onnx_fe.score(root / "m.onnx", data, root / "out", device="cpu")
    return root, model, data


def test_baselines_match_direct_numpy_computations(scored):
    root, model, data = scored
    units = find_units(model)
    sess = ort.InferenceSession(
        expose(model, [u.tap for u in units]).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ds = open_dataset(data, images_per_class=None)
    x = ds.load(0, len(ds), Preprocess(16, 16))
    acts = dict(zip([u.tap for u in units], sess.run([u.tap for u in units], {"image": x})))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for u in units:
        a = acts[u.tap].astype(np.float64)
        per_class_mean = np.stack([a[ds.labels == k].mean(axis=(0, 2, 3)) for k in range(3)])
        per_class_apoz = np.stack([(a[ds.labels == k] == 0).mean(axis=(0, 2, 3)) for k in range(3)])
        l1 = np.abs(inits[u.weight].astype(np.float64)).reshape(inits[u.weight].shape[0], -1).sum(1)
        expect = {
            "mean_activation": np.argsort(-per_class_mean.mean(0), kind="stable"),
            "apoz": np.argsort(per_class_apoz.mean(0), kind="stable"),
            "weight_l1": np.argsort(-l1, kind="stable"),
        }
        for by, order in expect.items():
            lr = onnx_fe.rank(root / "out", by).layer(u.index)
            assert lr.order.tolist() == order.tolist(), (by, u.name)
        np.testing.assert_allclose(
            onnx_fe.rank(root / "out", "mean_activation").layer(u.index).score,
            per_class_mean.mean(0),
            rtol=1e-5,
            atol=1e-7,
        )
        np.testing.assert_allclose(onnx_fe.rank(root / "out", "weight_l1").layer(u.index).score, l1, rtol=1e-6)


def test_hrank_and_activation_std_rankings_match_numpy_on_the_maps(scored):
    """rank --by hrank: descending class-mean of numpy's matrix_rank of each float32 map; --by activation_std:
    descending class-mean of np.std of each map (float64)."""
    root, model, data = scored
    units = find_units(model)
    sess = ort.InferenceSession(
        expose(model, [u.tap for u in units]).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ds = open_dataset(data, images_per_class=None)
    x = ds.load(0, len(ds), Preprocess(16, 16))
    acts = dict(zip([u.tap for u in units], sess.run([u.tap for u in units], {"image": x})))
    for u in units:
        a = acts[u.tap].astype(np.float32)
        ranks = np.array([[np.linalg.matrix_rank(m) for m in img] for img in a], dtype=np.float64)
        stds = np.array([[np.std(m, dtype=np.float64) for m in img] for img in a]).astype(np.float32)
        for by, per_image in (("hrank", ranks), ("activation_std", stds)):
            want = np.stack([per_image[ds.labels == k].astype(np.float64).mean(axis=0) for k in range(3)]).mean(0)
            lr = onnx_fe.rank(root / "out", by).layer(u.index)
            np.testing.assert_allclose(lr.score, want, rtol=1e-12)
            assert lr.order.tolist() == order_from_scores(want, higher_is_important=True).tolist(), (by, u.name)
            assert lr.score[lr.order[0]] == want.max()  # higher is more important
        assert ranks.max() <= min(a.shape[2:])
    assert len({float(v) for u in units for v in onnx_fe.rank(root / "out", "hrank").layer(u.index).score}) > 1


@pytest.mark.parametrize("by", ["hrank", "activation_std"])
def test_rank_cli_by_the_new_baselines(scored, tmp_path, capsys, by):
    root = scored[0]
    assert main(["rank", str(root / "out"), "--by", by, "-o", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert f"units by {by}" in out
    df = pd.read_csv(tmp_path / "r.csv")
    assert (df["by"] == by).all() and len(df) == 4 + 6 + 8
    direct = onnx_fe.rank(root / "out", by)
    for lr in direct.layers:
        got = df[df["layer_index"] == lr.layer_index]
        assert got["unit"].tolist() == lr.order.tolist()
    assert json.loads((tmp_path / "r.json").read_text())["rule"].startswith("descending")


def test_random_ranking_is_seeded_per_layer(scored):
    root = scored[0]
    a, b, c = (onnx_fe.rank(root / "out", "random", seed=s) for s in (0, 0, 1))
    for la, lb, _lc in zip(a.layers, b.layers, c.layers):
        assert la.order.tolist() == lb.order.tolist()
        want = np.argsort(-np.random.default_rng([0, la.layer_index]).random(la.channels), kind="stable")
        assert la.order.tolist() == want.tolist()
    assert any(la.order.tolist() != lc.order.tolist() for la, lc in zip(a.layers, c.layers))


def test_rank_cli_writes_csv_and_json_that_load_back(scored, tmp_path, capsys):
    root = scored[0]
    assert main(["rank", str(root / "out"), "--by", "apoz", "-o", str(tmp_path / "r.csv"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    df = pd.read_csv(tmp_path / "r.csv")
    assert list(df.columns) == ["layer", "layer_index", "unit", "score", "rank", "by"]
    assert (df["by"] == "apoz").all() and len(df) == 4 + 6 + 8
    for _, g in df.groupby("layer_index"):
        assert sorted(g["rank"]) == list(range(len(g))) and list(g["rank"]) == sorted(g["rank"])
    direct = onnx_fe.rank(root / "out", "apoz")
    for path in (tmp_path / "r.csv", tmp_path / "r.json"):
        (loaded,) = load_rankings(path)
        assert loaded.by == "apoz"
        for la, lb in zip(direct.layers, loaded.layers):
            assert (la.layer, la.layer_index) == (lb.layer, lb.layer_index)
            assert la.order.tolist() == lb.order.tolist()
            np.testing.assert_array_equal(la.score, lb.score)
    j = json.loads((tmp_path / "r.json").read_text())
    assert j["by"] == "apoz" and j["preprocess"]["height"] == 16 and len(j["layers"]) == 3
    # default output: beside the results
    assert main(["rank", str(root / "out"), "-q"]) == 0
    assert (root / "out" / "ranking-feature_entropy.csv").exists() and (
        root / "out" / "ranking-feature_entropy.json"
    ).exists()


@pytest.mark.parametrize(
    "case", ["missing", "partial", "bad_by", "bad_class", "no_l1", "not_results", "old_hrank", "old_std"]
)
def test_rank_errors_are_one_line(case, tmp_path, capsys):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"], l1=[np.nan] * 7)
    if case == "missing":
        args, words = [str(tmp_path / "nope")], "results not found"
    elif case == "partial":
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "results.h5.partial").write_bytes(b"")
        args, words = [str(tmp_path / "p")], "did not finish"
    elif case == "bad_by":
        args, words = [str(res), "--by", "entropy"], "--by 'entropy'"
    elif case == "bad_class":
        args, words = [str(res), "--classes", "zz"], "--classes 'zz'"
    elif case == "no_l1":
        args, words = [str(res), "--by", "weight_l1"], "not constants"
    elif case in ("old_hrank", "old_std"):  # results written before hrank and activation_std existed
        by = "hrank" if case == "old_hrank" else "activation_std"
        args, words = [str(res), "--by", by], f"predate the {by} column"
    else:
        (tmp_path / "x.h5").write_bytes(b"not hdf5")
        args, words = [str(tmp_path / "x.h5")], "cannot read results file"
    code = main(["rank", *args])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: ") and words in lines[0], err
