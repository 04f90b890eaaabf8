"""The generalisation study's τ / Ψ code (docs/studies/generalization_stats.py) against scipy and a hand-made grid."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("generalization_stats", ROOT / "docs/studies/generalization_stats.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["generalization_stats"] = mod
    spec.loader.exec_module(mod)
    return mod


gs = _module()


@pytest.mark.parametrize("seed", range(6))
def test_tau_b_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.integers(-3, 4, 30)
    assert gs.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_tau_b_with_multiplicities_is_tau_b_of_the_repeated_data():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12)
    w = rng.integers(0, 4, 12)
    rep = np.repeat(np.arange(12), w)
    assert gs.kendall_tau_b(x, y, w) == pytest.approx(stats.kendalltau(x[rep], y[rep]).statistic, abs=1e-12)


def test_tau_b_ranks_inf_above_and_drops_nan():
    x = np.array([1.0, np.inf, 3.0, np.nan, np.inf])
    y = np.array([1.0, 5.0, 2.0, 9.0, 4.0])
    big = np.array([1.0, 1e300, 3.0, 1e300])  # +inf behaves as a value above every finite one, ties with itself
    assert gs.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(big, y[[0, 1, 2, 4]]).statistic, abs=1e-12)


def test_psi_on_a_hand_made_grid():
    # four axes; base 0000 and its four neighbours, base 1111 and its four neighbours (as the study's design)
    bits = ["0000", "1000", "0100", "0010", "0001", "1111", "0111", "1011", "1101", "1110"]
    groups = gs.axis_groups(bits)
    assert groups == {0: [(0, 1), (5, 6)], 1: [(0, 2), (5, 7)], 2: [(0, 3), (5, 8)], 3: [(0, 4), (5, 9)]}
    gap = np.array([0.10, 0.20, 0.05, 0.10, 0.15, 0.30, 0.25, 0.40, 0.30, 0.20])
    m = np.array([1.0, 2.0, 3.0, 0.5, 0.8, 5.0, 4.0, 6.0, 5.0, 4.5])
    # axis 0: both pairs concordant → 1; axis 1: one discordant, one concordant → 0
    # axis 2: ties in the gap → 0; axis 3: one discordant, one concordant → 0
    value, per = gs.psi(m, gap, groups)
    assert per == {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0} and value == pytest.approx(1 / 4)
    # a pair's τ is scipy's τ-b of its two networks (NaN there when one side ties: 0 here)
    for pairs in groups.values():
        for a, b in pairs:
            t = stats.kendalltau(m[[a, b]], gap[[a, b]]).statistic
            assert (0.0 if np.isnan(t) else t) == np.sign(m[a] - m[b]) * np.sign(gap[a] - gap[b])
    # weights: pair (a, b) counts w_a · w_b; a network drawn 0 times removes its pairs
    w = np.array([0, 1, 1, 1, 1, 2, 1, 3, 1, 1])
    value_w, per_w = gs.psi(m, gap, groups, w)
    assert per_w == {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0} and value_w == pytest.approx(3 / 4)
    # an axis whose pairs are all gone is left out of Ψ
    w2 = np.array([0, 1, 1, 1, 1, 0, 1, 1, 1, 1])
    assert gs.psi(m, gap, groups, w2) == (pytest.approx(float("nan"), nan_ok=True), {})


def test_overall_tau_is_the_mean_over_datasets():
    rng = np.random.default_rng(3)
    m, g = rng.normal(size=20), rng.normal(size=20)
    ds = np.array(["digits"] * 10 + ["shapes"] * 10)
    want = np.mean([stats.kendalltau(m[:10], g[:10]).statistic, stats.kendalltau(m[10:], g[10:]).statistic])
    assert gs.tau_overall(m, g, ds) == pytest.approx(want, abs=1e-12)


def test_resamples_stay_within_datasets_and_bootstrap_p():
    ds = np.array(["a"] * 5 + ["b"] * 3)
    w = gs.resample_weights(ds, 200, seed=0)
    assert (w[:, :5].sum(1) == 5).all() and (w[:, 5:].sum(1) == 3).all()
    assert np.array_equal(w, gs.resample_weights(ds, 200, seed=0))
    lo, hi, p = gs.bootstrap(lambda ww: ww[0] - 0.5, w)  # multiplicity of network 0 minus 0.5
    share_le = np.mean(w[:, 0] - 0.5 <= 0)
    assert p == pytest.approx(min(1, 2 * min(share_le, 1 - share_le)))


def test_holm_step_down():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 with k = 4: 0.02, 0.03, 0.06, 0.06 (monotone)
    assert np.allclose(gs.holm(p), [0.03, 0.06, 0.06, np.nan, 0.02], equal_nan=True)
