"""Write onnx_fe/scores/_null_table.npz: the noise null's birth points for the common map sizes (shipped).

    python benchmarks/make_null_table.py            # all entries (a few minutes on 2 cores)
    python benchmarks/make_null_table.py --check    # recompute and compare with the committed table, write nothing

Entries: square maps of the sizes of common CNNs at common inputs (``SIZES``: 224² networks such as ResNet and
VGG, 32² ones such as the demo, and their halvings), both tap kinds (ReLU'd and signed noise), both methods with
their default parameters, the default 16 noise units, seed 0 and σ = 1, and ``MAPS`` (256) maps a unit: a run with up
to that many images per class (the default is 100) reads its null from the table (onnx_fe.io.nullcache). Birth
points are stored as uint8 (both methods' defaults give at most 101). tests/io/test_nullcache.py recomputes a few
entries and requires them equal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 128, 224)
MAPS = 256


def entries():
    from onnx_fe.io.nullcache import null_key
    from onnx_fe.model.runner import MIN_SIDE

    for method in ("cubical", "clique"):
        for size in SIZES:
            if size < MIN_SIDE[method]:
                continue
            for relu in (True, False):
                yield null_key(size, size, method=method, relu=relu)


def compute(key: dict) -> np.ndarray:
    from onnx_fe.scores.statistics import noise_birth_points

    return noise_birth_points(
        key["height"],
        key["width"],
        MAPS,
        method=key["method"],
        params=key["params"],
        n_units=key["n_units"],
        seed=key["seed"],
        sigma=key["sigma"],
        relu=key["relu"],
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed table instead of writing it")
    args = ap.parse_args(argv)
    from onnx_fe.io.nullcache import SHIPPED, key_digest

    keys, arrays = {}, {}
    t0 = time.perf_counter()
    for key in entries():
        t = time.perf_counter()
        bp = compute(key)
        assert bp.min() >= 0 and bp.max() <= 255
        d = key_digest(key)
        keys[d] = key
        arrays[f"bp_{d}"] = bp.astype(np.uint8)
        print(
            f"{key['method']:8s} {key['height']:4d}² relu={key['relu']!s:5s} {time.perf_counter() - t:6.1f} s",
            flush=True,
        )
    if args.check:
        with np.load(SHIPPED, allow_pickle=False) as z:
            bad = [d for d in keys if not np.array_equal(z[f"bp_{d}"], arrays[f"bp_{d}"])]
        print("identical" if not bad else f"{len(bad)} entries differ: {bad}")
        raise SystemExit(1 if bad else 0)
    tmp = SHIPPED.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, keys=np.array(json.dumps(keys, sort_keys=True)), **arrays)
    tmp.replace(SHIPPED)
    print(f"{len(keys)} entries → {SHIPPED} ({SHIPPED.stat().st_size:,} bytes, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
