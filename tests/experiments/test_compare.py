"""Several networks scored on the same data, side by side."""

from pathlib import Path

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


# ---------------------------------------------------------------------------------------------- with uncertainty (zoo)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models"


@pytest.fixture(scope="module")
def digits_pair(tmp_path_factory):
    """The converged digits VGG against its own initial weights (same architecture, units descend from them)."""
    out = tmp_path_factory.mktemp("zoo_digits")
    models = [ZOO / "digits_vgg/converged/model.onnx", ZOO / "digits_vgg/random/model.onnx"]
    kw = dict(images_per_class=10, device="cpu", plot=False, accuracy=False, resamples=200, permutations=199)
    return onnx_fe.compare(models, ZOO / "data/digits/test", out, **kw), models, kw


def test_same_architecture_gives_cis_and_a_small_permutation_p(digits_pair):
    res, _, _ = digits_pair
    models = pd.read_csv(res.models_csv)
    layers = pd.read_csv(res.layers_csv)
    ref, rnd = models.iloc[0], models.iloc[1]
    assert rnd["aligned_layers"] == "0:0 1:1 2:2 3:3" and rnd["unit_match"] > 0.9
    assert rnd["permutation"].startswith("applied") and rnd["n_permutations"] == 199
    for s in ("fe", "fe_rarefied"):
        for row in (ref, rnd):
            assert row[f"net_{s}_ci_low"] <= row[f"net_{s}"] <= row[f"net_{s}_ci_high"]
        assert rnd[f"delta_net_{s}_ci_low"] <= rnd[f"delta_net_{s}"] <= rnd[f"delta_net_{s}_ci_high"]
        assert 0 <= rnd[f"p_net_{s}"] <= 1
    # training changes the network's raw FE clearly: the CI excludes 0 and no permutation reaches it
    assert rnd["delta_net_fe_ci_high"] < 0 and rnd["p_net_fe"] == pytest.approx(1 / 200)
    assert rnd["delta_net_fe"] == pytest.approx(rnd["net_fe"] - ref["net_fe"])
    # per layer: Δ = model − reference with a Welch CI over units that contains it, and Cohen's d
    mine = layers[layers["model"] == "random"].set_index("ref_layer_index")
    base = layers[layers["model"] == "converged"].set_index("ref_layer_index")
    assert list(mine.index) == [0, 1, 2, 3] and base["delta_fe"].isna().all()
    assert np.allclose(mine["delta_fe"], mine["feature_entropy"] - base["feature_entropy"])
    assert (mine["delta_fe_ci_low"] <= mine["delta_fe"]).all() and (mine["delta_fe"] <= mine["delta_fe_ci_high"]).all()
    assert mine["cohens_d"].notna().all()
    # the network value is the mean of the layer values over the aligned layers
    assert rnd["net_fe"] == pytest.approx(mine["feature_entropy"].mean())
    assert rnd["delta_net_fe"] == pytest.approx(mine["delta_fe"].mean())


def test_comparison_is_deterministic(digits_pair, tmp_path):
    res, models, kw = digits_pair
    before = res.models_csv.read_bytes(), res.layers_csv.read_bytes()
    again = onnx_fe.compare(models, ZOO / "data/digits/test", res.output, **kw)  # reuses the scores
    assert (again.models_csv.read_bytes(), again.layers_csv.read_bytes()) == before
    other = onnx_fe.compare(models, ZOO / "data/digits/test", res.output, **{**kw, "permutations": 99})
    assert pd.read_csv(other.models_csv)["n_permutations"].iloc[1] == 99


def test_different_architectures_align_by_relative_depth_without_gaps(tmp_path, capsys):
    vgg, resnet = ZOO / "shapes_vgg/converged/model.onnx", ZOO / "shapes_resnet/converged/model.onnx"
    args = ["compare", str(vgg), str(resnet), str(ZOO / "data/shapes/test"), "-o", str(tmp_path / "c")]
    args += ["--images-per-class", "5", "--device", "cpu", "--no-plot", "--no-accuracy", "--resamples", "100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = out.split("Rows:")[0]
    assert "—" not in table and "network" in table and "p n/a" in table
    assert "permutation test n/a: the networks have 5 and 12 scored layers" in out.replace("\n", " ")
    models = pd.read_csv(tmp_path / "c" / "compare_models.csv")
    layers = pd.read_csv(tmp_path / "c" / "compare_layers.csv")
    res_row = models.iloc[1]
    assert res_row["aligned_layers"] == "0:0 1:3 2:5 3:8 4:11" and res_row["conv_layers"] == 12
    assert np.isnan(res_row["p_net_fe"]) and res_row["n_permutations"] == 0
    assert res_row["delta_net_fe_ci_low"] <= res_row["delta_net_fe"] <= res_row["delta_net_fe_ci_high"]
    mine = layers[layers["model"] == res_row["model"]]
    assert list(mine["ref_layer_index"]) == [0, 1, 2, 3, 4] and list(mine["layer_index"]) == [0, 3, 5, 8, 11]
    assert np.allclose(mine["relative_depth"], [0, 3 / 11, 5 / 11, 8 / 11, 1])
    assert mine["delta_fe"].notna().all() and mine["feature_entropy"].notna().all()


def test_cli_shows_rarefied_fe_and_refuses_bad_permutations(digits_pair, capsys):
    res, models, _ = digits_pair
    data = ZOO / "data/digits/test"
    base = ["compare", *map(str, models), str(data), "-o", str(res.output), "--device", "cpu", "--no-plot"]
    base += ["--no-accuracy", "--images-per-class", "10", "--resamples", "200", "--permutations", "199"]
    assert main([*base, "--rarefied"]) == 0
    out = capsys.readouterr().out
    assert "rarefied FE per layer, aligned by relative depth with converged" in out and "p=" in out
    assert "random: permutation test" not in out  # applied: no n/a line
    assert main([*base[:-2], "--permutations", "-1", "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--permutations" in err[0]
