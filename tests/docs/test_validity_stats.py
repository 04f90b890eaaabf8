"""The validity study's combination statistics (docs/studies/validity_stats.py) against direct computations."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("validity_stats", ROOT / "docs" / "studies" / "validity_stats.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["validity_stats"] = mod
    spec.loader.exec_module(mod)
    return mod


vs = _module()


def test_holm_matches_a_direct_step_down():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 13))
        adj = vs.holm(p)
        # direct: sort, multiply the i-th smallest by (k - i), running maximum, cap at 1
        k = len(p)
        order = np.argsort(p, kind="stable")
        want = np.empty(k)
        best = 0.0
        for i, j in enumerate(order):
            best = max(best, min(1.0, (k - i) * p[j]))
            want[j] = best
        np.testing.assert_allclose(adj, want)
        # Holm rejects exactly what the textbook procedure rejects at 0.05
        rejected = adj < 0.05
        steps = np.sort(p) < 0.05 / (k - np.arange(k))
        n_rej = int(np.argmin(steps)) if not steps.all() else k
        assert rejected.sum() == n_rej


def test_holm_ignores_nan():
    adj = vs.holm([0.01, np.nan, 0.04])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.02, 0.04])


def test_combine_is_the_t_interval_of_the_registration():
    rng = np.random.default_rng(0)
    e = rng.normal(0.1, 0.05, size=5)
    reps = e[:, None] + rng.normal(0, 0.02, size=(5, 1000))
    c = vs.combine(e, reps)
    v_units = reps.mean(axis=0).var(ddof=1)
    se = np.sqrt(e.var(ddof=1) / 5 + v_units)
    q = stats.t.ppf(0.975, 4)
    assert c.m == pytest.approx(e.mean())
    assert c.low == pytest.approx(e.mean() - q * se)
    assert c.high == pytest.approx(e.mean() + q * se)
    assert c.p == pytest.approx(2 * stats.t.sf(abs(e.mean()) / se, 4))
    # with no unit variance the test is the one-sample t-test of the seeds
    t0 = vs.combine(e, np.repeat(e[:, None], 10, axis=1))
    assert t0.p == pytest.approx(stats.ttest_1samp(e, 0).pvalue)


def test_combine_not_estimable_with_one_group():
    c = vs.combine([0.3, np.nan], np.zeros((2, 10)))
    assert c.m == 0.3 and np.isnan(c.low) and np.isnan(c.p) and c.n == 1
    assert vs.verdict(c.m, vs.holm([c.p])[0]) == "inconclusive"


def test_verdicts():
    assert vs.verdict(0.2, 0.01) == "reproduced"
    assert vs.verdict(-0.2, 0.01) == "contradicted"
    assert vs.verdict(0.2, 0.05) == "inconclusive"
    assert vs.verdict(np.nan, 0.01) == "inconclusive"
    assert vs.verdict(-0.2, 0.01, direction=-1) == "reproduced"


def test_bootstrap_p():
    assert vs.bootstrap_p(1.0, np.ones(100)) == 0.0
    r = np.r_[np.full(10, -1.0), np.full(90, 1.0)]
    assert vs.bootstrap_p(1.0, r) == pytest.approx(0.2)
    assert vs.bootstrap_p(0.0, np.zeros(5)) == 1.0
