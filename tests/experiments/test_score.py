"""The whole score pipeline: determinism, resume, reuse, stored contents."""

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from graphs import simple_cnn, write_image_folder

import onnx_fe
import onnx_fe.experiments.score as pipeline
from onnx_fe.data import Preprocess, load_image


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    model = root / "m.onnx"
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), model)
    data = write_image_folder(root / "data", n_classes=3, per_class=7)
    return root, model, data


def birth_matrix(h5):
    with h5py.File(h5, "r") as f:
        return {k: f["layers"][k]["birth_points"][()] for k in f["layers"]}


def test_scores_are_identical_whatever_batch_size_and_workers(setup):
    root, model, data = setup
    runs = [(1, 1), (4, 2), (32, 3)]
    results = [
        onnx_fe.score(model, data, root / f"out_b{b}_w{w}", batch_size=b, workers=w, device="cpu") for b, w in runs
    ]
    ref_csv = results[0].scores_csv.read_bytes()
    ref_bp = birth_matrix(results[0].results_h5)
    for r in results[1:]:
        assert r.scores_csv.read_bytes() == ref_csv
        bp = birth_matrix(r.results_h5)
        assert bp.keys() == ref_bp.keys()
        for k in bp:
            assert np.array_equal(bp[k], ref_bp[k])
    df = pd.read_csv(results[0].scores_csv)
    assert len(df) == (4 + 6 + 8) * 3
    assert set(df["class"]) == {"class_0", "class_1", "class_2"}
    assert (df["n_images"] == 7).all()


def test_birth_points_are_those_of_the_api_on_the_model_activations(setup):
    root, model, data = setup
    r = onnx_fe.score(model, data, root / "acts", keep_activations=True, device="cpu")
    with h5py.File(r.results_h5, "r") as f:
        ids = [s.decode() for s in f["image_ids"][()]]
        acts = f["activations"]["002"][()]
        bp = f["layers"]["002"]["birth_points"][()]
        params = f.attrs["params"]
        assert f.attrs["complete"] and f.attrs["device"] == "cpu"
    # activations equal a plain onnxruntime run of the rewritten graph
    lm = onnx_fe.model.graph.load_model(model)
    tap = lm.units[2].tap
    m = onnx_fe.model.graph.expose(lm.model, [tap])
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    pre = Preprocess(16, 16, "nchw", "rgb")
    x = np.stack([load_image(data / i, pre) for i in ids])
    ref = s.run([tap], {"image": x})[0]
    np.testing.assert_array_equal(acts, ref)
    assert np.array_equal(bp, onnx_fe.birth_points(acts.reshape(-1, 8, 8)).reshape(bp.shape))
    assert '"method": "cubical"' in params


def test_interrupted_run_leaves_no_complete_result_and_resumes(setup, monkeypatch):
    root, model, data = setup
    out = root / "resume"
    full = onnx_fe.score(model, data, root / "full", batch_size=4, device="cpu")
    calls = {"n": 0}
    real = pipeline._birth_points

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # after two whole batches (3 layers each) and part of the third
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "_birth_points", flaky)  # reaches shards run in this process only: workers=1
    with pytest.raises(KeyboardInterrupt):
        onnx_fe.score(model, data, out, batch_size=4, workers=1, device="cpu")
    assert not (out / "results.h5").exists() and not (out / "scores.csv").exists()
    with h5py.File(out / "results.h5.partial", "r") as f:
        assert f.attrs["n_done"] == 8 and not f.attrs["complete"]
    monkeypatch.setattr(pipeline, "_birth_points", real)
    logs = []
    r = onnx_fe.score(model, data, out, batch_size=4, device="cpu", log=logs.append)
    assert any("resuming" in m and "image 8" in m for m in logs)
    assert r.scores_csv.read_bytes() == full.scores_csv.read_bytes()
    assert not (out / "results.h5.partial").exists()


def test_rerun_reuses_and_changed_parameters_recompute(setup):
    root, model, data = setup
    out = root / "reuse"
    a = onnx_fe.score(model, data, out, device="cpu")
    assert not a.reused
    b = onnx_fe.score(model, data, out, device="cpu")
    assert b.reused and b.scores_csv.read_bytes() == a.scores_csv.read_bytes()
    (out / "scores.csv").unlink()  # a lost CSV is rebuilt from the finished HDF5
    c = onnx_fe.score(model, data, out, device="cpu")
    assert c.reused and c.scores_csv.read_bytes() == a.scores_csv.read_bytes()
    d = onnx_fe.score(model, data, out, device="cpu", threshold=20)
    assert not d.reused
    assert pd.read_csv(d.scores_csv)["birth_rate"].sum() <= pd.read_csv(a.scores_csv)["birth_rate"].sum()


def test_npz_input_gives_the_same_scores_as_the_folder(setup):
    root, model, data = setup
    r = onnx_fe.score(model, data, root / "folder", device="cpu")
    with h5py.File(r.results_h5, "r") as f:
        ids = [s.decode() for s in f["image_ids"][()]]
        labels = f["labels"][()]
    pre = Preprocess(16, 16, "nchw", "rgb")
    x = np.stack([load_image(data / i, pre) for i in ids])
    np.savez(root / "d.npz", x=x, y=labels, classes=np.array(["class_0", "class_1", "class_2"]))
    r2 = onnx_fe.score(model, root / "d.npz", root / "npz", device="cpu")
    assert r2.scores_csv.read_bytes() == r.scores_csv.read_bytes()


def test_layer_selection_and_external_data(setup, tmp_path):
    root, model, data = setup
    ext = tmp_path / "ext.onnx"
    onnx.save(onnx.load(model), ext, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    r = onnx_fe.score(ext, data, tmp_path / "o", layers=["conv3"], device="cpu")
    df = pd.read_csv(r.scores_csv)
    assert set(df["layer"]) == {"conv3"} and len(df) == 8 * 3
    full = pd.read_csv(onnx_fe.score(model, data, tmp_path / "o2", device="cpu").scores_csv)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), full[full["layer"] == "conv3"].reset_index(drop=True))


def test_baselines_match_numpy(setup):
    root, model, data = setup
    r = onnx_fe.score(model, data, root / "base", keep_activations=True, device="cpu")
    with h5py.File(r.results_h5, "r") as f:
        a = f["activations"]["000"][()].astype(np.float64)
        g = f["layers"]["000"]
        np.testing.assert_allclose(g["mean_activation"][()], a.mean(axis=(2, 3)), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(g["zero_fraction"][()], (a == 0).mean(axis=(2, 3)).astype(np.float32))
        w = onnx.numpy_helper.to_array(
            next(
                t
                for t in onnx.load(model).graph.initializer
                if t.name == onnx_fe.model.graph.load_model(model).units[0].weight
            )
        )
        np.testing.assert_allclose(g["weight_l1"][()], np.abs(w).reshape(4, -1).sum(1), rtol=1e-6)


def test_hrank_and_activation_std_per_image_and_in_scores_csv(setup, monkeypatch):
    """results.h5 holds numpy's matrix_rank and std of every stored map; scores.csv their class means; the values
    are the same bit for bit whatever the chunk of maps (CHUNK_PIXELS), batch size and workers."""
    root, model, data = setup
    r = onnx_fe.score(model, data, root / "hr", keep_activations=True, device="cpu", batch_size=5, workers=1)
    df = pd.read_csv(r.scores_csv)
    with h5py.File(r.results_h5, "r") as f:
        labels, classes = f["labels"][()], [c.decode() for c in f["classes"][()]]
        stored = {}
        for key in f["layers"]:
            g = f["layers"][key]
            a = f["activations"][key][()]  # float32 maps
            hr, sd = g["hrank"][()], g["activation_std"][()]
            assert hr.dtype == np.int32 and sd.dtype == np.float32
            want_hr = np.array([[np.linalg.matrix_rank(m) for m in img] for img in a])
            want_sd = np.array([[np.std(m, dtype=np.float64) for m in img] for img in a]).astype(np.float32)
            np.testing.assert_array_equal(hr, want_hr)
            np.testing.assert_array_equal(sd, want_sd)
            assert hr.min() >= 0 and hr.max() <= min(a.shape[2:])
            stored[key] = (hr, sd)
            name = g.attrs["name"]
            for k, cname in enumerate(classes):
                rows = df[(df["layer"] == name) & (df["class"] == cname)].sort_values("unit")
                np.testing.assert_array_equal(rows["hrank"].to_numpy(), hr[labels == k].astype(np.float64).mean(0))
                np.testing.assert_array_equal(
                    rows["activation_std"].to_numpy(), sd[labels == k].astype(np.float64).mean(0)
                )
    monkeypatch.setattr(pipeline, "CHUNK_PIXELS", 300)  # a few maps per chunk instead of whole batches
    small = onnx_fe.score(model, data, root / "hr_chunks", device="cpu", batch_size=2, workers=1)
    assert small.scores_csv.read_bytes() == r.scores_csv.read_bytes()
    with h5py.File(small.results_h5, "r") as f:
        for key, (hr, sd) in stored.items():
            np.testing.assert_array_equal(f["layers"][key]["hrank"][()], hr)
            np.testing.assert_array_equal(f["layers"][key]["activation_std"][()], sd)
