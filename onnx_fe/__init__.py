"""onnx-fe: feature entropy of the convolutional units of any ONNX CNN.

Python API::

    import onnx_fe
    result = onnx_fe.score("model.onnx", "data/")          # whole pipeline → HDF5 + CSV
    bp = onnx_fe.birth_points(maps)                          # (N, H, W) → (N,) int
    fe = onnx_fe.feature_entropy(bp)                         # entropy, birth rate, ineffectiveness
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


def betti_curve(m, method: str = "clique", **params):
    """β1 curve of one map (clique construction; row r = filtration index r + 1)."""
    if method != "clique":
        raise ValueError("betti_curve supports method='clique'")
    from .clique import clique_betti_curve

    return clique_betti_curve(m, **params)


__all__ = ["score", "inspect", "birth_points", "feature_entropy", "betti_curve", "FeatureEntropy", "OnnxFeError"]
