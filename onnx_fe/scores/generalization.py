"""Generalisation measures of a whole network, read from its ONNX graph (pure: no files, no inference).

The baselines of Jiang et al., "Fantastic Generalization Measures and Where to Find Them" (ICLR 2020), as
`onnx-fe compare --summary` writes them into ``networks.csv`` (docs/preregistration_generalization.md). What is a
parameter: the weight and bias of every ``Conv`` and ``Gemm`` (inputs 1 and 2), the constant input of a ``MatMul``,
the constant of an ``Add`` right after a ``MatMul`` (an exporter's bias), and the scale and bias of a
``BatchNormalization`` (inputs 1, 2; its running mean and variance are statistics, not parameters). Parameters are found
wherever they are stored: initializers or ``Constant`` nodes, also seen through ``Identity``/``Cast``/``Transpose``/
``Reshape``/… (tf2onnx's transposed weights), as :mod:`onnx_fe.model.randomize` finds them.

- **Parameter count** (:func:`param_count`): the elements of the distinct stored parameter tensors.
- **Spectral norms** (:func:`spectral_norms`, :func:`log_spec_prod`): σ_max of each Conv, Gemm and MatMul weight
  matrix as the node sees it, in float64; a Conv's matrix is its kernel reshaped to (out, in/group · kh · kw) — the
  usual proxy, not the operator norm of the convolution. A ``BatchNormalization`` that alone reads a Conv's output
  is folded into the matrix's rows (diag(γ/√(var + ε)) W, eval mode). ``log_spec_prod`` = Σ ln σ_max.
- **Path norm** (:func:`path_norm_model`): Σ over the input→output paths of the product of the squared weights on
  the path (Jiang et al., eq. 44): the sum of the outputs, on an all-ones input, of the network whose Conv, Gemm and
  MatMul weights are squared, whose biases (Conv/Gemm bias, MatMul's following Add, BatchNormalization bias) are 0
  and whose BatchNormalization is the per-channel factor (γ/√(var + ε))². Every other op (ReLU, pooling, reshapes)
  acts as in the network; with ReLU and non-negative inputs it passes everything, max pooling keeps the largest path
  sum of its window, average pooling averages.
- **Inverse margin** (:func:`inverse_margin`): 1 / the q-quantile (numpy's linear interpolation; q = 0.1 as Jiang et
  al.) of the margins z_y − max_{j≠y} z_j of the logits; +inf when that quantile is ≤ 0.
- **Sharpness / PAC-Bayes flatness** (:func:`flatness_sigma`): the largest σ in [lo, hi] at which the training loss
  rises by at most δ under Gaussian weight noise, by bisection on ln σ; the caller evaluates the loss
  (:mod:`onnx_fe.experiments.generalization` does so with onnxruntime, the same noise draws for every σ). The
  measure is 1 / σ².
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..model.randomize import _constant_attr, _Graph, _store

MARGIN_QUANTILE = 0.1
SHARPNESS_DELTA = 0.1
SHARPNESS_DRAWS = 8
SHARPNESS_STEPS = 12
SIGMA_RANGE = {"additive": (1e-4, 1.0), "multiplicative": (1e-4, 4.0)}


@dataclass(frozen=True)
class Param:
    """One parameter input of a node: the stored tensor it comes from and how the node uses it."""

    node: str  # node name (or first output)
    op: str
    role: str  # "weight", "bias", "bn_scale", "bn_bias", "bn_mean", "bn_var"
    stored: str  # initializer name or Constant output
    seen: str  # the input name of the node (the value after pass-through ops)


def _node_id(n) -> str:
    return n.name or n.output[0]


def find_parameters(model: onnx.ModelProto) -> list[Param]:
    """Every parameter input of the main graph's Conv, Gemm, MatMul (+ following Add) and BatchNormalization nodes."""
    g = _Graph(model.graph)
    out: list[Param] = []

    def add(n, idx, role):
        if idx < len(n.input) and n.input[idx]:
            tr = g.trace(n.input[idx])
            if isinstance(tr, tuple):
                out.append(Param(_node_id(n), n.op_type, role, tr[0], n.input[idx]))
                return True
        return False

    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            add(n, 1, "weight")
            add(n, 2, "bias")
        elif n.op_type == "MatMul":
            for i in (1, 0):
                if add(n, i, "weight"):
                    cons = g.consumers.get(n.output[0], [])
                    if len(cons) == 1 and cons[0].op_type == "Add":
                        a = cons[0]
                        j = 1 if a.input[0] == n.output[0] else 0
                        add(a, j, "bias")
                    break
        elif n.op_type == "BatchNormalization":
            for i, role in enumerate(("bn_scale", "bn_bias", "bn_mean", "bn_var"), start=1):
                add(n, i, role)
    return out


TRAINABLE = ("weight", "bias", "bn_scale", "bn_bias")


def param_count(model: onnx.ModelProto) -> int:
    """Elements of the distinct stored trainable parameters (weights, biases, BN scale and bias)."""
    g = _Graph(model.graph)
    seen: dict[str, int] = {}
    for p in find_parameters(model):
        if p.role in TRAINABLE and p.stored not in seen:
            shape, _ = g.stored_shape_dtype(p.stored)
            seen[p.stored] = int(np.prod(shape)) if shape is not None else 0
    return int(sum(seen.values()))


def _bn_factor(g: _Graph, bn) -> np.ndarray:
    gamma = g.value(bn.input[1]).astype(np.float64).reshape(-1)
    var = g.value(bn.input[4]).astype(np.float64).reshape(-1)
    eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
    return gamma / np.sqrt(var + eps)


def spectral_norms(model: onnx.ModelProto) -> list[tuple[str, float]]:
    """(node, σ_max) of every Conv, Gemm and MatMul with a constant weight, in graph order (float64)."""
    g = _Graph(model.graph)
    out = []
    for p in find_parameters(model):
        if p.role != "weight":
            continue
        w = g.value(p.seen).astype(np.float64)
        node = next(n for n in model.graph.node if _node_id(n) == p.node)
        if p.op == "Conv":
            m = w.reshape(w.shape[0], -1)
            cons = g.consumers.get(node.output[0], [])
            if len(cons) == 1 and cons[0].op_type == "BatchNormalization" and node.output[0] not in g.outputs:
                m = m * _bn_factor(g, cons[0])[:, None]
        else:
            if w.ndim != 2:
                raise ModelError(f"{p.op} {p.node!r}: a weight of {w.ndim} dimensions has no spectral norm here")
            m = w
        out.append((p.node, float(np.linalg.norm(m, 2))))
    return out


def log_spec_prod(model: onnx.ModelProto) -> float:
    """Σ ln σ_max over the weight matrices (:func:`spectral_norms`); -inf when one is 0, NaN when there is none."""
    s = spectral_norms(model)
    if not s:
        return float("nan")
    return float(sum(math.log(v) if v > 0 else -math.inf for _, v in s))


def path_norm_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing the path norm: weights squared, biases 0, BN as (γ/√(var + ε))² (see above).

    Sum its outputs on an all-ones input to get the path norm. Squaring is elementwise, so it is done on the stored
    tensor whatever pass-through ops lie between it and the node."""
    m = copy.deepcopy(model)
    g = _Graph(m.graph)
    params = find_parameters(m)
    done: set[str] = set()
    bns = {}
    for p in params:
        if p.op == "BatchNormalization":
            bns.setdefault(p.node, {})[p.role] = p
    for node_id, roles in bns.items():
        bn = next(n for n in m.graph.node if _node_id(n) == node_id)
        if len(roles) != 4:
            raise ModelError(f"BatchNormalization {node_id!r}: its parameters are not all constants")
        f2 = _bn_factor(g, bn) ** 2
        eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
        for role, arr in (("bn_scale", f2), ("bn_bias", 0 * f2), ("bn_mean", 0 * f2), ("bn_var", 1 - eps + 0 * f2)):
            p = roles[role]
            if p.stored in done:
                raise ModelError(f"BatchNormalization {node_id!r} shares its parameters with another node")
            _store_like(g, p.stored, arr)
            done.add(p.stored)
    for p in params:
        if p.stored in done or p.op == "BatchNormalization":
            continue
        v = _stored_value(g, p.stored)
        _store_like(g, p.stored, np.square(v) if p.role == "weight" else np.zeros_like(v))
        done.add(p.stored)
    return m


def _stored_value(g: _Graph, stored: str) -> np.ndarray:
    if stored in g.inits:
        return numpy_helper.to_array(g.inits[stored])
    a = _constant_attr(g.producers[stored])
    if a is None or a.name != "value":
        return np.asarray(helper.get_attribute_value(a), dtype=np.float32)
    return numpy_helper.to_array(a.t)


def _store_like(g: _Graph, stored: str, arr) -> None:
    old = _stored_value(g, stored)
    _store(g, stored, np.asarray(arr, dtype=old.dtype).reshape(old.shape))


def params_as_inputs(model: onnx.ModelProto, stored: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` where each named stored tensor (initializer or Constant output) is a graph input instead,
    so that one onnxruntime session can run the network with any values of those tensors."""
    m = copy.deepcopy(model)
    want = list(dict.fromkeys(stored))
    inits = {t.name: t for t in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant" and n.output}
    new_inputs = []
    for name in want:
        if name in inits:
            t = inits[name]
            new_inputs.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
            m.graph.initializer.remove(t)
        elif name in consts:
            a = _constant_attr(consts[name])
            if a is None or a.name != "value":
                raise ModelError(f"parameter {name!r} is a Constant of a kind that cannot become an input")
            new_inputs.append(helper.make_tensor_value_info(name, a.t.data_type, list(a.t.dims)))
            m.graph.node.remove(consts[name])
        else:
            raise ModelError(f"parameter {name!r} is neither an initializer nor a Constant")
    m.graph.input.extend(new_inputs)
    return m


def perturbable(model: onnx.ModelProto) -> list[str]:
    """The stored tensors the sharpness measures perturb: weights and biases of Conv, Gemm, MatMul (graph order)."""
    return list(dict.fromkeys(p.stored for p in find_parameters(model) if p.role in ("weight", "bias")))


def noise_draws(shapes: dict[str, tuple], draws: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``draws`` standard-normal draws (float64) for each tensor, in the order of ``shapes``, from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(int(draws))]


def perturb(values: dict[str, np.ndarray], eps: dict[str, np.ndarray], sigma: float, kind: str) -> dict:
    """w + σ ε (``additive``) or w + σ |w| ε (``multiplicative``), in each tensor's own dtype."""
    if kind not in SIGMA_RANGE:
        raise ValueError(kind)
    out = {}
    for k, w in values.items():
        w64 = w.astype(np.float64)
        scale = sigma if kind == "additive" else sigma * np.abs(w64)
        out[k] = (w64 + scale * eps[k]).astype(w.dtype)
    return out


def flatness_sigma(
    loss_at: Callable[..., float],
    lo: float,
    hi: float,
    delta: float = SHARPNESS_DELTA,
    steps: int = SHARPNESS_STEPS,
    *,
    bounded: bool = False,
) -> float:
    """The largest σ in [lo, hi] with loss_at(σ) − loss_at(0) ≤ δ, by ``steps`` bisections of ln σ.

    ``hi`` when already σ = hi keeps the loss within δ, ``lo`` when σ = lo does not. ``loss_at`` should use the
    same noise for every σ (then the search is a deterministic function of the network). ``bounded``: call
    ``loss_at(σ, limit)`` instead, with limit = loss_at(0) + δ; it may then stop early and return any value above
    the limit once it knows its loss exceeds it (:func:`mean_loss_above`), which leaves every decision, so the
    result, unchanged."""
    if not 0 < lo < hi:
        raise ValueError("need 0 < lo < hi")
    base = loss_at(0.0)

    def ok(s):
        v = loss_at(s, base + delta) if bounded else loss_at(s)
        return bool(np.isfinite(v)) and v - base <= delta

    if ok(hi):
        return float(hi)
    if not ok(lo):
        return float(lo)
    a, b = math.log(lo), math.log(hi)
    for _ in range(int(steps)):
        mid = 0.5 * (a + b)
        if ok(math.exp(mid)):
            a = mid
        else:
            b = mid
    return float(math.exp(a))


def mean_loss_above(losses, n: int, limit: float) -> float | None:
    """Whether the mean of ``n`` non-negative losses, of which ``losses`` are the first, is sure to exceed ``limit``
    (or to be NaN): then a value the mean's test against ``limit`` reads the same way (the partial mean, a lower
    bound of the mean, or NaN); else None. The margin keeps the answer exact under rounding."""
    v = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(v).all():
        return float("nan")  # the mean is NaN or +inf: σ fails either way
    low = math.fsum(v) / n  # the losses still to come are ≥ 0
    return low if low > limit + 1e-9 * (1.0 + abs(limit)) else None


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits (N, K) against integer labels (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z_y − max_{j≠y} z_j per row (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2 or len(y) != len(z):
        raise ValueError("margins need (N, K ≥ 2) logits and N labels")
    true = z[np.arange(len(y)), y]
    other = z.copy()
    other[np.arange(len(y)), y] = -np.inf
    return true - other.max(axis=1)


def inverse_margin(logits: np.ndarray, labels: np.ndarray, q: float = MARGIN_QUANTILE) -> float:
    """1 / the q-quantile of the margins; +inf when it is ≤ 0."""
    v = float(np.quantile(margins(logits, labels), q))
    return 1.0 / v if v > 0 else math.inf
