"""The `onnx-fe` command line end to end, and one clear error line for every bad input."""

import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest
from graphs import G, simple_cnn, write_image_folder

from onnx_fe import feature_entropy
from onnx_fe.cli import main

CSV_COLUMNS = [
    "layer",
    "layer_index",
    "unit",
    "class",
    "n_images",
    "feature_entropy",
    "birth_rate",
    "ineffectiveness",
    "mean_activation",
    "apoz",
    "weight_l1",
    "hrank",
    "activation_std",
    "n_births",
    "fe_ci_low",
    "fe_ci_high",
    "fe_rarefied",
    "fe_rarefied_ci_low",
    "fe_rarefied_ci_high",
    "birth_rate_ci_low",
    "birth_rate_ci_high",
]
CHANNELS = {"conv1": 4, "conv2": 6, "conv3": 8}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), root / "m.onnx")
    onnx.save(simple_cnn(in_shape=(None, 3, None, None)), root / "dyn.onnx")
    write_image_folder(root / "data", n_classes=2, per_class=3, size=(16, 16))
    return root


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def results_left(root):
    return sorted(p for pat in ("results.h5", "scores.csv") for p in root.rglob(pat))


# --------------------------------------------------------------------------- success paths


def test_score_writes_csv_and_hdf5(files, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "score", files / "m.onnx", files / "data", "-o", out, "--device", "cpu", "-q")
    assert code == 0 and stdout == "" and err == ""

    df = pd.read_csv(out / "scores.csv")
    assert list(df.columns) == CSV_COLUMNS
    assert len(df) == sum(CHANNELS.values()) * 2  # one row per layer × unit × class
    assert not df.duplicated(["layer", "unit", "class"]).any()
    for (layer, idx), g in df.groupby(["layer", "layer_index"]):
        assert idx == list(CHANNELS).index(layer)
        assert sorted(set(g["unit"])) == list(range(CHANNELS[layer]))
    assert set(df["class"]) == {"class_0", "class_1"} and (df["n_images"] == 3).all()
    assert (df["feature_entropy"] >= 0).all() and df["birth_rate"].between(0, 1).all()
    assert df["apoz"].between(0, 1).all() and (df["weight_l1"] > 0).all()
    rate = df["birth_rate"]
    np.testing.assert_allclose(
        df["ineffectiveness"],
        np.where(rate > 0, df["feature_entropy"] / rate.where(rate > 0, 1), df["feature_entropy"]),
    )

    with h5py.File(out / "results.h5", "r") as f:
        assert sorted(f["layers"]) == ["000", "001", "002"]
        assert [s.decode() for s in f["classes"][()]] == ["class_0", "class_1"]
        assert list(f["labels"][()]) == [0, 0, 0, 1, 1, 1]
        assert [s.decode() for s in f["image_ids"][()]] == [
            f"class_{k}/{i:03d}.png" for k in range(2) for i in range(3)
        ]
        params = json.loads(f.attrs["params"])
        assert params["method"] == "cubical" and params["layers"] == [0, 1, 2]
        assert params["model_sha256"] == hashlib.sha256((files / "m.onnx").read_bytes()).hexdigest()
        assert json.loads(f.attrs["versions"])["onnx-fe"] == "0.1.0"
        assert f.attrs["device"] == "cpu" and f.attrs["complete"]
        labels = f["labels"][()]
        for key, (name, c) in zip(sorted(f["layers"]), CHANNELS.items()):
            g = f["layers"][key]
            bp = g["birth_points"][()]
            assert g.attrs["name"] == name and bp.shape == (6, c) and bp.dtype == np.int32
            assert bp.min() >= 0 and bp.max() <= 75  # the default cubical threshold
            # the CSV's entropy is that of the stored birth points
            rows = df[df["layer"] == name]
            for col in ("feature_entropy", "birth_rate", "ineffectiveness"):  # floats round-trip exactly
                table = rows.pivot(index="class", columns="unit", values=col).to_numpy()
                np.testing.assert_array_equal(table, g[col][()])
            np.testing.assert_array_equal(rows.groupby("unit")["weight_l1"].first().to_numpy(), g["weight_l1"][()])
            ma = rows.pivot(index="class", columns="unit", values="mean_activation").to_numpy()
            np.testing.assert_allclose(ma[1], g["mean_activation"][()][labels == 1].mean(axis=0), rtol=1e-6)
            for k, cname in enumerate(["class_0", "class_1"]):
                for j in range(c):
                    fe = feature_entropy(bp[labels == k, j])
                    r = rows[(rows["class"] == cname) & (rows["unit"] == j)].iloc[0]
                    assert r["feature_entropy"] == pytest.approx(fe.feature_entropy)
                    assert r["birth_rate"] == pytest.approx(fe.birth_rate)
    assert not (out / "results.h5.partial").exists()


def test_results_root_attrs_hold_model_sha256(files, tmp_path, capsys):
    """storage.py documents a root attribute model_sha256 (besides the one inside params)."""
    out = tmp_path / "out"
    assert cli(capsys, "score", files / "m.onnx", files / "data", "-o", out, "--device", "cpu", "-q")[0] == 0
    with h5py.File(out / "results.h5", "r") as f:
        assert f.attrs["model_sha256"] == hashlib.sha256((files / "m.onnx").read_bytes()).hexdigest()


def test_score_prints_a_summary_and_resizes_for_a_dynamic_model(files, tmp_path, capsys):
    out = tmp_path / "dyn"
    code, stdout, err = cli(
        capsys,
        "score",
        files / "dyn.onnx",
        files / "data",
        "-o",
        out,
        "--device",
        "cpu",
        "--input-size",
        "12x10",
        "--layers",
        "conv1,conv3",
        "-n",
        "2",
    )
    assert code == 0, err
    assert "conv1" in stdout and "conv3" in stdout and "conv2" not in stdout
    assert "12×10" in stdout and "6×5" in stdout and "wrote" in stdout
    assert "Traceback" not in err
    with h5py.File(out / "results.h5", "r") as f:
        assert sorted(f["layers"]) == ["000", "002"]
        g = f["layers"]["000"]
        assert (g.attrs["height"], g.attrs["width"]) == (12, 10)
        assert g["birth_points"].shape == (4, 4)
    assert len(pd.read_csv(out / "scores.csv")) == (4 + 8) * 2


def test_score_with_npz_data(files, tmp_path, capsys):
    x = np.random.default_rng(0).random((6, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 0, 1, 0, 1, 0]), classes=np.array(["a", "b"]))
    code, _, err = cli(
        capsys, "score", files / "m.onnx", tmp_path / "d.npz", "-o", tmp_path / "o", "--device", "cpu", "-q"
    )
    assert code == 0 and err == ""
    df = pd.read_csv(tmp_path / "o" / "scores.csv")
    assert set(df["class"]) == {"a", "b"} and (df["n_images"] == 3).all()


def test_inspect_lists_every_conv_with_its_chain(files, capsys):
    code, out, err = cli(capsys, "inspect", files / "m.onnx")
    assert code == 0 and "Traceback" not in err
    lines = {ln.split("│")[2].strip(): ln for ln in out.splitlines() if ln.count("│") >= 6}
    assert set(lines) == {"conv1", "conv2", "conv3"}
    assert "Conv→Relu" in lines["conv1"] and "16×16" in lines["conv1"] and "yes" in lines["conv1"]
    assert "Conv→BatchNormalization→Relu" in lines["conv2"] and " 6 " in lines["conv2"]
    assert "Conv→Relu" in lines["conv3"] and "8×8" in lines["conv3"]


def test_inspect_dynamic_model_and_unscorable_layer(files, tmp_path, capsys):
    code, out, _ = cli(capsys, "inspect", files / "dyn.onnx", "--input-size", "20x20")
    assert code == 0 and "20×20" in out and "10×10" in out
    g = G((None, 3, 1, 1))
    g.conv(4, k=1, name="pointwise")
    g.act("relu")
    g.head()
    onnx.save(g.model(), tmp_path / "one.onnx")
    code, out, err = cli(capsys, "inspect", tmp_path / "one.onnx")  # the table, then: nothing to score (issue 20)
    assert code == 2 and "pointwise" in out and "no: 1×1 output" in out and "onnx-fe: error: " in err


# --------------------------------------------------------------------------- bad inputs


def _no_conv(d):
    g = G((None, 3, 8, 8))
    g.act("relu")
    g.head()
    onnx.save(g.model(), d / "noconv.onnx")
    return ["score", d / "noconv.onnx", "DATA"]


def _only_1x1(d):
    g = G((None, 3, 1, 1))
    g.conv(4, k=1, name="c")
    g.act("relu")
    g.head()
    onnx.save(g.model(), d / "one.onnx")
    return ["score", d / "one.onnx", "DATA"]


def _corrupt_model(d):
    (d / "corrupt.onnx").write_bytes(np.random.default_rng(0).bytes(600))
    return ["score", d / "corrupt.onnx", "DATA"]


def _empty_dir(d):
    (d / "empty").mkdir()
    return ["score", "MODEL", d / "empty"]


def _class_without_images(d):
    write_image_folder(d / "imgs", n_classes=2, per_class=2)
    (d / "imgs" / "class_2").mkdir()
    (d / "imgs" / "class_2" / "readme.txt").write_text("no images here")
    return ["score", "MODEL", d / "imgs"]


def _corrupt_image(d):
    write_image_folder(d / "imgs", n_classes=2, per_class=2)
    (d / "imgs" / "class_1" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return ["score", "MODEL", d / "imgs"]


def _npz_wrong_x(d):
    np.savez(d / "wrong.npz", x=np.zeros((4, 3, 8, 8), np.float32), y=np.array([0, 0, 1, 1]))
    return ["score", "MODEL", d / "wrong.npz"]


def _npz_flat_x(d):
    np.savez(d / "flat.npz", x=np.zeros((4, 768), np.float32), y=np.array([0, 0, 1, 1]))
    return ["score", "MODEL", d / "flat.npz"]


def _npz_no_y(d):
    np.savez(d / "noy.npz", x=np.zeros((4, 3, 16, 16), np.float32))
    return ["score", "MODEL", d / "noy.npz"]


BAD = {  # name: (arguments or a function making them, words the error line must contain)
    "missing model": (["score", "nope.onnx", "DATA"], ["model not found", "nope.onnx"]),
    "corrupt model": (_corrupt_model, ["cannot read ONNX model", "corrupt.onnx"]),
    "model without conv": (_no_conv, ["noconv.onnx", "no Conv"]),
    "only 1x1 convs": (_only_1x1, ["no scorable Conv"]),
    "missing data": (["score", "MODEL", "nodata"], ["data not found", "nodata"]),
    "empty data dir": (_empty_dir, ["no class sub-folders", "empty"]),
    "class without images": (_class_without_images, ["class_2", "holds no images"]),
    "corrupt image": (_corrupt_image, ["cannot read image", "class_1/001.png"]),
    "npz wrong x shape": (_npz_wrong_x, ["wrong.npz", "sample shape (3, 8, 8)", "(3, 16, 16)"]),
    "npz 2-D x": (_npz_flat_x, ["flat.npz", "x must be 4-D"]),
    "npz without y": (_npz_no_y, ["noy.npz", "'y'"]),
    "dynamic model without input size": (["score", "DYN", "DATA"], ["dynamic", "--input-size"]),
    "input size vs fixed model": (["score", "MODEL", "DATA", "--input-size", "8x8"], ["--input-size 8x8", "16x16"]),
    "bad input size": (["score", "MODEL", "DATA", "--input-size", "3x"], ["--input-size", "HxW"]),
    "unknown method": (["score", "MODEL", "DATA", "--method", "magic"], ["method", "'magic'", "cubical"]),
    "unknown device": (["score", "MODEL", "DATA", "--device", "tpu"], ["--device", "'tpu'"]),
    "unknown layout": (["score", "MODEL", "DATA", "--layout", "hwc"], ["--layout", "'hwc'"]),
    "unknown color": (["score", "MODEL", "DATA", "--color", "cmyk"], ["--color", "'cmyk'"]),
    "color vs model channels": (["score", "MODEL", "DATA", "--color", "gray"], ["--color gray", "expects 3"]),
    "layers match nothing": (["score", "MODEL", "DATA", "--layers", "fc*"], ["--layers", "'fc*'", "matches no Conv"]),
    "layer index out of range": (["score", "MODEL", "DATA", "--layers", "7"], ["--layers", "'7'"]),
    "batch size 0": (["score", "MODEL", "DATA", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    "batch size not a number": (["score", "MODEL", "DATA", "--batch-size", "many"], ["--batch-size", "integer"]),
    "images per class 0": (["score", "MODEL", "DATA", "-n", "0"], ["--images-per-class", "at least 1"]),
    "unknown class": (["score", "MODEL", "DATA", "--classes", "class_0,cow"], ["--classes", "'cow'"]),
    "bad mean": (["score", "MODEL", "DATA", "--mean", "0.5,x"], ["--mean", "0.5,x"]),
    "std with zero": (["score", "MODEL", "DATA", "--std", "0"], ["--std", "0"]),
    "unknown option": (["score", "MODEL", "DATA", "--bogus"], ["No such option", "--bogus"]),
    "unknown command": (["frobnicate"], ["No such command", "frobnicate"]),
    "missing argument": (["score", "MODEL"], ["Missing argument", "'data'"]),
    "output is a file": (["score", "MODEL", "DATA", "-o", "MODEL"], ["is not a directory"]),
    "inspect missing model": (["inspect", "nope.onnx"], ["model not found", "nope.onnx"]),
    "inspect dynamic model": (["inspect", "DYN"], ["dynamic", "--input-size"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_error_line_and_no_results(case, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output directory would land here
    spec, words = BAD[case]
    args = spec(tmp_path) if callable(spec) else spec
    subs = {"MODEL": files / "m.onnx", "DYN": files / "dyn.onnx", "DATA": files / "data"}
    args = [subs.get(a, a) if isinstance(a, str) else a for a in args]
    if args[0] == "score" and "-o" not in args and len(args) >= 3:
        args += ["-o", tmp_path / "out"]
    code, out, err = cli(capsys, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("onnx-fe: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in out + err
    assert results_left(tmp_path) == [] and results_left(files) == []


def test_truncated_image_fails_cleanly_naming_the_file(files, tmp_path, capsys):
    """A JPEG whose header is fine but whose pixels are cut off is found while loading the batch."""
    d = write_image_folder(tmp_path / "imgs", n_classes=2, per_class=2, size=(64, 64), ext="jpg")
    p = d / "class_1" / "001.jpg"
    p.write_bytes(p.read_bytes()[:300])
    code, out, err = cli(
        capsys, "score", files / "dyn.onnx", d, "-o", tmp_path / "o", "--input-size", "16x16", "--device", "cpu", "-q"
    )
    assert code != 0
    assert err.strip().splitlines() == [err.strip()] and err.startswith("onnx-fe: error: cannot read image ")
    assert "class_1/001.jpg" in err and "Traceback" not in err
    assert results_left(tmp_path) == []


def _cuda_really_works() -> bool:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        s = ort.InferenceSession(
            simple_cnn().SerializeToString(),
            sess_options=so,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    except Exception:
        return False
    return "CUDAExecutionProvider" in s.get_providers()


def test_device_cuda_without_a_gpu_is_one_clear_error(files, tmp_path, capsys):
    if _cuda_really_works():
        pytest.skip("onnxruntime has a working CUDA device here")
    code, out, err = cli(capsys, "score", files / "m.onnx", files / "data", "-o", tmp_path / "o", "--device", "cuda")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: --device cuda")
    assert "--device cpu" in lines[0]  # says what to do instead
    assert results_left(tmp_path) == []


# --------------------------------------------------------------------------- as a real process


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "onnx_fe.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_subprocess_success_is_silent_with_quiet_and_device_auto(files, tmp_path):
    """-q prints nothing, not even onnxruntime's CUDA-loading chatter when --device auto finds no GPU."""
    r = _run("score", files / "m.onnx", files / "data", "-q", cwd=tmp_path)  # default output dir, device auto
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # no onnxruntime provider chatter either
    (out,) = (tmp_path / "onnx-fe-results").glob("m-*")  # <model stem>-<hash of its path>
    assert (out / "results.h5").exists() and len(pd.read_csv(out / "scores.csv")) == 36


def test_subprocess_error_has_no_traceback(files, tmp_path):
    (tmp_path / "corrupt.onnx").write_bytes(np.random.default_rng(1).bytes(300))
    r = _run("score", tmp_path / "corrupt.onnx", files / "data", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: cannot read ONNX model")
    assert "corrupt.onnx" in lines[0] and "Traceback" not in r.stderr
    assert results_left(tmp_path) == []
