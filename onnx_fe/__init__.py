"""onnx-fe: feature entropy of the convolutional units of any ONNX CNN.

Python API::

    import onnx_fe
    result = onnx_fe.score("model.onnx", "data/")          # whole pipeline → HDF5 + CSV
    bp = onnx_fe.birth_points(maps)                          # (N, H, W) → (N,) int
    fe = onnx_fe.feature_entropy(bp)                         # entropy, birth rate, ineffectiveness
    r = onnx_fe.rank("out/", by="feature_entropy")           # unit ranking per layer (no inference)
    a = onnx_fe.ablate("model.onnx", "data/", "out/")        # cumulative ablation curves (graph rewrite)
    c = onnx_fe.compare(["a.onnx", "b.onnx"], "data/")       # several networks side by side
"""

__version__ = "0.1.0"

from .entropy import FeatureEntropy, feature_entropy  # noqa: E402
from .errors import OnnxFeError  # noqa: E402
from .topology import birth_points  # noqa: E402


def score(*args, **kwargs):
    from .pipeline import score as _score

    return _score(*args, **kwargs)


score.__doc__ = "See :func:`onnx_fe.pipeline.score`."


def inspect(*args, **kwargs):
    from .pipeline import inspect as _inspect

    return _inspect(*args, **kwargs)


def rank(*args, **kwargs):
    from .ranking import rank as _rank

    return _rank(*args, **kwargs)


rank.__doc__ = "See :func:`onnx_fe.ranking.rank`."


def load_rankings(*args, **kwargs):
    from .ranking import load_rankings as _load

    return _load(*args, **kwargs)


load_rankings.__doc__ = "See :func:`onnx_fe.ranking.load_rankings`."


def ablate(*args, **kwargs):
    from .ablation import ablate as _ablate

    return _ablate(*args, **kwargs)


ablate.__doc__ = "See :func:`onnx_fe.ablation.ablate`."


def add_unit_masks(*args, **kwargs):
    from .ablation import add_unit_masks as _add

    return _add(*args, **kwargs)


add_unit_masks.__doc__ = "See :func:`onnx_fe.ablation.add_unit_masks`."


def compare(*args, **kwargs):
    from .comparison import compare as _compare

    return _compare(*args, **kwargs)


compare.__doc__ = "See :func:`onnx_fe.comparison.compare`."


def betti_curve(m, method: str = "clique", **params):
    """β1 curve of one map (clique construction; row r = filtration index r + 1)."""
    if method != "clique":
        raise ValueError("betti_curve supports method='clique'")
    from .clique import clique_betti_curve

    return clique_betti_curve(m, **params)


__all__ = ["score", "inspect", "rank", "load_rankings", "ablate", "add_unit_masks", "compare", "birth_points", "feature_entropy", "betti_curve", "FeatureEntropy", "OnnxFeError"]
