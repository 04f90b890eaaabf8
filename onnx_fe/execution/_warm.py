"""Imported by the process pool's fork server (never by users): load onnx-fe and its compiled engines once there, so
that every worker process forked from it starts with them ready instead of loading them on its first shard.

The engines are compiled by numba and cached on disk; what is loaded here is the cached machine code of each
kernel, which the forked workers inherit. Any failure only means the workers load the engines themselves. It also ties the fork server's life to the
driver's (:func:`onnx_fe.execution.local.die_with_parent`).
"""

try:
    from onnx_fe.execution.local import die_with_parent

    die_with_parent()  # the fork server ends with the driver (and its workers with it)
except Exception:  # pragma: no cover
    pass

try:
    import numpy as np
    import onnxruntime  # noqa: F401  (imported, no session: nothing that a fork could break is started)

    import onnx_fe.experiments.score  # noqa: F401  (the shard function and everything it imports)
    from onnx_fe.topology import birth_points

    _maps = np.random.default_rng(0).random((2, 6, 6)).astype(np.float32)
    for _m in (_maps, _maps.astype(np.float64)):  # the kernels the pipeline calls: float32 maps, and float64
        birth_points(_m, method="cubical")
        birth_points(_m, method="clique")
except Exception:  # pragma: no cover - a worker then does this work on its first shard
    pass
