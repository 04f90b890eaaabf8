"""onnx-fe: feature entropy of the convolutional units of any ONNX CNN.

Python API::

    import onnx_fe
    result = onnx_fe.score("model.onnx", "data/")          # whole pipeline → HDF5 + CSV
    bp = onnx_fe.birth_points(maps)                          # (N, H, W) → (N,) int
    fe = onnx_fe.feature_entropy(bp)                         # entropy, birth rate, ineffectiveness
    r = onnx_fe.rank("out/", by="feature_entropy")           # unit ranking per layer (no inference)
    a = onnx_fe.ablate("model.onnx", "data/", "out/")        # cumulative ablation curves (graph rewrite)
    c = onnx_fe.compare(["a.onnx", "b.onnx"], "data/")       # several networks side by side
    r = onnx_fe.randomize("model.onnx", "twin.onnx", seed=0) # untrained twin (random-init control)
    p = onnx_fe.prune("model.onnx", "small.onnx", units="3:0")  # remove conv channels: a smaller model
    p = onnx_fe.report("out/")                               # one self-contained HTML page (needs matplotlib)
    i = onnx_fe.importance("model.onnx", "data/", "imp/")    # each unit zeroed alone: Δ loss, Δ top-1, Δ output
    v = onnx_fe.validate("out/", "importance/")              # indicators against measured unit importance
"""

__version__ = "0.1.0"

import os as _os


def _numba_cache_dir() -> None:
    """Keep numba's compiled-kernel cache out of the installed package: under $XDG_CACHE_HOME (or ~/.cache)
    /onnx-fe/numba unless NUMBA_CACHE_DIR is set. Cache files written next to the sources stay behind when pip
    uninstalls the package, and such a leftover folder in site-packages shadows a later editable install."""
    if "NUMBA_CACHE_DIR" in _os.environ:
        return
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    path = _os.path.join(base, "onnx-fe", "numba")
    try:
        _os.makedirs(path, exist_ok=True)
    except OSError:
        return  # not writable: numba's own default applies
    _os.environ["NUMBA_CACHE_DIR"] = path


_numba_cache_dir()

from .errors import OnnxFeError  # noqa: E402

# Everything but the errors loads on first use (numpy, onnx, onnxruntime, h5py), so `import onnx_fe` stays light
# and the command line can turn a Ctrl-C while they load into one line.
_LAZY = {
    "FeatureEntropy": "scores.entropy",
    "feature_entropy": "scores.entropy",
    "birth_points": "topology",
    "score": "experiments.score",
    "inspect": "experiments.score",
    "rank": "scores.ranking",
    "load_rankings": "scores.ranking",
    "ablate": "experiments.ablate",
    "add_unit_masks": "model.masks",
    "compare": "experiments.compare",
    "prune": "experiments.prune",
    "randomize": "model.randomize",
    "randomize_model": "model.randomize",
    "validate": "experiments.validate",
    "importance": "experiments.importance",
    "report": "report",  # the subpackage, callable: onnx_fe.report(...) runs onnx_fe.report.build.report
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        obj = mod if _LAZY[name] == name else getattr(mod, name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def betti_curve(m, method: str = "clique", **params):
    """β1 curve of one map (clique construction; row r = filtration index r + 1)."""
    if method != "clique":
        raise ValueError("betti_curve supports method='clique'")
    from .topology.clique import clique_betti_curve

    return clique_betti_curve(m, **params)


__all__ = [
    "score",
    "inspect",
    "rank",
    "load_rankings",
    "ablate",
    "add_unit_masks",
    "compare",
    "prune",
    "randomize",
    "randomize_model",
    "report",
    "validate",
    "birth_points",
    "feature_entropy",
    "betti_curve",
    "FeatureEntropy",
    "OnnxFeError",
]
