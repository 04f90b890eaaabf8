"""Stage 4 — topology: birth points of feature maps (pure math, no I/O).

``cubical`` (default, :mod:`.cubical`; engines ``early``, the default, :mod:`.early`, and ``cripser``) and
``clique`` (the paper's construction, :mod:`.clique`).
A new engine goes in a module of its own here and is chosen in :func:`birth_points`.
"""

from ..errors import InvalidMapError
from .birth import (
    CLIQUE_DEFAULTS,
    CUBICAL_DEFAULTS,
    ENGINES,
    METHODS,
    birth_points,
    check_engine,
    method_params,
)
from .cubical import cubical_birth_point, dense_rank

__all__ = [
    "CLIQUE_DEFAULTS",
    "CUBICAL_DEFAULTS",
    "ENGINES",
    "METHODS",
    "InvalidMapError",
    "birth_points",
    "check_engine",
    "cubical_birth_point",
    "dense_rank",
    "method_params",
]
