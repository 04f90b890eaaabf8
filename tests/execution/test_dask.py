"""A real Dask cluster (2 worker processes on localhost) gives the local run's results bit for bit, with the model
read from its path or sent as bytes, and when a worker dies mid-shard."""

from __future__ import annotations

import os

import distributed  # the test extra installs it: these tests must not be skipped
import pytest
from shards import DATA, MODEL, CrashOnce, assert_same, contents

import onnx_fe
from onnx_fe.config import ScoreConfig
from onnx_fe.execution.dask import DaskExecutor, local_models
from onnx_fe.experiments.score import run


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _config(out, method="cubical", **kw):
    return ScoreConfig.build(
        MODEL, DATA, out, method=method, images_per_class=3, device="cpu", keep_activations=True, **kw
    )


@pytest.mark.parametrize("method", ["cubical", "clique"])
def test_cluster_run_matches_the_local_run(tmp_path, reference, client, method):
    r = onnx_fe.score(
        MODEL, DATA, tmp_path, client=client, method=method, images_per_class=3, device="cpu", keep_activations=True
    )
    assert_same(contents(r), reference[method])
    ran_on = client.run(os.getpid)  # both workers took part
    assert len(ran_on) == 2


def test_model_sent_as_bytes_once_per_worker(tmp_path, reference, client):
    ex = DaskExecutor(client, send_model=True)
    r = run(_config(tmp_path / "o", shard_size=5), executor=ex)
    assert ex.model_mode == "bytes"
    assert_same(contents(r), reference["cubical"])
    copies = client.run(local_models)  # each worker wrote its own copy and loaded it
    assert len(copies) == 2
    for got in copies.values():
        (path,) = got.values()
        assert path != str(MODEL) and os.path.basename(path) == MODEL.name


def test_a_worker_killed_mid_shard_costs_that_shard_only(tmp_path, reference, client):
    before = set(client.run(os.getpid).values())
    marker = tmp_path / "crashed"
    r = run(_config(tmp_path / "o", shard_size=3), executor=CrashOnce(DaskExecutor(client), marker))
    pid, start, stop = (int(v) for v in marker.read_text().split())
    assert pid in before  # one of the workers died mid-shard (after computing, before handing the result back) ...
    client.wait_for_workers(2, timeout=60)
    assert pid not in set(client.run(os.getpid).values())  # ... and its nanny started a new one
    assert_same(contents(r), reference["cubical"])


def test_unreachable_scheduler_is_a_one_line_error():
    with pytest.raises(onnx_fe.OnnxFeError, match="cannot connect to the Dask scheduler"):
        DaskExecutor.connect("tcp://127.0.0.1:9", timeout=1)


def test_cli_scheduler_option(tmp_path, reference, client):
    from onnx_fe.cli import main

    out = tmp_path / "cli"
    argv = ["score", str(MODEL), str(DATA), "-o", str(out), "-n", "3", "--device", "cpu", "--keep-activations", "-q"]
    assert main([*argv, "--scheduler", client.scheduler.address]) == 0
    assert (out / "scores.csv").read_bytes() == reference["cubical"]["csv"]
