"""How much of FE is activity: Spearman's ρ over units with a bootstrap CI, against scipy and a direct bootstrap."""

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import onnx_fe
from onnx_fe.scores.activity import MIN_UNITS, fe_activity_columns, spearman_ci, unit_resamples
from onnx_fe.scores.layers import layer_row


def fixed_units(n=40, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    y = 0.6 * x + rng.random(n)
    x[:6] = 0.25  # ties on both sides, as units with equal FE (e.g. no birth point) give
    y[3:9] = 1.0
    return x, y


def direct_bootstrap(x, y, idx, level):
    """One resample at a time, with scipy: the percentile interval of the defined ρ."""
    rho = []
    for i in idx:
        xs, ys = x[i], y[i]
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue
        rho.append(spearmanr(xs, ys).statistic)
    return np.quantile(rho, [(1 - level) / 2, (1 + level) / 2])


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_rho_and_ci_match_scipy_and_a_direct_bootstrap(level):
    x, y = fixed_units()
    iv = spearman_ci(x, y, level=level, n_resamples=400, seed=3, key=5)
    assert iv.n == len(x)
    assert iv.estimate == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    idx = unit_resamples(len(x), 400, seed=3, key=5)
    assert idx.shape == (400, len(x)) and idx.min() >= 0 and idx.max() < len(x)
    lo, hi = direct_bootstrap(x, y, idx, level)
    assert iv.low == pytest.approx(lo, abs=1e-12) and iv.high == pytest.approx(hi, abs=1e-12)
    assert iv.low < iv.estimate < iv.high


def test_the_resamples_are_seeded_by_seed_and_layer():
    x, y = fixed_units()
    a = spearman_ci(x, y, n_resamples=200, seed=0, key=1)
    assert spearman_ci(x, y, n_resamples=200, seed=0, key=1) == a
    assert spearman_ci(x, y, n_resamples=200, seed=1, key=1) != a
    assert spearman_ci(x, y, n_resamples=200, seed=0, key=2) != a
    assert not np.array_equal(unit_resamples(10, 5, 0, 1), unit_resamples(10, 5, 0, 2))


def test_many_units_take_several_chunks_and_agree_with_scipy():
    rng = np.random.default_rng(1)
    n = 3000  # above the chunk of 2**21 entries per 1000 resamples: blocks of resamples
    x, y = rng.random(n), rng.random(n)
    y[: n // 2] += x[: n // 2]
    idx = unit_resamples(n, 1000, seed=2, key=0)
    iv = spearman_ci(x, y, n_resamples=1000, seed=2, key=0)
    assert iv.estimate == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    lo, hi = direct_bootstrap(x, y, idx[:1000], 0.95)
    assert (iv.low, iv.high) == pytest.approx((lo, hi), abs=1e-12)


def test_only_units_with_both_values_finite_count():
    x, y = fixed_units(30)
    xn, yn = x.copy(), y.copy()
    xn[[2, 11]] = np.nan
    yn[20] = np.inf
    keep = np.ones(30, bool)
    keep[[2, 11, 20]] = False
    got = spearman_ci(xn, yn, n_resamples=100, seed=0, key=0)
    want = spearman_ci(x[keep], y[keep], n_resamples=100, seed=0, key=0)
    assert got == want and got.n == 27


def test_undefined_cases_are_nan():
    x, y = np.arange(10.0), np.array([3.0, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    iv = spearman_ci(x[: MIN_UNITS - 1], y[: MIN_UNITS - 1], n_resamples=50)
    assert np.isnan(iv.estimate) and np.isnan(iv.low) and iv.n == MIN_UNITS - 1
    assert np.isfinite(spearman_ci(x[:MIN_UNITS], y[:MIN_UNITS], n_resamples=50).estimate)
    const = spearman_ci(np.full(10, 2.0), np.arange(10.0), n_resamples=50)
    assert np.isnan(const.estimate) and np.isnan(const.low) and np.isnan(const.high)
    no_ci = spearman_ci(*fixed_units(), n_resamples=0)
    assert np.isfinite(no_ci.estimate) and np.isnan(no_ci.low) and np.isnan(no_ci.high)
    # perfect orders: ρ = ±1 with a degenerate interval
    up = spearman_ci(np.arange(8.0), np.arange(8.0) ** 2, n_resamples=100)
    assert up.estimate == 1.0 and up.low == pytest.approx(1.0) and up.high == pytest.approx(1.0)
    down = spearman_ci(np.arange(8.0), -np.arange(8.0), n_resamples=100)
    assert down.estimate == -1.0 and down.high == pytest.approx(-1.0)


def test_layer_row_uses_the_class_means_of_each_unit():
    rng = np.random.default_rng(4)
    k, c = 3, 12
    fe, br, ma = rng.random((k, c)), rng.random((k, c)), rng.random((k, c))
    fe[1, 4] = np.nan  # a class without images for one unit: the unit's mean is over the other classes
    layer = {
        "layer": "conv",
        "layer_index": 6,
        "height": 8,
        "width": 8,
        "tap": "post",
        "activated": True,
        "n_units": c,
        "n_images": np.array([5, 5, 5]),
        "feature_entropy": fe,
        "birth_rate": br,
        "fe_rarefied": fe,
        "mean_activation": ma,
    }
    row = layer_row(layer, 0.9, n_resamples=300, seed=8)
    want = fe_activity_columns(
        np.nanmean(fe, axis=0), ma.mean(0), br.mean(0), level=0.9, n_resamples=300, seed=8, layer_index=6
    )
    for key, v in want.items():
        assert row[key] == v, key
    assert row["rho_fe_mean_activation"] == pytest.approx(spearmanr(np.nanmean(fe, 0), ma.mean(0)).statistic)
    assert row["rho_fe_birth_rate"] == pytest.approx(spearmanr(np.nanmean(fe, 0), br.mean(0)).statistic)
    del layer["mean_activation"]  # without the activity statistic (a caller's own dict): no columns
    assert "rho_fe_mean_activation" not in layer_row(layer, 0.9)


COLUMNS = [f"rho_fe_{s}{suffix}" for s in ("mean_activation", "birth_rate") for suffix in ("", "_ci_low", "_ci_high")]


ROOT = Path(__file__).resolve().parents[2]


def test_demo_run_layers_csv_has_the_columns(tmp_path):
    model, data = ROOT / "models/demo/model.onnx", ROOT / "models/demo/data"
    r = onnx_fe.score(model, data, tmp_path / "out", images_per_class=6, resamples=200, workers=1, device="cpu")
    with open(r.layers_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(COLUMNS) <= set(rows[0])
    import pandas as pd

    scores = pd.read_csv(r.scores_csv)
    for row in rows:
        layer = scores[scores["layer_index"] == int(row["layer_index"])]
        c = layer["unit"].nunique()

        def unit_means(col, layer=layer, c=c):  # (K, C) class × unit table → each unit's mean over classes
            t = layer.sort_values(["class", "unit"])[col].to_numpy().reshape(-1, c)
            return np.nanmean(t, axis=0)

        fe, ma, br = unit_means("feature_entropy"), unit_means("mean_activation"), unit_means("birth_rate")
        for name, other in (("mean_activation", ma), ("birth_rate", br)):
            want = spearman_ci(fe, other, n_resamples=200, seed=0, key=int(row["layer_index"]))
            got = [float(row[f"rho_fe_{name}{s}"]) for s in ("", "_ci_low", "_ci_high")]
            assert got == pytest.approx([want.estimate, want.low, want.high], abs=1e-12)
            assert got[0] == pytest.approx(spearmanr(fe, other).statistic, abs=1e-12)
    assert all(np.isfinite(r_["rho_fe_birth_rate_ci_low"]) for r_ in r.layers)
