"""Statistics in the outputs: per-cell CIs and rarefied FE in scores.csv, layers.csv with noise null and control."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import onnx_fe
from onnx_fe.io.results import STAT_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "models/data/digits/test"


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "random"
    model = ROOT / "models/digits_vgg/random/model.onnx"
    return onnx_fe.score(model, DATA, out, images_per_class=12, control="random-init", device="cpu")


def test_scores_csv_has_the_statistics_and_each_ci_contains_its_estimate(random_run):
    df = pd.read_csv(random_run.scores_csv)
    assert set(STAT_COLUMNS) <= set(df.columns)
    assert (df["n_births"] == np.rint(df["birth_rate"] * df["n_images"])).all()
    for est, lo, hi in (
        ("feature_entropy", "fe_ci_low", "fe_ci_high"),
        ("birth_rate", "birth_rate_ci_low", "birth_rate_ci_high"),
        ("fe_rarefied", "fe_rarefied_ci_low", "fe_rarefied_ci_high"),
    ):
        ok = df[est].notna()
        assert ok.any()
        assert (df.loc[ok, lo] <= df.loc[ok, est]).all() and (df.loc[ok, est] <= df.loc[ok, hi]).all()
    # rarefied FE is defined exactly where a cell has at least k = 10 births
    assert (df["fe_rarefied"].notna() == (df["n_births"] >= 10)).all()


def test_layers_csv_reads_each_layer_against_noise_and_the_control(random_run):
    lay = pd.read_csv(random_run.layers_csv)
    need = {"layer", "layer_index", "height", "width", "tap", "n_units", "fe", "fe_rarefied", "birth_rate", "null_fe"}
    need |= {"control_fe", "delta_fe", "delta_fe_ci_low", "delta_fe_ci_high", "cohens_d"}
    assert need <= set(lay.columns)
    assert list(lay["height"]) == [32, 16, 8, 4]
    assert (lay["tap"] == "post-activation (Relu)").all()
    # a random-init network against a random-init twin: no real difference, so most CIs contain 0
    contains = (lay["delta_fe_ci_low"] <= 0) & (lay["delta_fe_ci_high"] >= 0)
    assert contains.sum() >= 3, lay[["delta_fe", "delta_fe_ci_low", "delta_fe_ci_high"]]
    assert np.allclose(lay["delta_fe"], lay["fe"] - lay["control_fe"])
    twin = random_run.output / "control" / "model.onnx"
    assert twin.is_file() and (random_run.output / "control" / "layers.csv").exists() is False
    assert random_run.control is not None and random_run.control.results_h5.is_file()


def test_statistics_are_deterministic_and_part_of_the_fingerprint(tmp_path):
    model = ROOT / "models/demo/model.onnx"
    data = ROOT / "models/demo/data"
    a = onnx_fe.score(model, data, tmp_path / "a", images_per_class=6, device="cpu", batch_size=5)
    b = onnx_fe.score(model, data, tmp_path / "b", images_per_class=6, device="cpu", batch_size=16, workers=1)
    assert a.scores_csv.read_bytes() == b.scores_csv.read_bytes()
    assert a.layers_csv.read_bytes() == b.layers_csv.read_bytes()
    c = onnx_fe.score(model, data, tmp_path / "a", images_per_class=6, device="cpu", rarefy_k=5)
    assert not c.reused
    assert (
        pd.read_csv(c.scores_csv)["fe_rarefied"].notna().sum() > pd.read_csv(b.scores_csv)["fe_rarefied"].notna().sum()
    )


def test_the_noise_null_is_of_the_layers_own_kind(tmp_path):
    """A pre-activation (signed) tap is read against signed noise, a post-activation tap against ReLU'd noise."""
    import onnx
    from graphs import G, write_image_folder

    from onnx_fe.scores.statistics import noise_null

    g = G((None, 3, 16, 16))
    g.conv(4, name="signed")  # its output feeds a second conv directly: no activation, a signed map
    g.conv(4, name="relu")
    g.act("relu")
    g.head(2)
    onnx.save(g.model(), tmp_path / "m.onnx")
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=6, size=(16, 16))
    r = onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "o", device="cpu")
    lay = pd.read_csv(r.layers_csv).set_index("layer")
    assert not lay.loc["signed", "activated"] and lay.loc["relu", "activated"]
    p = {"resolution": 100, "threshold": 75}
    signed, relu = (noise_null(16, 16, params=p, n_maps=6, relu=v) for v in (False, True))
    assert signed.birth_rate != relu.birth_rate
    assert lay.loc["signed", "null_birth_rate"] == signed.birth_rate
    assert lay.loc["relu", "null_birth_rate"] == relu.birth_rate
