"""onnx-fe importance: exact zeros for units that cannot matter, the split + stacked runs against full masked runs,
determinism across workers / batch / shard / stacking, resume, reuse, non-classifiers and the unit sample."""

import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from graphs import IR_VERSION, OPSET, G, write_image_folder
from onnx import TensorProto, helper, numpy_helper

import onnx_fe.experiments.importance as imp
from onnx_fe.data import open_dataset
from onnx_fe.experiments.score import prepare
from onnx_fe.io.importance import COLUMNS
from onnx_fe.model.masks import add_unit_masks
from onnx_fe.scores.importance import cross_entropy

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"


def residual_cnn(dead_channel=None):
    """conv1-relu feeds conv2 and a residual Add (two consumers of the tap); conv3, GAP head with 3 classes.
    ``dead_channel``: zero conv2's and conv3's input weights of that channel (another model, same shapes)."""
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
    m = g.model()
    if dead_channel is not None:
        convs = {n.name: n for n in m.graph.node if n.op_type == "Conv"}
        inits = {t.name: t for t in m.graph.initializer}
        for name in ("conv2", "conv3"):
            t = inits[convs[name].input[1]]
            w = numpy_helper.to_array(t).copy()
            w[:, dead_channel] = 0
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    return m


def dead_cnn():
    """conv1 (4) - relu - conv2 (6) - relu - GAP head: conv2 reads conv1's channel 2 with all-zero weights, so
    zeroing unit 2 of conv1 cannot change anything; every other unit of conv1 does."""
    g = G((None, 3, 12, 12), seed=5)
    g.conv(4, name="conv1")
    g.act("relu")
    g.conv(6, name="conv2")
    g.act("relu")
    g.head(3)
    m = g.model()
    conv2 = next(n for n in m.graph.node if n.name == "conv2")
    t = next(t for t in m.graph.initializer if t.name == conv2.input[1])
    w = numpy_helper.to_array(t).copy()
    w[:, 2] = 0
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    return m


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imgs"), n_classes=3, per_class=6, size=(12, 12))


def save(model, path):
    onnx.save(model, str(path))
    return path


def per_image(out_dir):
    with h5py.File(Path(out_dir) / "importance.h5", "r") as f:
        return {
            k: {n: f["layers"][k][n][()] for n in ("units", "delta_loss", "delta_top1", "delta_output")}
            for k in f["layers"]
        } | {"unmasked_loss": f["unmasked_loss"][()], "unmasked_correct": f["unmasked_correct"][()]}


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            same(a[k], b[k])
        else:
            np.testing.assert_array_equal(a[k], b[k])


def test_a_unit_that_cannot_reach_the_output_has_importance_exactly_zero(tmp_path, folder):
    model = save(dead_cnn(), tmp_path / "dead.onnx")
    res = imp.importance(model, folder, tmp_path / "out", images_per_class=6, workers=1, resamples=200)
    df = pd.read_csv(res.csv)
    conv1 = df[df.layer == "conv1"].set_index("unit")
    assert conv1.loc[2, "delta_loss"] == 0.0 and conv1.loc[2, "delta_top1"] == 0.0
    assert conv1.loc[2, "delta_output"] == 0.0
    assert conv1.loc[2, "delta_loss_ci_low"] == 0.0 and conv1.loc[2, "delta_loss_ci_high"] == 0.0
    # every image, not just the mean
    v = per_image(res.output)["000"]
    assert (v["delta_loss"][:, 2] == 0).all() and (v["delta_output"][:, 2] == 0).all()
    # the others do matter: the zero is not what every unit gets
    assert (conv1.drop(index=2)["delta_output"] > 1e-4).all()


def test_the_dead_unit_is_zero_in_a_stacked_run_too(tmp_path, folder, monkeypatch):
    """The dead unit shares its suffix run with other units (K > 1): a misplaced mask block would show."""
    monkeypatch.setattr(imp, "STACK_BYTES_CPU", 64 << 20)
    model = save(dead_cnn(), tmp_path / "dead.onnx")
    plan = _plan(model, folder)
    lr = plan.layer(plan.base.units[0])
    assert lr.batchable
    r = imp.compute_shard(plan, 0, 9)
    # per layer one run without a mask and one for all its units (4 of conv1, 6 of conv2)
    assert r.runs == 4 and r.stacked == 10
    assert (r.delta_loss[0][:, 2] == 0).all() and (r.delta_output[0][:, 2] == 0).all()
    assert (r.delta_output[0][:, [0, 1, 3]] > 0).any(axis=0).all()


def _plan(model, data, **kw):
    cfg = imp.ImportanceConfig.build(model, data, images_per_class=kw.pop("n", 6), workers=1, **kw)
    base = imp.Plan.build(cfg.score, lean=False)
    plan = imp.ImportancePlan(base, None)
    kind, probs, _ = imp._decide(plan)
    plan.spec = imp.Spec(kind, probs, tuple((u.index, tuple(range(u.channels))) for u in base.units))
    return plan


def _full_masked_delta_loss(model_path, data, n):
    """Per-image delta_loss of every unit from whole masked models (add_unit_masks, (1, C, 1, 1) mask, one unit
    per run): the reference the split and stacked runs must match."""
    lm, ds, pre, _, runner, units = prepare(str(model_path), str(data), images_per_class=n, device="cpu")
    x = ds.load(0, len(ds), pre, runner.input_dtype)
    out_name = lm.model.graph.output[0].name
    ref = {}
    for u in units:
        masked, info = add_unit_masks(lm.model, [u.tap])
        mask = info[u.tap][0]
        s = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"])
        ones = np.ones((1, u.channels, 1, 1), np.float32)
        base = s.run([out_name], {lm.input_name: x, mask: ones})[0]
        base_loss, _ = cross_entropy(base.reshape(len(x), -1), ds.labels, False)
        cols = []
        for c in range(u.channels):
            m = ones.copy()
            m[0, c] = 0
            out = s.run([out_name], {lm.input_name: x, mask: m})[0]
            loss, _ = cross_entropy(out.reshape(len(x), -1), ds.labels, False)
            cols.append(loss - base_loss)
        ref[u.index] = (np.stack(cols, axis=1), base_loss)
    return ref


@pytest.mark.parametrize("which", ["demo", "residual"])
@pytest.mark.parametrize("stack", [0, 64 << 20])
def test_split_and_stacked_runs_match_full_masked_runs(tmp_path, folder, which, stack, monkeypatch):
    monkeypatch.setattr(imp, "STACK_BYTES_CPU", stack)
    if which == "demo":
        model, data, n = DEMO / "model.onnx", DEMO / "data", 2
    else:
        model, data, n = save(residual_cnn(), tmp_path / "res.onnx"), folder, 6
    res = imp.importance(model, data, tmp_path / "out", images_per_class=n, workers=1, resamples=0)
    got = per_image(res.output)
    ref = _full_masked_delta_loss(model, data, n)
    assert len(ref) == len(got) - 2
    for idx, (d, base_loss) in ref.items():
        g = got[f"{idx:03d}"]["delta_loss"]
        # the same to float32 rounding of the logits, relative to the loss: onnxruntime fuses the prefix/suffix
        # graphs differently from the whole masked graph, so the last bits of the logits may differ
        scale = np.abs(base_loss).max() + np.abs(d).max()
        np.testing.assert_allclose(g, d, rtol=0, atol=1e-6 * scale)
        assert np.abs(d).max() > 1e-3  # the layer's units do change the loss


def test_bit_identical_across_workers_batch_shard_and_stacking(tmp_path, monkeypatch):
    kw = dict(images_per_class=3, resamples=100)
    a = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "a", workers=1, batch_size=32, **kw)
    b = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "b", workers=2, batch_size=7, shard_size=4, **kw)
    assert imp.stack_budget("cpu") == 0  # one unit per suffix run: a and b
    monkeypatch.setattr(imp, "STACK_BYTES_CPU", 64 << 20)  # all units of a layer in one run
    c = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "c", workers=1, batch_size=5, **kw)
    same(per_image(a.output), per_image(b.output))
    same(per_image(a.output), per_image(c.output))
    assert a.csv.read_bytes() == b.csv.read_bytes() == c.csv.read_bytes()


def test_resume_after_an_interrupted_run(tmp_path, monkeypatch):
    kw = dict(images_per_class=2, workers=1, batch_size=4, shard_size=4, resamples=50)
    ref = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "ref", **kw)
    real = imp.compute_shard

    def dies(plan, start, stop, workers=1):
        if start >= 8:
            raise KeyboardInterrupt
        return real(plan, start, stop, workers)

    monkeypatch.setattr(imp, "compute_shard", dies)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        imp.importance(DEMO / "model.onnx", DEMO / "data", out, **kw)
    assert not (out / "importance.csv").exists() and not (out / "importance.h5").exists()
    with h5py.File(out / "importance.h5.partial", "r") as f:
        assert int(f.attrs["n_done"]) == 8
    monkeypatch.setattr(imp, "compute_shard", real)
    seen = []
    done = []

    def counting(plan, start, stop, workers=1):
        done.append(start)
        return real(plan, start, stop, workers)

    monkeypatch.setattr(imp, "compute_shard", counting)
    imp.importance(DEMO / "model.onnx", DEMO / "data", out, log=seen.append, **kw)
    assert any("resuming an interrupted run at image 8 of 20" in s for s in seen)
    assert min(done) == 8
    same(per_image(ref.output), per_image(out))
    assert (out / "importance.csv").read_bytes() == ref.csv.read_bytes()
    assert not (out / "importance.h5.partial").exists()


def test_reuse_and_recompute_for_another_model(tmp_path, folder):
    model = save(residual_cnn(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    first = imp.importance(model, folder, out, images_per_class=3, workers=1, resamples=50)
    stamp = (out / "importance.h5").stat().st_mtime_ns
    seen = []
    again = imp.importance(
        model, folder, out, images_per_class=3, workers=1, resamples=50, batch_size=2, log=seen.append
    )
    assert again.reused and any("reusing" in s for s in seen)
    assert (out / "importance.h5").stat().st_mtime_ns == stamp
    # other statistics: the per-image values are reused, the table is rewritten
    ci = imp.importance(model, folder, out, images_per_class=3, workers=1, resamples=50, ci_level=0.8)
    assert ci.reused and (out / "importance.h5").stat().st_mtime_ns == stamp
    assert json.loads((out / "importance.json").read_text())["statistics"]["ci_level"] == 0.8
    wide = pd.read_csv(first.csv)  # (the same file, now rewritten)
    assert (wide.delta_loss_ci_high - wide.delta_loss_ci_low).gt(0).any()
    # a changed model: measured afresh, with a note
    save(residual_cnn(dead_channel=1), model)
    seen = []
    new = imp.importance(model, folder, out, images_per_class=3, workers=1, resamples=50, log=seen.append)
    assert not new.reused and any("model file contents" in s for s in seen)
    meta = json.loads((out / "importance.json").read_text())
    with h5py.File(out / "importance.h5", "r") as f:
        assert f.attrs["model_sha256"] == meta["model_sha256"] == new_sha(model)
        assert json.loads(f.attrs["config"])["units_per_layer"] is None
        assert "images" in json.loads(f.attrs["fingerprint"])


def new_sha(p):
    import hashlib

    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def segmenter():
    """A conv net whose first output is a map (N, 2, 12, 12): no classes. conv2's map is the output itself."""
    g = G((None, 3, 12, 12), seed=7)
    g.conv(4, name="conv1")
    g.act("relu")
    g.conv(2, name="conv2")
    out = helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, [None, 2, 12, 12])
    graph = helper.make_graph(g.nodes, "g", [g.input], [out], initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    return m


def test_a_model_without_class_outputs_gets_delta_output_only(tmp_path, folder):
    model = save(segmenter(), tmp_path / "seg.onnx")
    seen = []
    res = imp.importance(model, folder, tmp_path / "out", images_per_class=2, workers=1, log=seen.append)
    notes = [s for s in seen if "delta_output only" in s]
    assert len(notes) == 1 and "(2, 12, 12)" in notes[0]
    df = pd.read_csv(res.csv)
    assert list(df.columns) == list(COLUMNS)
    assert df.delta_loss.isna().all() and df.delta_top1.isna().all() and df.delta_loss_ci_low.isna().all()
    assert (df.delta_output > 0).sum() >= 4
    # the output layer: zeroing unit c zeroes output channel c
    lm, ds, pre, _, runner, _ = prepare(str(model), str(folder), images_per_class=2, device="cpu")
    x = ds.load(0, len(ds), pre, runner.input_dtype)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    y = y.astype(np.float64)
    for c in range(2):
        want = np.mean(
            np.linalg.norm(y[:, c].reshape(len(y), -1), axis=1) / np.linalg.norm(y.reshape(len(y), -1), axis=1)
        )
        assert df[(df.layer == "conv2") & (df.unit == c)].delta_output.item() == pytest.approx(want, rel=1e-6)
    # the value is the mean over images of ||out_masked − out|| / ||out||, computed here from the whole masked model
    u = next(u for u in lm.units if u.name == "conv1")
    masked, info = add_unit_masks(lm.model, [u.tap])
    s = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"])
    ones = np.ones((1, 4, 1, 1), np.float32)
    base = s.run(None, {"image": x, info[u.tap][0]: ones})[0].reshape(len(x), -1).astype(np.float64)
    m = ones.copy()
    for c in range(4):
        m = ones.copy()
        m[0, c] = 0
        out = s.run(None, {"image": x, info[u.tap][0]: m})[0].reshape(len(x), -1).astype(np.float64)
        want = np.mean(np.linalg.norm(out - base, axis=1) / np.linalg.norm(base, axis=1))
        got = df[(df.layer == "conv1") & (df.unit == c)].delta_output.item()
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_labels_that_do_not_fit_the_outputs_get_delta_output_only(tmp_path):
    data = write_image_folder(tmp_path / "five", n_classes=5, per_class=2, size=(12, 12))
    model = save(residual_cnn(), tmp_path / "m.onnx")  # 3 outputs, 5 classes
    seen = []
    res = imp.importance(model, data, tmp_path / "out", workers=1, log=seen.append)
    assert res.output_kind == "output"
    assert any("has only 3 entries" in s and "delta_output only" in s for s in seen)
    assert pd.read_csv(res.csv).delta_loss.isna().all()


def test_units_per_layer_samples_seeded_units_with_the_same_values(tmp_path):
    kw = dict(images_per_class=2, workers=1, resamples=100, seed=4)
    full = pd.read_csv(imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "all", **kw).csv)
    part = pd.read_csv(
        imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "some", units_per_layer=5, **kw).csv
    )
    for idx, g in part.groupby("layer_index"):
        c = int(full[full.layer_index == idx].unit.max()) + 1
        want = sorted(np.random.default_rng([4, idx]).choice(c, 5, replace=False).tolist())
        assert g.unit.tolist() == want
    merged = part.merge(full, on=["layer_index", "unit"], suffixes=("", "_all"))
    assert len(merged) == len(part) == 5 * part.layer_index.nunique()
    for col in ("delta_loss", "delta_top1", "delta_output", "delta_loss_ci_low", "delta_top1_ci_high"):
        assert (merged[col] == merged[col + "_all"]).all()
    assert imp.sample_units(8, 100, 0, 1) == tuple(range(8))


def test_the_table_is_the_mean_of_the_stored_per_image_values(tmp_path):
    res = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "o", images_per_class=2, workers=1)
    df = pd.read_csv(res.csv)
    v = per_image(res.output)
    ds = open_dataset(DEMO / "data", images_per_class=2)
    assert (df.n_images == len(ds)).all()
    for key in ("000", "002"):
        g = df[df.layer_index == int(key)].sort_values("unit")
        np.testing.assert_array_equal(g.unit, v[key]["units"])
        np.testing.assert_allclose(g.delta_loss, v[key]["delta_loss"].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(g.delta_top1, v[key]["delta_top1"].mean(axis=0), rtol=1e-12)
        assert (g.delta_loss_ci_low <= g.delta_loss).all() and (g.delta_loss <= g.delta_loss_ci_high).all()
    assert set(np.unique(v["000"]["delta_top1"])) <= {-1, 0, 1}
    meta = json.loads(res.json.read_text())
    assert meta["unmasked"]["top1"] == pytest.approx(v["unmasked_correct"].mean())
    assert meta["output_kind"] == "classifier" and meta["n_images"] == len(ds)


def test_a_dask_cluster_gives_the_local_values(tmp_path):
    import distributed

    kw = dict(images_per_class=2, resamples=50, device="cpu")
    local = imp.importance(DEMO / "model.onnx", DEMO / "data", tmp_path / "local", workers=1, **kw)
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = imp.importance(
            DEMO / "model.onnx", DEMO / "data", tmp_path / "dask", client=client, shard_size=5, **kw
        )
    same(per_image(local.output), per_image(remote.output))
    assert local.csv.read_bytes() == remote.csv.read_bytes()
