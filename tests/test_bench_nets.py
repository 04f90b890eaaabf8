"""benchmarks/nets.py: random-init ResNet-18 and VGG11 built without torch, as the benchmarks use them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnx_fe

NETS = Path(__file__).resolve().parents[1] / "benchmarks" / "nets.py"


@pytest.fixture(scope="module")
def nets():
    spec = importlib.util.spec_from_file_location("bench_nets", NETS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("name", "convs", "first"),
    [("resnet18", 20, ("/conv1/Conv", 64, 112)), ("vgg11", 8, ("/features.0/Conv", 64, 224))],
)
def test_nets_build_load_and_run(nets, tmp_path, name, convs, first):
    small = name == "vgg11"
    path = nets.build(name, tmp_path, seed=0, small_head=small)
    assert path.name == f"{name}{'-small' if small else ''}-s0.onnx"
    again = nets.build(name, tmp_path / "again.onnx", seed=0, small_head=small)
    assert path.read_bytes() == again.read_bytes()  # deterministic for a seed
    other = nets.make(name, seed=1, small_head=small)
    assert other.SerializeToString() != path.read_bytes()
    assert other.ir_version == nets.IR_VERSION and other.opset_import[0].version == nets.OPSET

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (y,) = sess.run(None, {"input": x})
    assert y.shape == (1, 1000) and np.isfinite(y).all() and y.std() > 0

    units = onnx_fe.inspect(path)
    assert len(units) == convs and all(u.scorable for u in units)
    assert (units[0].name, units[0].channels, units[0].height) == first


def test_small_head_only_for_vgg(nets):
    with pytest.raises(ValueError):
        nets.make("resnet18", small_head=True)
    with pytest.raises(ValueError):
        nets.make("alexnet")
