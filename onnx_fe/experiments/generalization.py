"""The generalisation baselines of one network on its training images (``onnx-fe compare --summary``).

:func:`network_measures` loads the model and the images exactly as :func:`onnx_fe.score` does (same options, same
images and preprocessing) and returns the measures of :mod:`onnx_fe.scores.generalization`: parameter count, log
product of spectral norms, path norm, inverse margin, and the two PAC-Bayes flatness measures (additive and
multiplicative noise). Inference runs on onnxruntime's CPU provider with one thread, so the numbers do not depend on
the machine's thread count. Deterministic: the noise draws come from ``default_rng(sharpness_seed)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ModelError, OnnxFeError
from ..execution.cpus import usable_cpus
from ..scores import generalization as G

MEASURES = (
    "param_count",
    "log_spec_prod",
    "path_norm",
    "inverse_margin",
    "pacbayes_flatness",
    "sigma_additive",
    "pacbayes_mag_flatness",
    "sigma_multiplicative",
    "train_loss",
    "train_top1",
    "n_images",
)


def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot run the measures' graph: {' '.join(str(e).split())[:300]}") from None


def _image_input(model) -> str:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ModelError(f"the generalisation measures need a model with one image input, found {len(names)}")
    return names[0]


def _run(sess, image: str, x: np.ndarray, feeds=None, batch: int = 256, fixed: int | None = None) -> np.ndarray:
    """The first output on ``x``, in batches (of exactly ``fixed`` images, the last padded, for a fixed-batch model)."""
    out_name = sess.get_outputs()[0].name
    step = fixed or batch
    parts = []
    for s in range(0, len(x), step):
        xb = x[s : s + step]
        real = len(xb)
        if fixed and real < fixed:
            xb = np.concatenate([xb, np.repeat(xb[-1:], fixed - real, axis=0)])
        parts.append(sess.run([out_name], {image: xb, **(feeds or {})})[0][:real])
    z = np.concatenate(parts).astype(np.float64)
    if z.ndim != 2:
        z = z.reshape(len(x), -1)
    return z


def measures_of(
    model,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    sharpness: bool = True,
    draws: int = G.SHARPNESS_DRAWS,
    steps: int = G.SHARPNESS_STEPS,
    delta: float = G.SHARPNESS_DELTA,
    sharpness_seed: int = 0,
    fixed_batch: int | None = None,
) -> dict:
    """The measures of an in-memory ONNX model on preprocessed images ``x`` with integer ``labels``."""
    image = _image_input(model)
    labels = np.asarray(labels)

    def _logits(sess, image, x, feeds=None):
        return _run(sess, image, x, feeds, fixed=fixed_batch)

    z = _logits(_session(model), image, x)
    if z.shape[1] <= int(labels.max()):
        raise OnnxFeError(f"the model has {z.shape[1]} outputs but the data have {int(labels.max()) + 1} classes")
    if not np.isfinite(z).all():
        raise OnnxFeError("the model's output holds NaN or ±inf on the training images")
    out = {
        "param_count": G.param_count(model),
        "log_spec_prod": G.log_spec_prod(model),
        "inverse_margin": G.inverse_margin(z, labels),
        "train_loss": G.cross_entropy(z, labels),
        "train_top1": float((z.argmax(1) == labels).mean()),
        "n_images": len(labels),
    }
    pn = G.path_norm_model(model)
    ones = np.ones((fixed_batch or 1, *x.shape[1:]), dtype=x.dtype)
    out["path_norm"] = float(np.sum(_logits(_session(pn), image, ones)[:1], dtype=np.float64))
    if sharpness:
        names = G.perturbable(model)
        from ..model.randomize import _Graph

        g = _Graph(model.graph)
        values = {n: G._stored_value(g, n) for n in names}
        eps = G.noise_draws({n: v.shape for n, v in values.items()}, draws, sharpness_seed)
        sess = _session(G.params_as_inputs(model, names))
        for kind, key, sig in (
            ("additive", "pacbayes_flatness", "sigma_additive"),
            ("multiplicative", "pacbayes_mag_flatness", "sigma_multiplicative"),
        ):

            def loss_at(sigma, limit=math.inf, kind=kind):
                if sigma == 0:
                    return G.cross_entropy(_logits(sess, image, x, values), labels)
                losses = []
                for e in eps:
                    losses.append(G.cross_entropy(_logits(sess, image, x, G.perturb(values, e, sigma, kind)), labels))
                    early = G.mean_loss_above(losses, len(eps), limit)
                    if early is not None:  # the remaining draws cannot bring the mean back within the limit
                        return early
                return float(np.mean(losses))

            lo, hi = G.SIGMA_RANGE[kind]
            s = G.flatness_sigma(loss_at, lo, hi, delta=delta, steps=steps, bounded=True)
            out[sig] = s
            out[key] = 1.0 / (s * s)
    else:
        for k in ("pacbayes_flatness", "sigma_additive", "pacbayes_mag_flatness", "sigma_multiplicative"):
            out[k] = float("nan")
    return out


def network_measures(
    model, data, *, config=None, sharpness: bool = True, cache: bool = True, cache_dir=None, **options
) -> dict:
    """The generalisation measures of ``model`` on ``data`` (the images and preprocessing :func:`onnx_fe.score`
    would use with the same ``options`` or ``config``). ``cache``: read them from, and keep them in, the user's
    measures cache (:mod:`onnx_fe.io.measurecache`, or the directory ``cache_dir``; the numbers are the same
    either way)."""
    from ..config import ScoreConfig
    from .score import Plan

    if config is None:
        config = ScoreConfig.build(model, data, **options)
    else:
        config = config.replace(model=str(model), data=str(data))
    from ..model.graph import load_model

    plan = Plan.build(config)
    ds, pre = plan.dataset, plan.preprocess
    x = ds.load(0, len(ds), pre, plan.runner.input_dtype)
    lm = load_model(model)
    labels = np.asarray(ds.labels)
    key = None
    if cache:
        from ..io import measurecache

        constants = {
            "sharpness": bool(sharpness),
            "draws": G.SHARPNESS_DRAWS,
            "steps": G.SHARPNESS_STEPS,
            "delta": G.SHARPNESS_DELTA,
            "sigma_range": {k: list(v) for k, v in G.SIGMA_RANGE.items()},
            "sharpness_seed": 0,
            "margin_quantile": G.MARGIN_QUANTILE,
        }
        key = measurecache.measures_key(model, x, labels, lm.fixed_batch, constants)
        hit = measurecache.cached(key, cache_dir)
        if hit is not None:
            return hit
    try:
        out = measures_of(lm.model, x, labels, sharpness=sharpness, fixed_batch=lm.fixed_batch)
    except OnnxFeError as e:
        raise type(e)(f"{Path(model).name}: {e}") from None
    if key is not None:
        measurecache.store(key, out, cache_dir)
    return out


def _measures_job(args) -> dict:
    model, data, config, cache_dir = args
    return network_measures(model, data, config=config, cache_dir=cache_dir)


def measures_of_models(models, data, config) -> list[dict]:
    """:func:`network_measures` of each model (with ``config``), in local worker processes when the config asks for
    more than one (``workers``; None: all cores) and there is more than one model: each measure runs on one
    onnxruntime thread, so the numbers do not depend on the processes."""

    models = [str(m) for m in models]
    workers = config.workers or usable_cpus()
    if config.scheduler is not None or config.cluster is not None:  # the shards' cluster: measures stay local, serial
        workers = 1
    workers = min(int(workers), len(models))
    if workers <= 1:
        return [network_measures(m, data, config=config) for m in models]
    from concurrent.futures import ProcessPoolExecutor

    from ..execution.local import _context
    from ..io import measurecache

    where = measurecache.directory()  # this process's: a fork server's workers may hold an older environment
    with ProcessPoolExecutor(workers, mp_context=_context(leave_main=True)) as pool:
        return list(pool.map(_measures_job, [(m, str(data), config, where) for m in models]))
