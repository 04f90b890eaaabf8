"""Write maps.npz: the fixed real activation maps of the engine's speed gate (tests/topology/test_engine_gate.py).

    python tests/data/engine_gate/make_maps.py

ReLU outputs of the convs of the random-init VGG11 of benchmarks/nets.py (seed 0) on 2 shapes test images at 224²,
the maps benchmarks/bench_engine.py times; a seeded choice of the non-zero maps of three sizes (28², 56², 112²: where
the early engine's advantage over cripser is ~7–9×; at 8²–16² fixed per-map costs bring it to 3–5×), float32 as the
network gives them, compressed (≈ 0.4 MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
COUNTS = {28: 96, 56: 32, 112: 8}


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_engine

    maps, _ = bench_engine.vgg11_maps(ROOT / "benchmarks")
    rng = np.random.default_rng(0)
    out = {}
    for size, n in COUNTS.items():
        m = maps[size]
        live = np.flatnonzero(m.any(axis=(1, 2)))
        out[f"s{size}"] = m[np.sort(rng.choice(live, n, replace=False))]
    np.savez_compressed(HERE / "maps.npz", **out)
    print({k: v.shape for k, v in out.items()}, (HERE / "maps.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
