"""numba's compiled kernels are cached outside the installed package (a leftover cache folder in site-packages,
which pip uninstall does not remove, would shadow a later editable install of onnx_fe)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx_fe

CODE = (
    "import os, numpy as np, onnx_fe;"
    "print(os.environ['NUMBA_CACHE_DIR']);"
    "onnx_fe.birth_points(np.random.default_rng(0).random((2, 6, 6)), method='cubical')"
)


def _run(env):
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)


def test_kernels_are_cached_under_the_user_cache_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    r = _run(env)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "cache" / "onnx-fe" / "numba"
    assert Path(r.stdout.strip()) == cache
    assert list(cache.rglob("*.nbi")), "no numba index file written to the cache dir"
    package = Path(onnx_fe.__file__).resolve().parent
    assert all(package not in p.resolve().parents for p in cache.rglob("*"))


def test_a_user_setting_wins(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = _run(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "mine")
    assert list((tmp_path / "mine").rglob("*.nbi"))
    assert not (tmp_path / "cache").exists()
