"""The local process pool gives the serial run's results bit for bit, and survives a worker that dies."""

from __future__ import annotations

import os

import numpy as np
import pytest
from shards import DATA, MODEL, CrashOnce, assert_same, contents

import onnx_fe
from onnx_fe.config import ScoreConfig
from onnx_fe.execution import ProcessExecutor, SerialExecutor, make_executor
from onnx_fe.experiments.score import run


def _config(tmp_path, method, **kw):
    return ScoreConfig.build(
        MODEL, DATA, tmp_path, method=method, images_per_class=3, device="cpu", keep_activations=True, **kw
    )


@pytest.mark.parametrize("method", ["cubical", "clique"])
def test_pool_matches_the_serial_run_whatever_shards_batches_and_processes(tmp_path, reference, method):
    cases = [  # (processes, shard size, batch size)
        (2, 1, 1),
        (2, 7, 4),
        (3, None, 32),
    ]
    for processes, shard, batch in cases:
        cfg = _config(tmp_path / f"{processes}-{shard}-{batch}", method, shard_size=shard, batch_size=batch)
        with ProcessExecutor(processes) as ex:
            r = run(cfg, executor=ex)
        assert_same(contents(r), reference[method])
        assert ex.restarts == 0


def test_default_is_a_pool_of_workers_processes(tmp_path, reference):
    assert isinstance(make_executor(2), ProcessExecutor) and isinstance(make_executor(1), SerialExecutor)
    r = onnx_fe.score(MODEL, DATA, tmp_path, images_per_class=3, workers=2, device="cpu", keep_activations=True)
    assert_same(contents(r), reference["cubical"])


def test_a_worker_killed_mid_shard_costs_that_shard_only(tmp_path, reference):
    marker = tmp_path / "crashed"
    inner = ProcessExecutor(2)
    r = run(_config(tmp_path / "o", "cubical", shard_size=4), executor=CrashOnce(inner, marker))
    pid, start, stop = (int(v) for v in marker.read_text().split())
    assert pid != os.getpid() and inner.restarts == 1  # a worker process died, the pool was started again
    assert_same(contents(r), reference["cubical"])


class Key:  # stands for PlanKey: what a worker rebuilds its plan from
    def plan(self):
        return None


class Plan:
    def key(self):
        return Key()


def test_shards_come_back_in_order_and_errors_reach_the_driver(tmp_path):
    bounds = [(s, s + 1) for s in range(12)]
    done = []
    with ProcessExecutor(2, in_flight=3) as ex:
        got = list(ex.map(_slow_echo, Plan(), bounds, 1, on_done=lambda s, e: done.append(s)))
    assert got == bounds and sorted(done) == list(range(12))
    with ProcessExecutor(2) as ex, pytest.raises(onnx_fe.OnnxFeError, match="shard 5 is bad"):
        list(ex.map(_fail_at_5, Plan(), bounds, 1))


def _slow_echo(plan, start, stop, workers):
    import time

    time.sleep(0.05 * ((7 * start) % 5))  # finish out of order
    return (start, stop)


def _fail_at_5(plan, start, stop, workers):
    if start == 5:
        raise onnx_fe.OnnxFeError("shard 5 is bad")
    return (start, stop)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_shard_error_reaches_the_driver_as_one_line_and_nothing_is_written(tmp_path, workers):
    import h5py
    import onnx
    from graphs import G, write_image_folder

    g = G(in_shape=(None, 3, 16, 16))
    g.conv(4, name="conv1")
    g.cur = g.node("Div", [g.cur, g.const(np.zeros((1, 4, 1, 1)))])  # every map ±inf or NaN
    g.head()
    onnx.save(g.model(), tmp_path / "m.onnx")
    data = write_image_folder(tmp_path / "data", n_classes=2, per_class=3)
    with pytest.raises(onnx_fe.OnnxFeError, match=r"layer 0 conv1 gives NaN or ±inf on image class_0/000.png"):
        onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "o", workers=workers, shard_size=2, device="cpu")
    with h5py.File(tmp_path / "o" / "results.h5.partial", "r") as f:
        assert f.attrs["n_done"] == 0
