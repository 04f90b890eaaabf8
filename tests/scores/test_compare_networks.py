"""Network comparison: alignment by relative depth, resampled layer values, paired bootstrap, permutation test."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnx_fe.errors import OptionError
from onnx_fe.scores import compare as C
from onnx_fe.scores import statistics as S
from onnx_fe.scores.layers import unit_values


def plugin_entropy(values) -> float:
    _, c = np.unique(np.asarray(values), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def network(rng, n, units=(6, 10), vmax=30, rate=0.7, spread=1.0):
    """Birth points of a simulated network: per layer (n, C), values on 1..vmax around unit-specific centres."""
    out = []
    for c in units:
        centre = rng.integers(5, vmax - 5, c)
        vals = np.clip(np.rint(centre + spread * 3 * rng.standard_normal((n, c))), 1, vmax).astype(np.int64)
        out.append(np.where(rng.random((n, c)) < rate, vals, 0))
    return out


# ---------------------------------------------------------------------------------------------- alignment


def test_alignment_of_identical_networks_is_the_identity():
    assert C.align_layers([0, 1, 2, 3], 4, [0, 1, 2, 3], 4) == [0, 1, 2, 3]


def test_alignment_of_a_vgg_with_a_resnet_has_no_gap_and_ties_go_shallower():
    # 5 VGG layers at 0, 1/4, 1/2, 3/4, 1 against 12 ResNet layers at j/11: 1/2 lies halfway between 5/11 and 6/11
    assert C.align_layers(range(5), 5, range(12), 12) == [0, 3, 5, 8, 11]
    # the other way round every ResNet layer gets a VGG partner
    assert C.align_layers(range(12), 12, range(5), 5) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert C.relative_depth(3, 12) == pytest.approx(3 / 11)
    assert C.relative_depth(0, 1) == 0.0


@given(st.data())
def test_alignment_picks_a_nearest_layer(data):
    n_ref = data.draw(st.integers(1, 30))
    n_oth = data.draw(st.integers(1, 30))
    ref = sorted(data.draw(st.sets(st.integers(0, n_ref - 1), min_size=1)))
    oth = sorted(data.draw(st.sets(st.integers(0, n_oth - 1), min_size=1)))
    got = C.align_layers(ref, n_ref, oth, n_oth)
    assert len(got) == len(ref) and all(0 <= j < len(oth) for j in got)

    def depth(i, n):
        return Fraction(i, n - 1) if n > 1 else Fraction(0)

    for i, j in zip(ref, got):
        dist = [abs(depth(o, n_oth) - depth(i, n_ref)) for o in oth]
        assert dist[j] == min(dist) and j == dist.index(min(dist))  # nearest, the shallower on ties


def test_alignment_errors():
    with pytest.raises(OptionError):
        C.align_layers([0], 1, [], 3)
    with pytest.raises(OptionError):
        C.align_layers([4], 4, [0], 4)


# ---------------------------------------------------------------------------------------------- engine


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 14), st.integers(1, 4)), elements=st.integers(0, 6)),
    st.data(),
)
def test_weighted_unit_values_equal_repeating_the_rows(rows, data):
    """A weighting gives what the weighted copies of the rows give (plug-in FE and exact rarefied FE)."""
    n = rows.shape[0]
    w = np.array(data.draw(st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=1, max_size=4)))
    k = data.draw(st.integers(2, 5))
    fe, fr = C._class_unit_values(rows, w.astype(np.int32), k)
    for p in range(len(w)):
        rep = np.repeat(rows, w[p], axis=0)
        for j in range(rows.shape[1]):
            births = rep[:, j][rep[:, j] != 0]
            want = plugin_entropy(births) if births.size else 0.0
            assert fe[p, j] == pytest.approx(want, abs=1e-12)
            want_r = S.fe_rarefied(rep[:, j], k)
            assert (np.isnan(want_r) and np.isnan(fr[p, j])) or fr[p, j] == pytest.approx(want_r, abs=1e-12)


def test_observed_network_values_are_the_layer_means_of_the_cell_statistics():
    rng = np.random.default_rng(1)
    n = 90
    labels = rng.integers(0, 3, n)
    a, b = network(rng, n), network(rng, n, spread=2.0, rate=0.5)
    r = C.compare_networks(a, b, labels, n_resamples=0, n_permutations=0)

    def t(layers):
        fe, fr = [], []
        for bp in layers:
            st_ = S.cell_statistics(bp, labels, 3, n_resamples=0)
            fe.append(unit_values(st_.feature_entropy).mean())
            fr.append(np.nanmean(unit_values(st_.fe_rarefied)))
        return np.mean(fe), np.mean(fr)

    assert r.reference == pytest.approx(t(a), abs=1e-12)
    assert r.other == pytest.approx(t(b), abs=1e-12)
    assert r.difference == pytest.approx(np.array(t(b)) - np.array(t(a)), abs=1e-12)
    assert np.isnan(r.difference_ci).all() and np.isnan(r.p_value).all()


# ---------------------------------------------------------------------------------------------- bootstrap, permutation


@pytest.fixture(scope="module")
def clear_case():
    """Two networks on the same 120 images; the second's births are spread 2.5× wider (higher FE)."""
    rng = np.random.default_rng(7)
    n = 120
    labels = np.repeat(np.arange(4), n // 4)
    a, b = network(rng, n), network(rng, n, spread=2.5)
    return a, b, labels


def test_cis_contain_their_estimates_and_a_clear_difference_is_found(clear_case):
    a, b, labels = clear_case
    r = C.compare_networks(a, b, labels, n_resamples=300, n_permutations=199, seed=3)
    assert r.permutation == "applied" and r.n_permutations == 199
    for est, ci in ((r.reference, r.reference_ci), (r.other, r.other_ci), (r.difference, r.difference_ci)):
        assert (ci[:, 0] <= est).all() and (est <= ci[:, 1]).all()
    assert (r.difference > 0.1).all() and (r.difference_ci[:, 0] > 0).all()
    assert ((r.p_value >= 0) & (r.p_value <= 1)).all()
    assert (r.p_value == 1 / 200).all()  # no permutation reaches the observed difference


def test_comparison_is_deterministic_seeded_and_antisymmetric(clear_case):
    a, b, labels = clear_case
    kw = dict(n_resamples=200, n_permutations=99, seed=5)
    r1, r2 = C.compare_networks(a, b, labels, **kw), C.compare_networks(a, b, labels, **kw)
    for x, y in zip(r1, r2):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    r3 = C.compare_networks(a, b, labels, **{**kw, "seed": 6})
    assert not np.array_equal(r1.difference_ci, r3.difference_ci)
    assert np.array_equal(r1.difference, r3.difference)
    # swapping the two networks negates the difference and mirrors its interval; p is unchanged
    rs = C.compare_networks(b, a, labels, **kw)
    assert rs.difference == pytest.approx(-r1.difference)
    assert rs.difference_ci[:, ::-1] == pytest.approx(-r1.difference_ci)
    assert np.array_equal(rs.p_value, r1.p_value)


def test_results_do_not_depend_on_the_block_size(clear_case, monkeypatch):
    a, b, labels = clear_case
    kw = dict(n_resamples=64, n_permutations=31, seed=1)
    big = C.compare_networks(a, b, labels, **kw)
    monkeypatch.setattr(C, "_BLOCK_ELEMENTS", 500)
    small = C.compare_networks(a, b, labels, **kw)
    for x, y in zip(big, small):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_the_bootstrap_uses_the_per_class_resamples_of_score(clear_case):
    """Resample b of class q is S.image_resamples(n_q, B, seed, class_id) — the resamples of the per-cell CIs."""
    a, b, labels = clear_case
    ids = [C.class_key(c) for c in ("zero", "one", "two", "three")]
    r = C.compare_networks(a[:1], a[:1], labels, class_ids=ids, n_resamples=50, n_permutations=0, seed=9)
    assert (r.difference == 0).all() and (r.difference_ci == 0).all()
    # recompute the reference's resampled layer FE by repeating images with those multiplicities
    w = [S.image_resamples(30, 50, seed=9, class_id=q) for q in ids]
    vals = []
    for bi in range(50):
        fe = np.zeros(a[0].shape[1])
        for q in range(4):
            rows = np.repeat(a[0][labels == q], w[q][bi], axis=0)
            fe += [plugin_entropy(c[c != 0]) if (c != 0).any() else 0.0 for c in rows.T]
        vals.append((fe / 4).mean())
    lo, hi = S._row_quantiles(np.array(vals)[None, :], (0.025, 0.975))
    shift = r.reference[0] - np.mean(vals)
    assert r.reference_ci[0] == pytest.approx([min(lo[0] + shift, r.reference[0]), max(hi[0] + shift, r.reference[0])])


def test_identical_networks_give_zero_and_p_one(clear_case):
    a, _, labels = clear_case
    r = C.compare_networks(a, [x.copy() for x in a], labels, n_resamples=50, n_permutations=49)
    assert (r.difference == 0).all() and (r.p_value == 1).all()


def test_permutation_needs_swappable_rows(clear_case):
    a, b, labels = clear_case
    r = C.compare_networks(a, [b[0][:, :3], b[1]], labels, n_resamples=20, n_permutations=19)
    assert r.permutation.startswith("n/a") and np.isnan(r.p_value).all() and r.n_permutations == 0
    assert np.isfinite(r.difference_ci).all()
    with pytest.raises(OptionError):
        C.compare_networks(a, [b[0][:, :3], b[1]], labels, permutation=(True, "applied"))


def test_permutation_applicable_says_why_not():
    lay = [{"layer_index": i, "units": 8, "height": 8, "width": 8, "tap": "post-activation (Relu)"} for i in range(3)]
    assert C.permutation_applicable(lay, lay, [0, 1, 2], 0.99)[0]
    ok, why = C.permutation_applicable(lay, lay[:2], [0, 1, 1], 0.99)
    assert not ok and "3 and 2 scored layers" in why
    other = [dict(x) for x in lay]
    other[1]["units"] = 16
    ok, why = C.permutation_applicable(lay, other, [0, 1, 2], 0.99)
    assert not ok and "units (8 vs 16)" in why
    ok, why = C.permutation_applicable(lay, lay, [0, 1, 2], 0.05)
    assert not ok and "do not correspond" in why
    ok, why = C.permutation_applicable(lay, lay, [0, 1, 2])
    assert ok and "not checked" in why


def test_filter_match_tells_descendants_from_unrelated_networks():
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((16, 27)), rng.standard_normal((32, 144))]
    trained = [w + 0.8 * rng.standard_normal(w.shape) for w in init]
    fresh = [rng.standard_normal(w.shape) for w in init]
    assert C.filter_match(init, trained) >= 0.9
    assert C.filter_match(init, fresh) < 0.2
    assert np.isnan(C.filter_match(init, [None, fresh[1]]))
    assert np.isnan(C.filter_match(init, [fresh[0][:8], fresh[1]]))


def test_permutation_test_holds_its_level_when_rows_are_exchangeable():
    """Same units, independent images (exchangeable rows): p ≤ 0.1 in about 10 % of 150 trials."""
    rng = np.random.default_rng(11)
    n = 40
    labels = np.repeat(np.arange(2), n // 2)
    units = (5,)
    centre = rng.integers(5, 25, units[0])

    def draw():
        vals = np.clip(np.rint(centre + 3 * rng.standard_normal((n, units[0]))), 1, 30).astype(np.int64)
        return [np.where(rng.random((n, units[0])) < 0.7, vals, 0)]

    ps = np.array(
        [
            C.compare_networks(draw(), draw(), labels, n_resamples=0, n_permutations=49, seed=t).p_value
            for t in range(150)
        ]
    )
    rate = (ps <= 0.1).mean(axis=0)
    assert ((rate >= 0.03) & (rate <= 0.19)).all(), rate  # binomial(150, 0.1): 3 sd ≈ 0.07


def test_validation(clear_case):
    a, b, labels = clear_case
    with pytest.raises(OptionError):
        C.compare_networks([], [], labels)
    with pytest.raises(OptionError):
        C.compare_networks(a, b[:1], labels)
    with pytest.raises(OptionError):
        C.compare_networks(a, b, labels[:-1])
    with pytest.raises(OptionError):
        C.compare_networks(a, b, labels, n_resamples=-1)
    with pytest.raises(OptionError):
        C.compare_networks(a, b, labels, level=1.5)
