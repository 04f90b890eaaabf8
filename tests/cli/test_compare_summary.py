"""`onnx-fe compare --summary`: networks.csv end to end on the demo model and its random-init twin."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from graphs import simple_cnn, write_image_folder

from onnx_fe.cli import main
from onnx_fe.experiments.compare import NETWORKS_COLUMNS
from onnx_fe.scores import generalization as G

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    twin = root / "twin.onnx"
    assert main(["randomize", str(DEMO / "model.onnx"), "-o", str(twin), "-q"]) == 0
    out = root / "out"
    args = ["compare", DEMO / "model.onnx", twin, DEMO / "data", "-n", "3", "--summary", "--permutations", "0"]
    with pytest.MonkeyPatch.context() as mp:  # the measures are computed here, not read from a user's cache
        mp.setenv("ONNX_FE_CACHE_DIR", str(root / "cache"))
        code = main([str(a) for a in [*args, "--no-plot", "-q", "--device", "cpu", "-o", out]])
    assert code == 0
    return out, twin


def test_networks_csv_has_one_row_per_network_with_every_measure(summary):
    out, twin = summary
    df = pd.read_csv(out / "networks.csv")
    assert list(df.columns) == NETWORKS_COLUMNS
    assert list(df["model"]) == ["model", "twin"] and set(df["method"]) == {"cubical"}
    for col in ("fe_cubical", "birth_rate_cubical", "mean_activation", "param_count", "log_spec_prod", "path_norm"):
        assert np.isfinite(df[col]).all(), col
    assert df[["fe_clique", "fe_rarefied_clique", "birth_rate_clique"]].isna().all().all()  # not this run's method
    assert (df["n_images"] == 30).all()
    # network-level values are the network's own: the mean over its layers of layers.csv
    for name in ("model", "twin"):
        layers = pd.read_csv(out / name / "layers.csv")
        row = df[df["model"] == name].iloc[0]
        assert row["fe_cubical"] == pytest.approx(layers["fe"].mean(), rel=1e-12)
        assert row["birth_rate_cubical"] == pytest.approx(layers["birth_rate"].mean(), rel=1e-12)
        assert row["layers"] == len(layers)


def test_baselines_read_the_weights_of_each_network(summary):
    out, twin = summary
    df = pd.read_csv(out / "networks.csv").set_index("model")
    demo, rnd = onnx.load(DEMO / "model.onnx"), onnx.load(twin)
    assert df.loc["model", "param_count"] == df.loc["twin", "param_count"] == G.param_count(demo)
    assert df.loc["model", "log_spec_prod"] == pytest.approx(G.log_spec_prod(demo), rel=1e-12)
    assert df.loc["twin", "log_spec_prod"] == pytest.approx(G.log_spec_prod(rnd), rel=1e-12)
    assert df.loc["model", "log_spec_prod"] != df.loc["twin", "log_spec_prod"]
    # the trained demo classifies its own images; its random twin does not
    assert df.loc["model", "train_top1"] > 0.8 > df.loc["twin", "train_top1"]
    assert df.loc["model", "train_loss"] < df.loc["twin", "train_loss"]
    for kind in ("additive", "multiplicative"):
        lo, hi = G.SIGMA_RANGE[kind]
        s = df[f"sigma_{kind}"]
        assert ((s >= lo) & (s <= hi)).all()
    key = df.loc["model"]
    assert key["pacbayes_flatness"] == pytest.approx(1 / key["sigma_additive"] ** 2)
    assert math.isfinite(key["inverse_margin"]) and key["inverse_margin"] > 0


def test_summary_is_reproducible(summary, tmp_path, monkeypatch):
    out, twin = summary
    again = tmp_path / "again"
    monkeypatch.setenv("ONNX_FE_CACHE_DIR", str(tmp_path / "cache"))  # computed again (in 2 processes), not read
    args = ["compare", DEMO / "model.onnx", twin, DEMO / "data", "-n", "3", "--summary", "--permutations", "0"]
    assert main([str(a) for a in [*args, "--no-plot", "-q", "--device", "cpu", "-o", again, "-j", "2"]]) == 0
    a, b = pd.read_csv(out / "networks.csv"), pd.read_csv(again / "networks.csv")
    pd.testing.assert_frame_equal(a.drop(columns="path"), b.drop(columns="path"), check_exact=True)


def test_summary_with_more_classes_than_outputs_is_one_line(tmp_path, capsys):
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16), n_classes=2), tmp_path / "m.onnx")
    write_image_folder(tmp_path / "data", n_classes=3, per_class=2, size=(16, 16))
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "compare", tmp_path / "m.onnx", tmp_path / "data", "--summary", "--no-plot", "-q", "-o", out
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error:") and "outputs" in lines[0]
    assert not (out / "networks.csv").exists()
