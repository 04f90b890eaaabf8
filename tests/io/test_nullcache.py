"""The noise null's stored birth points: the shipped table and the user cache give the numbers of a fresh
computation, bit for bit; the cache is keyed by content, extended by longer runs, written atomically, and a bad or
foreign file in it is ignored."""

import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_fe.io import nullcache as NC
from onnx_fe.scores import statistics as S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_FE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(NC, "SHIPPED", tmp_path / "none.npz")  # nothing shipped: the cache alone
    return tmp_path / "c" / "noise-null"


def _same(a: S.NoiseNull, b: S.NoiseNull) -> None:
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert x.tobytes() == y.tobytes()
        else:
            assert x == y or (np.isnan(x) and np.isnan(y))


@pytest.mark.parametrize(
    "method,size,relu", [("cubical", 8, True), ("cubical", 14, False), ("clique", 8, True), ("cubical", 28, True)]
)
def test_shipped_entries_equal_a_fresh_computation(method, size, relu):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import make_null_table

    key = NC.null_key(size, size, method=method, relu=relu)
    shipped = NC.shipped(key)
    assert shipped is not None, "the table ships this key"
    assert shipped.shape == (make_null_table.MAPS, 16)
    n = 40 if size > 14 else make_null_table.MAPS  # the larger maps: a prefix is enough to check
    fresh = S.noise_birth_points(size, size, n, method=method, params=key["params"], relu=relu)
    assert np.array_equal(shipped[:n].astype(np.int64), fresh)


def test_the_table_holds_the_default_sizes_and_is_small():
    keys = json.loads(str(np.load(NC.SHIPPED)["keys"]))
    sizes = {(k["method"], k["height"], k["relu"]) for k in keys.values()}
    for size in (7, 14, 28, 56, 112, 224, 8, 16, 32):
        for relu in (True, False):
            assert ("cubical", size, relu) in sizes
    assert NC.SHIPPED.stat().st_size < 1_000_000


def test_a_default_run_never_computes_a_shipped_null(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computed")

    monkeypatch.setattr(NC, "noise_birth_points", boom)
    got = NC.noise_null(32, 32, n_maps=20, k=10)
    monkeypatch.undo()
    _same(got, S.noise_null(32, 32, params=S_defaults(), n_maps=20, k=10))


def S_defaults():
    from onnx_fe.topology.birth import CUBICAL_DEFAULTS

    return dict(CUBICAL_DEFAULTS)


def test_cache_equals_fresh_and_is_reused(cache, monkeypatch):
    p = {"resolution": 50, "threshold": 40}
    a = NC.noise_null(10, 12, params=p, n_maps=15, k=5, relu=False)
    _same(a, S.noise_null(10, 12, params=p, n_maps=15, k=5, relu=False))
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    key = NC.null_key(10, 12, params=p, relu=False)
    assert files[0].name == NC.key_digest(key) + ".npz"
    calls = []
    real = NC.noise_birth_points
    monkeypatch.setattr(NC, "noise_birth_points", lambda *a, **k: calls.append(k) or real(*a, **k))
    b = NC.noise_null(10, 12, params=p, n_maps=15, k=7, relu=False)  # another k: the same birth points
    _same(b, S.noise_null(10, 12, params=p, n_maps=15, k=7, relu=False))
    c = NC.noise_null(10, 12, params=p, n_maps=9, k=5, relu=False)  # fewer maps: a prefix
    _same(c, S.noise_null(10, 12, params=p, n_maps=9, k=5, relu=False))
    assert calls == []
    d = NC.noise_null(10, 12, params=p, n_maps=22, k=5, relu=False)  # more: only the missing maps are computed
    _same(d, S.noise_null(10, 12, params=p, n_maps=22, k=5, relu=False))
    assert [k["first"] for k in calls] == [15]
    assert len(NC.cached(key)) == 22
    # other keys are other files: the tap kind, the parameters
    NC.noise_null(10, 12, params=p, n_maps=5, k=5, relu=True)
    NC.noise_null(10, 12, params={"resolution": 50, "threshold": 30}, n_maps=5, k=5, relu=False)
    assert len(list(cache.glob("*.npz"))) == 3


def test_a_damaged_or_foreign_cache_file_is_ignored_and_rewritten(cache):
    key = NC.null_key(9, 9)
    cache.mkdir(parents=True)
    path = cache / (NC.key_digest(key) + ".npz")
    path.write_bytes(b"not a zip")
    want = S.noise_null(9, 9, params=S_defaults(), n_maps=6, k=3)
    _same(NC.noise_null(9, 9, n_maps=6, k=3), want)
    assert len(NC.cached(key)) == 6
    other = NC.null_key(9, 9, relu=False)  # a valid file of another key under this key's name
    np.savez(path, key=np.array(json.dumps(other, sort_keys=True)), bp=np.zeros((6, 16), np.uint8))
    assert NC.cached(key) is None
    _same(NC.noise_null(9, 9, n_maps=6, k=3), want)
    assert not [f for f in cache.iterdir() if f.suffix == ".tmp"]


def test_an_unwritable_cache_still_gives_the_null(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("ONNX_FE_CACHE_DIR", str(blocker))  # a file where the directory should be
    monkeypatch.setattr(NC, "SHIPPED", tmp_path / "none.npz")
    _same(NC.noise_null(9, 9, n_maps=4, k=3), S.noise_null(9, 9, params=S_defaults(), n_maps=4, k=3))


def _worker(d, n, q):
    import os

    os.environ["ONNX_FE_CACHE_DIR"] = d
    from onnx_fe.io import nullcache as nc

    nc.SHIPPED = Path(d) / "none.npz"
    q.put(nc.noise_null_birth_points(11, 11, n).tolist())


def test_concurrent_runs_write_one_valid_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n, q)) for n in (12, 12, 20, 7)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    want = S.noise_birth_points(11, 11, 20, params=S_defaults())
    for bp in got:
        assert np.array_equal(np.array(bp), want[: len(bp)])
    files = list((tmp_path / "noise-null").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    key = NC.null_key(11, 11)
    with np.load(files[0]) as z:
        assert json.loads(str(z["key"])) == key
        bp = z["bp"]
    assert np.array_equal(bp.astype(np.int64), want[: len(bp)])
