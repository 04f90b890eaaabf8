"""Several networks scored on the same data, side by side."""

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest
from graphs import simple_cnn, write_image_folder

import onnx_fe
import onnx_fe.experiments.ablate
from onnx_fe.cli import main
from onnx_fe.experiments.compare import model_names


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    for name, seed in (("a", 0), ("b", 7)):
        (root / name).mkdir()
        onnx.save(simple_cnn(in_shape=(None, 3, 16, 16), seed=seed, n_classes=3), root / name / "model.onnx")
    data = write_image_folder(root / "data", n_classes=3, per_class=3, size=(16, 16))
    return root, data


def test_compare_cli_tables_csv_plot_and_reuse(files, tmp_path, capsys):
    root, data = files
    args = [
        "compare",
        str(root / "a" / "model.onnx"),
        str(root / "b" / "model.onnx"),
        str(data),
        "-o",
        str(tmp_path / "c"),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "last scored layer" in out and "a" in out and "b" in out
    layers = pd.read_csv(tmp_path / "c" / "compare_layers.csv")
    models = pd.read_csv(tmp_path / "c" / "compare_models.csv")
    assert (tmp_path / "c" / "compare.png").stat().st_size > 1000
    assert list(models["model"]) == ["a", "b"]  # both files are model.onnx: named by their folders
    assert len(layers) == 6 and list(layers["layer_index"]) == [0, 1, 2, 0, 1, 2]
    for name in ("a", "b"):
        with h5py.File(tmp_path / "c" / name / "results.h5", "r") as f:
            for key in sorted(f["layers"]):
                g = f["layers"][key]
                row = layers[(layers["model"] == name) & (layers["layer_index"] == int(g.attrs["index"]))]
                assert row["feature_entropy"].item() == pytest.approx(np.nanmean(g["feature_entropy"][()]))
                assert row["birth_rate"].item() == pytest.approx(np.nanmean(g["birth_rate"][()]))
            last = f["layers"][sorted(f["layers"])[-1]]
            m = models[models["model"] == name]
            assert m["last_feature_entropy"].item() == pytest.approx(np.nanmean(last["feature_entropy"][()]))
        # accuracy on the scored images, class k = output k
        acc = onnx_fe.experiments.ablate.evaluate(root / name / "model.onnx", data, device="cpu")
        assert models[models["model"] == name]["top1"].item() == pytest.approx(acc["top1"])
    # a second run reuses each model's finished scores
    stamp = (tmp_path / "c" / "a" / "results.h5").stat().st_mtime_ns
    res = onnx_fe.compare(
        [root / "a" / "model.onnx", root / "b" / "model.onnx"], data, tmp_path / "c", device="cpu", plot=False
    )
    assert (tmp_path / "c" / "a" / "results.h5").stat().st_mtime_ns == stamp
    assert [m["model"] for m in res.models] == ["a", "b"]


def test_model_names(tmp_path):
    from pathlib import Path

    assert model_names([Path("x/a.onnx"), Path("y/b.onnx")]) == ["a", "b"]
    assert model_names([Path("x/model.onnx"), Path("y/model.onnx")]) == ["x", "y"]
    assert model_names([Path("x/m/model.onnx"), Path("y/m/model.onnx")]) == ["model_0", "model_1"]


@pytest.mark.parametrize(
    "case,words",
    [
        ("one_path", "compare needs one or more models followed by the data"),
        ("not_onnx", "is not an .onnx file"),
        ("twice", "is given twice"),
    ],
)
def test_compare_errors_are_one_line(case, words, files, tmp_path, capsys):
    root, data = files
    a = str(root / "a" / "model.onnx")
    args = {"one_path": [str(data)], "not_onnx": [str(data), str(data)], "twice": [a, a, str(data)]}[case]
    code = main(["compare", *args, "-o", str(tmp_path / "c"), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("onnx-fe: error: ") and words in lines[0], err
