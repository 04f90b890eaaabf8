"""The validity statistics (onnx_fe.scores.validity) against independent computations."""

import numpy as np
import pytest
from scipy import stats

from onnx_fe.scores import validity as V


def _layers(seed=0, sizes=(7, 20, 41)):
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=n) for n in sizes]
    y = [0.6 * a + rng.normal(size=len(a)) for a in x]
    return x, y


def test_per_layer_rho_is_scipy_spearman_with_ties_and_missing_values():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=30), 1)  # ties
    y = np.round(x + rng.normal(size=30), 0)  # many ties
    x[[2, 9]] = np.nan
    y[4] = np.nan
    ok = np.isfinite(x) & np.isfinite(y)
    assert V.spearman(x, y) == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic, abs=1e-12)


def test_per_layer_rho_is_nan_below_five_units_or_for_a_constant_side():
    assert np.isnan(V.spearman([1, 2, 3, 4], [2, 1, 4, 3]))
    assert not np.isnan(V.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]))
    assert np.isnan(V.spearman([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6]))
    assert np.isnan(V.spearman([1, 2, 3, 4, 5, np.nan], [1, 2, 3, 4, np.nan, 6]))  # 4 complete pairs


def test_pooled_rho_is_the_unit_weighted_mean_of_the_layers_rhos():
    x, y = _layers()
    x.append(np.arange(6.0))
    y.append(np.ones(6))  # constant target: the layer has no ρ and is left out
    x.append(np.arange(4.0))
    y.append(np.arange(4.0))  # too few units
    rhos = [stats.spearmanr(a, b).statistic for a, b in zip(x[:3], y[:3])]
    want = np.average(rhos, weights=[len(a) for a in x[:3]])
    assert V.pooled_spearman(x, y) == pytest.approx(want, abs=1e-12)
    est = V.correlation(x, y, V.resample_indices([len(a) for a in x], 50, 0))
    assert est.pooled.value == pytest.approx(want, abs=1e-12)
    assert est.pooled.n_units == 7 + 20 + 41
    assert [e.n_units for e in est.layers] == [7, 20, 41, 6, 4]
    assert np.isnan(est.layers[3].value) and np.isnan(est.layers[4].value)


def _partial_data(seed=3, sizes=(12, 30, 25)):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        br = rng.normal(size=n)
        ma = 0.5 * br + rng.normal(size=n)
        fe = br - ma + rng.normal(size=n)
        y = 0.8 * fe + ma + rng.normal(size=n)
        out.append((fe, y, br, ma))
    return out


def _residual_partial(layers):
    """The definition read literally: within-layer ranks, centred per layer, OLS residuals (numpy lstsq), Pearson."""
    cols = [[], [], [], []]
    for layer in layers:
        for k, v in enumerate(layer):
            r = stats.rankdata(v)
            cols[k].append(r - r.mean())
    fe, y, br, ma = (np.concatenate(c) for c in cols)
    Z = np.column_stack([br, ma])
    res = [v - Z @ np.linalg.lstsq(Z, v, rcond=None)[0] for v in (fe, y)]
    return float(np.corrcoef(res[0], res[1])[0, 1])


def _precision_partial(layers):
    cols = [
        np.concatenate([stats.rankdata(layer[k]) - stats.rankdata(layer[k]).mean() for layer in layers])
        for k in range(4)
    ]
    P = np.linalg.inv(np.cov(np.vstack(cols)))
    return float(-P[0, 1] / np.sqrt(P[0, 0] * P[1, 1]))


def test_partial_rho_matches_residuals_and_the_precision_matrix():
    layers = _partial_data()
    fe, y, br, ma = ([layer[k] for layer in layers] for k in range(4))
    got = V.pooled_partial_spearman(fe, y, [[b, m] for b, m in zip(br, ma)])
    assert got == pytest.approx(_residual_partial(layers), abs=1e-10)
    assert got == pytest.approx(_precision_partial(layers), abs=1e-10)
    for layer in layers:  # per layer
        assert V.partial_spearman(layer[0], layer[1], [layer[2], layer[3]]) == pytest.approx(
            _residual_partial([layer]), abs=1e-10
        )
    est = V.partial_correlation(fe, y, [[b, m] for b, m in zip(br, ma)], V.resample_indices([12, 30, 25], 20, 0))
    assert est.pooled.value == pytest.approx(got, abs=1e-12)
    assert [e.value for e in est.layers] == pytest.approx([_residual_partial([la]) for la in layers], abs=1e-10)


def test_partial_rho_differs_from_the_plain_rho_when_covariates_matter():
    layers = _partial_data()
    fe, y = [la[0] for la in layers], [la[1] for la in layers]
    assert abs(V.pooled_spearman(fe, y) - _residual_partial(layers)) > 0.05


def _gain(fe_signal: float, seed: int, sizes=(40, 60, 50), resamples=200):
    rng = np.random.default_rng(seed)
    ys, base, extra = [], [], []
    for n in sizes:
        br, ma, apoz = rng.normal(size=(3, n))
        fe = rng.normal(size=n)
        y = ma + fe_signal * fe + 0.7 * rng.normal(size=n)
        ys.append(y)
        base.append([br, ma, apoz])
        extra.append(fe)
    return V.incremental_gain(ys, base, extra, V.resample_indices(sizes, resamples, 7), seed=0)


def test_fe_increment_is_positive_when_the_target_is_built_from_fe():
    g = _gain(1.0, seed=11)
    assert g.value > 0.1
    assert g.ci_low > 0


def test_fe_increment_is_about_zero_when_fe_is_noise():
    g = _gain(0.0, seed=12)
    assert abs(g.value) < 0.05
    assert g.ci_low < 0 < g.ci_high


def test_fe_increment_folds_follow_the_seeded_permutation():
    # The data's folds: unit perm[k] of each layer goes to fold k mod 5, one default_rng(seed) for the layers in order
    keys = V.permutation_keys([7, 5], 4)
    rng = np.random.default_rng(4)
    p1, p2 = rng.permutation(7), rng.permutation(5)
    folds = V._fold_ids(np.ones((1, 12), bool), np.concatenate([keys[:, :7], keys[:, 7:]], axis=1))
    f1, f2 = V._fold_ids(np.ones((1, 7), bool), keys[:, :7])[0], V._fold_ids(np.ones((1, 5), bool), keys[:, 7:])[0]
    assert [f1[u] for u in p1] == [k % 5 for k in range(7)]
    assert [f2[u] for u in p2] == [k % 5 for k in range(5)]
    assert folds.shape == (1, 12)


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    x, y = _layers(5)
    a = V.correlation(x, y, V.resample_indices([len(v) for v in x], 300, 0))
    b = V.correlation(x, y, V.resample_indices([len(v) for v in x], 300, 0))
    c = V.correlation(x, y, V.resample_indices([len(v) for v in x], 300, 1))
    assert np.array_equal(a.pooled.replicates, b.pooled.replicates, equal_nan=True)
    assert (a.pooled.ci_low, a.pooled.ci_high) == (b.pooled.ci_low, b.pooled.ci_high)
    assert not np.array_equal(a.pooled.replicates, c.pooled.replicates)
    g1, g2 = _gain(0.5, 3, resamples=50), _gain(0.5, 3, resamples=50)
    assert np.array_equal(g1.replicates, g2.replicates)


def test_bootstrap_replicates_are_the_statistic_on_each_stratified_resample():
    x, y = _layers(6)
    idx = V.resample_indices([len(v) for v in x], 30, 2)
    est = V.correlation(x, y, idx)
    for b in (0, 13, 29):
        want = V.pooled_spearman([v[i[b]] for v, i in zip(x, idx)], [v[i[b]] for v, i in zip(y, idx)])
        assert est.pooled.replicates[b] == pytest.approx(want, abs=1e-12)
        assert est.layers[1].replicates[b] == pytest.approx(V.spearman(x[1][idx[1][b]], y[1][idx[1][b]]), abs=1e-12)
    lo, hi = np.quantile(est.pooled.replicates, [0.025, 0.975])
    assert (est.pooled.ci_low, est.pooled.ci_high) == pytest.approx((lo, hi))


def test_results_do_not_depend_on_the_block_size(monkeypatch):
    x, y = _layers(8)
    idx = V.resample_indices([len(v) for v in x], 64, 0)
    a = V.correlation(x, y, idx)
    ga = _gain(0.5, 4, resamples=40)
    monkeypatch.setattr(V, "BLOCK_VALUES", 50)
    b = V.correlation(x, y, idx)
    gb = _gain(0.5, 4, resamples=40)
    assert np.array_equal(a.pooled.replicates, b.pooled.replicates)
    assert np.array_equal(ga.replicates, gb.replicates)
