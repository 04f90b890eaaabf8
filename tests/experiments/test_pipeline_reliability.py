"""Issue 11 through the whole pipeline: nothing lost (locks, safe replace, full disks, damaged partials), nothing
silent (changed data, integer inputs, fixed batches, quantized or nested convs), and the API takes the CLI's forms."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from graphs import G, simple_cnn, write_image_folder
from onnx import TensorProto, helper
from PIL import Image

import onnx_fe
import onnx_fe.experiments.score as pipeline
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError
from onnx_fe.io.results import PartialWriter

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"


def birth_points(h5) -> dict:
    with h5py.File(h5, "r") as f:
        return {k: f["layers"][k]["birth_points"][()] for k in f["layers"]}


def same_birth_points(a, b) -> bool:
    x, y = birth_points(a), birth_points(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def invert_pngs(root: Path) -> None:
    for p in sorted(root.rglob("*.png")):
        a = np.asarray(Image.open(p))
        Image.fromarray(255 - a).save(p)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), root / "m.onnx")
    write_image_folder(root / "data", n_classes=2, per_class=6)
    return root


def _cli(*args, cwd=None, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "onnx_fe.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# --------------------------------------------------------------------------- 1. concurrent runs


def test_a_second_concurrent_run_is_refused_and_the_first_result_is_whole(tmp_path):
    out = tmp_path / "X"
    args = ("score", DEMO / "model.onnx", DEMO / "data", "-o", out, "-b", "8", "--device", "cpu", "-q")
    first = _cli(*args)
    time.sleep(0.3)
    second = _cli(*args)
    runs = [(p, *p.communicate(timeout=120)) for p in (second, first)]
    done = [r for r in runs if r[0].returncode == 0]
    refused = [r for r in runs if r[0].returncode != 0]
    assert len(done) == 1 and len(refused) == 1, [(p.returncode, e) for p, _, e in runs]
    p, _, err = refused[0]
    lines = err.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, err
    assert f"in use by another onnx-fe run (pid {done[0][0].pid})" in lines[0], err
    with h5py.File(out / "results.h5", "r") as f:  # complete and readable
        assert f.attrs["complete"] and len(f["labels"]) == 200
    r = onnx_fe.rank(out)
    assert len(r.layers) > 0
    assert not (out / "results.h5.partial").exists()


def test_with_wait_the_second_run_waits_and_reuses_the_first_result(tmp_path):
    out = tmp_path / "X"
    args = ("score", DEMO / "model.onnx", DEMO / "data", "-o", out, "-b", "8", "-n", "8", "--device", "cpu")
    first = _cli(*args, "-v", "--wait")
    time.sleep(0.3)
    second = _cli(*args, "-v", "--wait")
    runs = [(p, *p.communicate(timeout=120)) for p in (second, first)]
    assert all(p.returncode == 0 for p, _, _ in runs), [e for _, _, e in runs]
    errs = [e for _, _, e in runs]
    assert sum("reusing finished results" in e for e in errs) == 1  # one computed, the other waited and reused
    with h5py.File(out / "results.h5", "r") as f:
        assert f.attrs["complete"]


# --------------------------------------------------------------------------- 2. changed data


def test_changed_image_contents_give_a_fresh_run_said_in_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DEMO / "data", data)
    out = tmp_path / "out"
    args = ["score", str(DEMO / "model.onnx"), str(data), "-o", str(out), "-n", "3", "--device", "cpu"]
    assert main(args) == 0
    before = (out / "scores.csv").read_bytes()
    capsys.readouterr()
    invert_pngs(data)
    assert main(args) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "data contents" in line]
    assert len(notes) == 1 and "scoring afresh" in notes[0], err
    assert (out / "scores.csv").read_bytes() != before
    fresh = onnx_fe.score(DEMO / "model.onnx", data, tmp_path / "fresh", images_per_class=3, device="cpu")
    assert (out / "scores.csv").read_bytes() == fresh.scores_csv.read_bytes()


def test_an_npz_rewritten_as_one_minus_x_is_not_reused(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), model)
    x = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    a = onnx_fe.score(model, tmp_path / "d.npz", tmp_path / "o", device="cpu")
    np.savez(tmp_path / "d.npz", x=1 - x, y=y)
    b = onnx_fe.score(model, tmp_path / "d.npz", tmp_path / "o", device="cpu")
    assert not a.reused and not b.reused
    fresh = onnx_fe.score(model, tmp_path / "d.npz", tmp_path / "fresh", device="cpu")
    assert same_birth_points(b.results_h5, fresh.results_h5)


def test_changed_images_between_a_kill_and_the_resume_never_mix(files, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(files / "data", data)
    out = tmp_path / "out"
    real = pipeline.compute_shard
    calls = {"n": 0}

    def killed(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # after two shards of 4 images
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "compute_shard", killed)  # reaches shards run in this process only: workers=1
    with pytest.raises(KeyboardInterrupt):
        onnx_fe.score(files / "m.onnx", data, out, batch_size=4, workers=1, device="cpu")
    with h5py.File(out / "results.h5.partial", "r") as f:
        assert f.attrs["n_done"] == 8
    monkeypatch.setattr(pipeline, "compute_shard", real)
    invert_pngs(data)
    logs = []
    r = onnx_fe.score(files / "m.onnx", data, out, batch_size=4, device="cpu", log=logs.append)
    assert not any("resuming" in m for m in logs)
    assert any(m.startswith("note:") and "data contents" in m for m in logs), logs
    fresh = onnx_fe.score(files / "m.onnx", data, tmp_path / "fresh", batch_size=4, device="cpu")
    assert same_birth_points(r.results_h5, fresh.results_h5)


# --------------------------------------------------------------------------- 3. previous results kept


def test_a_failing_new_run_leaves_the_previous_result_intact(files, tmp_path, monkeypatch):
    from onnx_fe.io.results import guarded

    out = tmp_path / "out"
    onnx_fe.score(files / "m.onnx", files / "data", out, device="cpu")
    before = (out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()
    real = PartialWriter.write

    def disk_full(self, *a, **k):  # h5py's error for a write that hits a full disk, after 4 images
        if self.n_done >= 4:
            with guarded(self.f, self.path):
                raise RuntimeError("Can't write data (file write failed: errno = 28, error message = 'No space left')")
        return real(self, *a, **k)

    monkeypatch.setattr(PartialWriter, "write", disk_full)
    with pytest.raises(OnnxFeError, match="no space left on device") as e:
        onnx_fe.score(files / "m.onnx", files / "data", out, threshold=20, batch_size=4, device="cpu")
    assert "\n" not in str(e.value)
    assert ((out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()) == before
    assert not (out / "results.h5.partial").exists()
    monkeypatch.undo()
    r = onnx_fe.score(files / "m.onnx", files / "data", out, threshold=20, device="cpu")  # space again
    assert not r.reused and (out / "scores.csv").read_bytes() != before[1]


def test_default_outputs_of_two_model_onnx_files_do_not_collide(files, tmp_path, monkeypatch):
    for name in ("converged", "random"):
        (tmp_path / name).mkdir()
        onnx.save(simple_cnn(seed=0 if name == "converged" else 1), tmp_path / name / "model.onnx")
    monkeypatch.chdir(tmp_path)
    a = onnx_fe.score(tmp_path / "converged" / "model.onnx", files / "data", device="cpu")
    b = onnx_fe.score(tmp_path / "random" / "model.onnx", files / "data", device="cpu")
    assert a.output != b.output and a.output.parent == b.output.parent == Path("onnx-fe-results")
    assert a.results_h5.exists() and b.results_h5.exists()
    assert not same_birth_points(a.results_h5, b.results_h5)
    again = onnx_fe.score(tmp_path / "converged" / "model.onnx", files / "data", device="cpu")
    assert again.reused and again.output == a.output


# --------------------------------------------------------------------------- 4. damaged partials


def test_an_unreadable_partial_is_restarted_with_one_note(files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = pipeline.compute_shard
    calls = {"n": 0}

    def killed(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "compute_shard", killed)  # reaches shards run in this process only: workers=1
    with pytest.raises(KeyboardInterrupt):
        onnx_fe.score(files / "m.onnx", files / "data", out, batch_size=4, workers=1, device="cpu")
    monkeypatch.setattr(pipeline, "compute_shard", real)
    partial = out / "results.h5.partial"
    os.truncate(partial, partial.stat().st_size // 3)  # as a full disk or a crash can leave it
    logs = []
    r = onnx_fe.score(files / "m.onnx", files / "data", out, batch_size=4, device="cpu", log=logs.append)
    notes = [m for m in logs if "results.h5.partial" in m]
    assert len(notes) == 1 and "starting afresh" in notes[0] and "\n" not in notes[0]
    fresh = onnx_fe.score(files / "m.onnx", files / "data", tmp_path / "fresh", device="cpu")
    assert same_birth_points(r.results_h5, fresh.results_h5)


# --------------------------------------------------------------------------- 5. integer inputs, 9. fixed batch


def _gray_cnn(input_type=TensorProto.FLOAT, batch=None):
    g = G((batch, 1, 16, 16), seed=3)
    if input_type != TensorProto.FLOAT:
        g.input = helper.make_tensor_value_info("image", input_type, [batch, 1, 16, 16])
        g.cur = g.node("Cast", ["image"], to=TensorProto.FLOAT)
    g.conv(4, name="conv1")
    g.act("relu")
    g.conv(4, name="conv2")
    g.act("relu")
    g.head(2)
    m = g.model()
    return m


def test_a_uint8_model_is_fed_pixel_values_and_the_summary_says_so(tmp_path):
    onnx.save(_gray_cnn(TensorProto.UINT8), tmp_path / "u8.onnx")
    onnx.save(_gray_cnn(), tmp_path / "f32.onnx")
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=4, mode="L")
    u8 = onnx_fe.score(tmp_path / "u8.onnx", data, tmp_path / "o8", device="cpu")
    ref = onnx_fe.score(tmp_path / "f32.onnx", data, tmp_path / "o32", scale=1.0, device="cpu")
    assert same_birth_points(u8.results_h5, ref.results_h5)  # pixels 0..255, not 0/1
    assert any("uint8" in n and "--scale" in n for n in u8.notes)
    scaled = onnx_fe.score(tmp_path / "u8.onnx", data, tmp_path / "o8s", scale="1/255", device="cpu")
    assert not any("uint8" in n for n in scaled.notes)  # the user's --scale is kept, without a word


def test_a_model_with_a_fixed_batch_of_one_scores_at_the_default_batch_size(tmp_path):
    onnx.save(_gray_cnn(batch=1), tmp_path / "b1.onnx")
    onnx.save(_gray_cnn(), tmp_path / "dyn.onnx")
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=5, mode="L")
    r = onnx_fe.score(tmp_path / "b1.onnx", data, tmp_path / "o1", device="cpu")  # batch_size 32
    ref = onnx_fe.score(tmp_path / "dyn.onnx", data, tmp_path / "od", device="cpu")
    assert same_birth_points(r.results_h5, ref.results_h5)
    assert any("fixed batch of 1" in n for n in r.notes)
    a = onnx_fe.ablate(tmp_path / "b1.onnx", data, r.output, by=["feature_entropy"], steps=2, plot=False)
    b = onnx_fe.ablate(tmp_path / "dyn.onnx", data, ref.output, by=["feature_entropy"], steps=2, plot=False)
    assert [x["top1"] for x in a.rows] == [x["top1"] for x in b.rows]


# --------------------------------------------------------------------------- 8, 10. convs that are not layers


def test_a_model_whose_only_convs_are_quantized_or_nested_is_refused_saying_why(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mrel", ROOT / "tests" / "model" / "test_model_reliability.py")
    mrel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mrel)
    _if_model, _qlinear_model = mrel._if_model, mrel._qlinear_model

    onnx.save(_qlinear_model(), tmp_path / "q.onnx")
    onnx.save(_if_model(), tmp_path / "if.onnx")
    np.savez(tmp_path / "q.npz", x=np.zeros((2, 1, 8, 8), np.uint8), y=np.array([0, 1]))
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=2, size=(8, 8))
    with pytest.raises(OnnxFeError, match="quantized convs are not supported") as e:
        onnx_fe.score(tmp_path / "q.onnx", tmp_path / "q.npz", tmp_path / "o", device="cpu")
    assert "has no Conv node" not in str(e.value)
    with pytest.raises(OnnxFeError, match="If/Loop/Scan") as e:
        onnx_fe.score(tmp_path / "if.onnx", data, tmp_path / "o2", device="cpu")
    assert "If 'choose'" in str(e.value)


# --------------------------------------------------------------------------- 11. the API takes the CLI's forms


def test_the_api_takes_what_the_cli_takes(files, tmp_path, capsys):
    onnx.save(simple_cnn(in_shape=(None, 3, None, None)), tmp_path / "dyn.onnx")
    r = onnx_fe.score(tmp_path / "dyn.onnx", files / "data", tmp_path / "o", input_size="16x16", layers=[0])
    with h5py.File(r.results_h5, "r") as f:
        assert list(f["layers"]) == ["000"] and f["layers/000"].attrs["height"] == 16
    units = onnx_fe.inspect(tmp_path / "dyn.onnx", input_size="320x320")
    assert units[0].height == 320
    for bad, option in (({"input_size": "16y"}, ["--input-size", "16y"]), ({"std": "inf"}, ["--std", "inf"])):
        with pytest.raises(OnnxFeError) as e:
            onnx_fe.score(tmp_path / "dyn.onnx", files / "data", tmp_path / "o3", **bad)
        code = main(["score", str(tmp_path / "dyn.onnx"), str(files / "data"), "-o", str(tmp_path / "o3"), *option])
        err = capsys.readouterr().err
        assert code == 2 and err.strip() == f"onnx-fe: error: {e.value}"


# --------------------------------------------------------------------------- ablate and compare


def test_ablate_takes_the_input_size_of_the_scoring_run_and_writes_beside_its_results(files, tmp_path, monkeypatch):
    onnx.save(simple_cnn(in_shape=(None, 3, None, None)), tmp_path / "dyn.onnx")
    r = onnx_fe.score(tmp_path / "dyn.onnx", files / "data", tmp_path / "res", input_size="16x16", device="cpu")
    monkeypatch.chdir(tmp_path)
    a = onnx_fe.ablate(tmp_path / "dyn.onnx", files / "data", r.output, by=["feature_entropy"], steps=2, plot=False)
    assert a.output == r.output / "ablation" and a.csv.exists()
    assert not (tmp_path / "onnx-fe-results").exists()
    _, ranking = onnx_fe.rank(r.output).save(tmp_path / "rk" / "ranking.csv")  # the JSON holds the preprocessing
    b = onnx_fe.ablate(tmp_path / "dyn.onnx", files / "data", ranking, steps=2, plot=False)
    assert b.output == tmp_path / "rk" / "ablation"


def _nan_head_model():
    g = G((None, 3, 16, 16), seed=0)
    g.conv(4, name="conv1")
    g.act("relu")
    g.head(2)
    nan = g.const(np.array([np.nan, 0.0], np.float32), "nan")
    g.cur = g.node("Add", [g.cur, nan])
    return g.model()


def test_nan_logits_are_refused_by_ablate_and_not_reported_as_accuracy_by_compare(files, tmp_path):
    onnx.save(_nan_head_model(), tmp_path / "nan.onnx")
    r = onnx_fe.score(tmp_path / "nan.onnx", files / "data", tmp_path / "res", device="cpu")
    with pytest.raises(OnnxFeError, match="NaN") as e:
        onnx_fe.ablate(tmp_path / "nan.onnx", files / "data", r.output, steps=2, plot=False)
    assert "\n" not in str(e.value)
    c = onnx_fe.compare([tmp_path / "nan.onnx", files / "m.onnx"], files / "data", tmp_path / "cmp", plot=False)
    nan_row = c.models[0]
    assert np.isnan(nan_row["top1"]) and "NaN" in nan_row["note"]


def test_compare_warns_when_the_data_classes_do_not_match_the_outputs(files, tmp_path):
    c = onnx_fe.compare([files / "m.onnx"], files / "data", tmp_path / "cmp", plot=False)  # 2 classes, 4 outputs
    assert (
        "warning" in c.models[0]["note"] and "2 classes" in c.models[0]["note"] and "4 entries" in c.models[0]["note"]
    )


def test_ablation_png_keeps_legend_and_title_inside_the_image(tmp_path):
    from onnx_fe.report.plots import plot_ablation

    rows = []
    for by in ("feature_entropy", "mean_activation", "apoz", "weight_l1", "random"):
        for order in ("most_important_first", "least_important_first"):
            for k in range(5):
                rows.append(
                    {
                        "layer_index": 7,
                        "layer": "a_rather_long_layer_name/with/scopes/conv2d_17",
                        "units": 4,
                        "by": by,
                        "order": order,
                        "seed": "",
                        "removed": k,
                        "top1": 1 - k / 5,
                    }
                )
    title = "cumulative ablation: a_model_with_a_long_name.onnx on some/long/data/path (1234 images) " * 2
    png = plot_ablation(rows, tmp_path / "a.png", title=title)
    a = np.asarray(Image.open(png).convert("L"))
    edges = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    assert (edges > 250).all()  # nothing drawn runs over the border


def test_ablate_without_ranking_uses_the_models_default_results(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OnnxFeError, match="--ranking is required.*default output"):
        onnx_fe.ablate(files / "m.onnx", files / "data", None, plot=False)
    r = onnx_fe.score(files / "m.onnx", files / "data", device="cpu")
    a = onnx_fe.ablate(files / "m.onnx", files / "data", None, by=["feature_entropy"], steps=2, plot=False)
    assert a.output == r.output / "ablation" and a.csv.exists()
