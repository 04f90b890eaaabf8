"""Scored runs shared by the report tests (scored once per session, on the CPU, in a few seconds)."""

from pathlib import Path

import pytest

import onnx_fe

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
RESNET = ROOT / "models" / "shapes_resnet" / "converged" / "model.onnx"
SHAPES_TEST = ROOT / "models" / "data" / "shapes" / "test"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-demo") / "demo"
    onnx_fe.score(DEMO / "model.onnx", DEMO / "data", out, device="cpu", workers=2)
    return out


@pytest.fixture(scope="session")
def demo_control_run(tmp_path_factory) -> Path:
    """The demo with its random-init control (control/ beside results.h5, layers.csv with Δ)."""
    out = tmp_path_factory.mktemp("report-demo-control") / "demo"
    onnx_fe.score(DEMO / "model.onnx", DEMO / "data", out, device="cpu", workers=2, control="random-init")
    return out


@pytest.fixture(scope="session")
def demo_ablation(tmp_path_factory, demo_run) -> Path:
    out = tmp_path_factory.mktemp("report-ablation") / "ablation"
    onnx_fe.ablate(DEMO / "model.onnx", DEMO / "data", demo_run, out, steps=4, plot=False, device="cpu")
    return out


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-resnet") / "shapes_resnet"
    onnx_fe.score(RESNET, SHAPES_TEST, out, device="cpu", images_per_class=10, workers=2)
    return out
