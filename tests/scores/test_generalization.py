"""The generalisation baselines against independent computations on small networks built here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_fe.experiments.generalization import measures_of
from onnx_fe.scores import generalization as G
from tests.graphs import IR_VERSION, OPSET


def _net(rng, bn=False, constants=False, cin=2, cout=3, side=4, k=3, n_classes=3):
    """Conv(k×k, pad 1)[-BN]-ReLU-Flatten-Gemm(transB=1): weights returned for the direct computations."""
    w1 = rng.normal(0, 0.6, (cout, cin, k, k)).astype(np.float32)
    b1 = rng.normal(0, 0.3, cout).astype(np.float32)
    w2 = rng.normal(0, 0.4, (n_classes, cout * side * side)).astype(np.float32)
    b2 = rng.normal(0, 0.3, n_classes).astype(np.float32)
    bnp = [rng.uniform(0.5, 1.5, cout), rng.normal(0, 0.2, cout), rng.normal(0, 0.2, cout), rng.uniform(0.5, 2, cout)]
    bnp = [a.astype(np.float32) for a in bnp]
    tensors = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    if bn:
        tensors.update(zip(("g", "be", "mu", "var"), bnp))
    nodes, inits = [], []
    for name, arr in tensors.items():
        if constants:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_v")))
        else:
            inits.append(numpy_helper.from_array(arr, name))
    nodes.append(helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[k, k], pads=[1, 1, 1, 1]))
    cur = "c"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], epsilon=1e-5))
        cur = "n"
    nodes += [
        helper.make_node("Relu", [cur], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, cin, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_classes])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    scale = bnp[0].astype(np.float64) / np.sqrt(bnp[3].astype(np.float64) + 1e-5) if bn else np.ones(cout)
    return m, w1.astype(np.float64), w2.astype(np.float64), scale


def _path_norm_by_paths(w1, w2, scale, side):
    """Σ over every input→output path of the product of its squared weights, enumerating the paths one by one."""
    cout, cin, k, _ = w1.shape
    total = 0.0
    for o, i, y, x in itertools.product(range(cout), range(cin), range(side), range(side)):  # conv output (o, y, x)
        for dy, dx in itertools.product(range(k), range(k)):
            sy, sx = y + dy - 1, x + dx - 1
            if not (0 <= sy < side and 0 <= sx < side):
                continue  # padding: no input there, no path
            first = (w1[o, i, dy, dx] * scale[o]) ** 2
            hidden = o * side * side + y * side + x
            for cls in range(w2.shape[0]):
                total += first * w2[cls, hidden] ** 2
    return total


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("constants", [False, True])
def test_path_norm_is_the_sum_over_paths(bn, constants):
    m, w1, w2, scale = _net(np.random.default_rng(1), bn=bn, constants=constants)
    x = np.zeros((3, 2, 4, 4), np.float32)
    got = measures_of(m, x, np.array([0, 1, 2]), sharpness=False)["path_norm"]
    want = _path_norm_by_paths(w1, w2, scale, 4)
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("bn", [False, True])
def test_spectral_norms_against_numpy_svd(bn):
    m, w1, w2, scale = _net(np.random.default_rng(2), bn=bn)
    mats = [w1.reshape(w1.shape[0], -1) * scale[:, None], w2]
    want = [np.linalg.svd(a, compute_uv=False)[0] for a in mats]
    got = [s for _, s in G.spectral_norms(m)]
    assert got == pytest.approx(want, rel=1e-9)
    assert G.log_spec_prod(m) == pytest.approx(sum(math.log(v) for v in want), rel=1e-9)


def test_param_count_counts_trainable_tensors_wherever_stored():
    for constants in (False, True):
        m, w1, w2, _ = _net(np.random.default_rng(3), bn=True, constants=constants)
        # conv weight + bias, BN scale + bias (not its statistics), Gemm weight + bias
        assert G.param_count(m) == w1.size + 3 + 3 + 3 + w2.size + 3


def test_inverse_margin_by_hand():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 1.0, 4.0], [0.0, 5.0, 0.0]])
    labels = np.array([0, 1, 2, 0])
    m = np.array([2.0, 0.5, 3.0, -5.0])
    assert np.array_equal(G.margins(logits, labels), m)
    q = np.quantile(m, 0.1)
    assert q < 0 and G.inverse_margin(logits, labels) == math.inf
    assert G.inverse_margin(logits[:3], labels[:3]) == pytest.approx(1 / np.quantile(m[:3], 0.1))


def test_flatness_sigma_finds_a_known_boundary():
    # loss(σ) − loss(0) = σ²: the largest σ within δ is √δ, found to the bisection's resolution
    sigma = G.flatness_sigma(lambda s: s * s, 1e-4, 1.0, delta=0.1, steps=20)
    assert sigma <= math.sqrt(0.1) and sigma == pytest.approx(math.sqrt(0.1), rel=1e-4)
    assert G.flatness_sigma(lambda s: 0.0, 1e-4, 1.0) == 1.0  # flat everywhere: the top of the range
    assert G.flatness_sigma(lambda s: 0.0 if s == 0 else 1.0, 1e-4, 1.0) == 1e-4  # sharp everywhere


def _linear(w, b):
    ins = ["x", "w"] + (["b"] if b is not None else [])
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    g = helper.make_graph(
        [helper.make_node("Gemm", ins, ["y"], transB=1)],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, w.shape[0]])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    return m


def _numpy_loss(x, y, w, b, eps, sigma, kind):
    """Mean over the draws of the cross-entropy of the perturbed linear model, computed in NumPy."""
    out = []
    for e in eps:
        ww = w + (sigma if kind == "additive" else sigma * np.abs(w)) * e["w"]
        bb = b + (sigma if kind == "additive" else sigma * np.abs(b)) * e["b"]
        z = x @ ww.astype(np.float32).astype(np.float64).T + bb.astype(np.float32).astype(np.float64)
        out.append(G.cross_entropy(z, y))
    return float(np.mean(out))


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_sharpness_of_a_linear_model_is_the_boundary_of_the_loss_rise(kind):
    rng = np.random.default_rng(4)
    w = rng.normal(0, 1, (3, 5)).astype(np.float32)
    b = rng.normal(0, 0.5, 3).astype(np.float32)
    x = rng.normal(0, 1, (40, 5)).astype(np.float32)
    y = (x.astype(np.float64) @ w.T + b).argmax(1)
    r = measures_of(_linear(w, b), x, y, draws=8, steps=12)
    sigma = r["sigma_additive" if kind == "additive" else "sigma_multiplicative"]
    lo, hi = G.SIGMA_RANGE[kind]
    assert lo < sigma < hi
    eps = G.noise_draws({"w": w.shape, "b": b.shape}, 8, 0)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    base = _numpy_loss(x64, y, w64, b64, [{"w": 0 * w64, "b": 0 * b64}], 0.0, kind)
    step = math.exp((math.log(hi) - math.log(lo)) / 2**12)  # the bisection's resolution
    assert _numpy_loss(x64, y, w64, b64, eps, sigma, kind) - base <= 0.1 + 1e-6
    assert _numpy_loss(x64, y, w64, b64, eps, sigma * step * 1.0001, kind) - base > 0.1 - 1e-6
    key = "pacbayes_flatness" if kind == "additive" else "pacbayes_mag_flatness"
    assert r[key] == pytest.approx(1 / sigma**2)


def test_sharpness_is_the_top_of_the_range_when_the_output_ignores_the_weights():
    # all-zero inputs and no bias: the logits are 0 whatever the weights, the loss never rises
    w = np.random.default_rng(5).normal(0, 1, (3, 4)).astype(np.float32)
    r = measures_of(_linear(w, None), np.zeros((10, 4), np.float32), np.arange(10) % 3)
    assert r["sigma_additive"] == G.SIGMA_RANGE["additive"][1]
    assert r["sigma_multiplicative"] == G.SIGMA_RANGE["multiplicative"][1]


def test_measures_are_deterministic_and_the_graph_is_left_alone():
    m, *_ = _net(np.random.default_rng(6))
    before = m.SerializeToString()
    x = np.random.default_rng(7).random((12, 2, 4, 4)).astype(np.float32)
    y = np.arange(12) % 3
    a, b = measures_of(m, x, y, draws=2, steps=4), measures_of(m, x, y, draws=2, steps=4)
    assert a == b and m.SerializeToString() == before


def test_bounded_search_stops_draws_early_and_finds_the_same_sigma():
    # a mean over 4 draws of (1 + k/4)·σ² with loss(0) = 0: the bounded search may stop a σ's draws once their
    # partial mean is above loss(0) + δ, and still takes every decision, so σ*, as the full search does
    n, delta = 4, 0.1
    used = []

    def loss_at(s, limit=math.inf):
        losses = []
        for k in range(n):
            losses.append((1 + k / n) * s * s)
            early = G.mean_loss_above(losses, n, limit)
            if early is not None:
                used.append(k + 1)
                return early
        used.append(n)
        return float(np.mean(losses))

    full = G.flatness_sigma(loss_at, 1e-4, 1.0, delta=delta, steps=16)
    n_full = sum(used)
    used.clear()
    bounded = G.flatness_sigma(loss_at, 1e-4, 1.0, delta=delta, steps=16, bounded=True)
    assert bounded == full and sum(used) < n_full
    assert G.mean_loss_above([0.5, 0.7], 4, 0.2) == pytest.approx(0.3)  # 1.2 / 4 > 0.2: the mean is above
    assert G.mean_loss_above([0.5, 0.7], 4, 0.3) is None  # 0.3 is not above 0.3: not sure yet
    assert math.isnan(G.mean_loss_above([0.1, float("nan")], 4, 10.0))  # a NaN draw: the mean is NaN
