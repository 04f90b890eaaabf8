"""The statistics of reproduction v2 (docs/studies/repro_stats.py, docs/studies/repro_claims.py) against independent computations."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import linregress, spearmanr

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS / "studies"))

import prereg  # noqa: E402
import repro_claims as RC  # noqa: E402
import repro_data as D  # noqa: E402
import repro_stats as S  # noqa: E402

from onnx_fe.scores.entropy import feature_entropy  # noqa: E402
from onnx_fe.scores.statistics import fe_rarefied  # noqa: E402


def _bp(rng, n=60, c=7, k=3):
    labels = np.repeat(np.arange(k), n // k)
    bp = rng.integers(0, 6, size=(n, c)) * (rng.random((n, c)) < 0.7)
    return bp, labels


def test_stratified_weights_keep_class_sizes():
    rng = np.random.default_rng(1)
    labels = np.array([0] * 5 + [1] * 9 + [2] * 3)
    w = S.stratified_weights(labels, 200, rng)
    assert w.shape == (201, labels.size)
    assert (w[0] == 1).all()
    for c in range(3):
        assert (w[1:, labels == c].sum(axis=1) == (labels == c).sum()).all()
    assert (w[1:] != 1).any()  # real resampling, not the identity


def test_subsample_weights_take_half_of_each_class():
    labels = np.array([0] * 10 + [1] * 6)
    w = S.subsample_weights(labels, 0.5, np.random.default_rng(0))
    assert set(np.unique(w)) <= {0, 1}
    assert w[labels == 0].sum() == 5 and w[labels == 1].sum() == 3


def test_cell_values_row_zero_matches_the_package():
    rng = np.random.default_rng(2)
    bp, labels = _bp(rng)
    w = S.stratified_weights(labels, 5, rng)
    cells = S.cell_values(bp, labels, w, k=5)
    for j, cl in enumerate(np.unique(labels)):
        for u in range(bp.shape[1]):
            col = bp[labels == cl, u]
            ref = feature_entropy(col)
            assert cells["fe"][0, j, u] == pytest.approx(ref.feature_entropy, abs=1e-12)
            assert cells["birth_rate"][0, j, u] == pytest.approx(ref.birth_rate, abs=1e-12)
            assert cells["ineffectiveness"][0, j, u] == pytest.approx(ref.ineffectiveness, abs=1e-12)
            r = fe_rarefied(col, k=5)
            got = cells["fe_rarefied"][0, j, u]
            assert (np.isnan(r) and np.isnan(got)) or got == pytest.approx(r, abs=1e-12)


def test_cell_values_under_a_weighting_equal_the_repeated_data():
    rng = np.random.default_rng(3)
    bp, labels = _bp(rng)
    w = S.stratified_weights(labels, 3, rng)
    cells = S.cell_values(bp, labels, w, k=5)
    rep = np.repeat(np.arange(labels.size), w[2])
    direct = S.cell_values(bp[rep], labels[rep], np.ones((1, rep.size), dtype=np.int64), k=5)
    for q in S.QUANTITIES:
        np.testing.assert_allclose(cells[q][2], direct[q][0], atol=1e-12, equal_nan=True)


def test_layer_value_is_the_mean_over_units_of_class_means():
    cells = np.array([[[1.0, np.nan, 3.0], [3.0, np.nan, np.nan]]])  # (P=1, K=2, C=3)
    # unit 0: 2, unit 1: no value, unit 2: 3 -> layer 2.5
    assert S.layer_value(cells)[0] == pytest.approx(2.5)
    assert S.coverage(cells) == pytest.approx(3 / 6)


def test_ols_slope_and_spearman_match_scipy():
    rng = np.random.default_rng(4)
    x = np.arange(6) / 5
    y = rng.normal(size=(4, 6))
    y[1, 2] = np.nan
    got = S.ols_slope(x, y)
    for i in range(4):
        ok = np.isfinite(y[i])
        assert got[i] == pytest.approx(linregress(x[ok], y[i][ok]).slope)
    xs = np.array([0.3, 0.1, 0.9, 0.5])
    ys = rng.normal(size=(5, 4))
    ys[2] = [1, 1, 2, 2]  # ties
    got = S.spearman_rows(xs, ys)
    for i in range(5):
        assert got[i] == pytest.approx(spearmanr(xs, ys[i]).statistic)
    assert np.isnan(S.spearman_rows(xs, np.array([[1.0, np.nan, 2, 3]]))[0])


def test_seed_summary_and_the_registered_interval():
    rules = prereg.load()
    rng = np.random.default_rng(5)
    per_seed = {s: np.r_[0.5 + 0.1 * s, 0.5 + 0.1 * s + rng.normal(0, 0.05, 300)] for s in range(1, 6)}
    per_seed[6] = np.full(301, np.nan)  # a seed without a value does not count
    e0, m, v = S.seed_summary(per_seed)
    np.testing.assert_allclose(e0, [0.6, 0.7, 0.8, 0.9, 1.0])
    assert v == pytest.approx(np.var(m, ddof=1))
    assert 0 < v < 0.05**2  # the mean of 5 seeds varies less than one seed
    r = RC.summarise(per_seed, +1, rules, primary=True)
    assert r["seeds"] == [1, 2, 3, 4, 5]
    assert r["mean"] == pytest.approx(0.8)
    assert r["ci_low"] > 0 and r["verdict"] == "reproduced"
    assert RC.summarise(per_seed, -1, rules, primary=True)["verdict"] == "contradicted"
    flat = {s: e - 0.8 for s, e in per_seed.items() if s < 6}
    assert RC.summarise(flat, +1, rules, primary=True)["verdict"] == "inconclusive"
    two = {1: per_seed[1], 2: per_seed[2]}
    assert RC.summarise(two, +1, rules, primary=True)["verdict"] == "inconclusive"  # S < 3: not estimable


def test_censor_is_scoring_at_the_threshold():
    import onnx_fe

    maps = np.random.default_rng(6).standard_normal((200, 12, 12))
    full = onnx_fe.birth_points(maps, method="cubical", resolution=100, threshold=100)
    for t in (25, 52, 75):
        at_t = onnx_fe.birth_points(maps, method="cubical", resolution=100, threshold=t)
        np.testing.assert_array_equal(D.censor(full, t), at_t)


def test_auc_gaps_of_a_known_ablation():
    # 4 images, one ranking, counts 0..2 of 2 units: removing the most important first drops accuracy at once
    hits = np.zeros((1, 2, 3, 4), dtype=bool)
    hits[0, 0] = [[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]]  # most important first: 1, .5, 0
    hits[0, 1] = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]  # least important first: 1, 1, 0
    abl = {"names": ["r"], "layers": {0: {"counts": np.array([0, 1, 2]), "channels": 2, "hits": hits}}}
    w = np.array([[1, 1, 1, 1], [2, 0, 2, 0]])
    g = RC.auc_gaps(abl, w)["r"][0]
    # AUC most-first = (1+.5)/4 + (.5+0)/4 = .5; least-first = (1+1)/4 + (1+0)/4 = .75
    assert g[0] == pytest.approx(0.25)
    # under the second weighting accuracy after one removal (most-first) is (0*2 + 1*2)/4 = .5 again
    assert g[1] == pytest.approx(0.25)


def test_the_committed_cubical_rule_follows_from_the_committed_records():
    import json

    rules = prereg.load()
    res = DOCS / "repro-results"
    conv = D.load_record(res / "s0" / "digits_vgg__converged__train__cubical.npz")
    init = D.load_record(res / "s0" / "digits_vgg__random__train__cubical.npz")
    got = RC.cubical_rule(conv, init, rules)
    committed = json.loads((res / "cubical_rule.json").read_text())
    assert got["threshold"] == committed["threshold"]
    assert got["agreement"] == committed["agreement"] and got["stable"] == committed["stable"]
    assert [round(c["d"], 9) for c in got["candidates"]] == [round(c["d"], 9) for c in committed["candidates"]]


def test_ablation_record_on_the_demo_model(tmp_path):
    import onnx
    import onnxruntime as ort

    from onnx_fe.experiments.ablate import removal_counts
    from onnx_fe.model.graph import find_units

    root = DOCS.parent / "models" / "demo"
    folder = root / "data"
    ids = [f"{c}/{i}.png" for c in range(3) for i in range(4)]
    labels = np.repeat(np.arange(3), 4)
    m = onnx.load(root / "model.onnx")
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and (n.name or n.output[0]) == find_units(m)[0].name)
    c = next(t.dims[0] for t in m.graph.initializer if t.name == conv.input[1])
    orders = {"a": {0: np.arange(c)}, "b": {0: np.arange(c)[::-1]}}
    p = D.ablation_record(root / "model.onnx", folder, "gray", ids, labels, orders, tmp_path / "abl.npz", steps=4)
    abl = D.load_ablation(p)
    hits = abl["layers"][0]["hits"]  # (rankings, 2 directions, counts, images)
    assert abl["layers"][0]["counts"].tolist() == removal_counts(c, 4)
    x = D.load_folder(folder, "gray", ids)
    sess = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    plain = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(axis=1) == labels
    for a in range(2):
        for d in range(2):
            np.testing.assert_array_equal(hits[a, d, 0], plain)  # nothing removed: the model itself
    # ranking b is ranking a reversed: removing b's most important first is removing a's least important first
    np.testing.assert_array_equal(hits[1, 0], hits[0, 1])
    np.testing.assert_array_equal(hits[0, 0, -1], hits[0, 1, -1])  # every unit removed, either way
    assert not np.array_equal(hits[0, 0, -1], plain) or not plain.all()
