"""`onnx-fe importance` end to end on the demo model, and its one-line errors (the API raises the same)."""

import csv
import json
from pathlib import Path

import h5py
import pytest

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError
from onnx_fe.io.lock import output_lock

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
COLUMNS = [
    "layer",
    "layer_index",
    "unit",
    "n_images",
    "delta_loss",
    "delta_loss_ci_low",
    "delta_loss_ci_high",
    "delta_top1",
    "delta_top1_ci_low",
    "delta_top1_ci_high",
    "delta_output",
]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_importance_writes_the_table_the_values_and_the_side_file(tmp_path, capsys):
    out = tmp_path / "imp"
    code, stdout, err = cli(
        capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", out, "-n", "2", "-j", "1",
        "--units-per-layer", "4", "--resamples", "200", "-l", "0,2",
    )  # fmt: skip
    assert code == 0, err
    assert "wrote" in stdout and "unmasked: top-1" in stdout
    with open(out / "importance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == COLUMNS
    assert len(rows) == 8 and {r["layer_index"] for r in rows} == {"0", "2"}
    assert all(r["n_images"] == "20" for r in rows)
    meta = json.loads((out / "importance.json").read_text())
    with h5py.File(out / "importance.h5", "r") as f:
        assert f.attrs["model_sha256"] == meta["model_sha256"]
        assert bool(f.attrs["complete"])
        assert f["layers"]["000"]["delta_loss"].shape == (20, 4)
    assert meta["config"]["units_per_layer"] == 4 and meta["statistics"]["resamples"] == 200
    # validate's reader takes it as it is
    from onnx_fe.experiments.validate import importance_sha256, read_importance

    assert importance_sha256(out / "importance.csv") == meta["model_sha256"]
    assert len(read_importance(out / "importance.csv")) == 8
    # the same command again reuses it
    code, stdout, err = cli(
        capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", out, "-n", "2", "-j", "1",
        "--units-per-layer", "4", "--resamples", "200", "-l", "0,2", "-v",
    )  # fmt: skip
    assert code == 0 and "(reused)" in stdout and "reusing" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--units-per-layer", "0"], "--units-per-layer must be at least 1"),
        (["--ci-level", "2"], "--ci-level '2': must lie strictly between 0 and 1"),
        (["-l", "nope"], "--layers 'nope' matches no Conv layer"),
        (["--input-size", "abc"], "--input-size 'abc': expected HxW"),
        (["-n", "0"], "--images-per-class must be at least 1"),
        (["--classes", "11"], "11"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    code, stdout, err = cli(capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", tmp_path / "o", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-fe: error: ") and message in lines[0]
    assert "Traceback" not in err and not (tmp_path / "o" / "importance.csv").exists()


def test_the_api_raises_the_cli_message(tmp_path, capsys):
    code, _, err = cli(
        capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", tmp_path, "--units-per-layer", "x"
    )
    assert code == 2
    with pytest.raises(OnnxFeError) as e:
        onnx_fe.importance(DEMO / "model.onnx", DEMO / "data", tmp_path, units_per_layer="x")
    assert str(e.value) == "--units-per-layer 'x': expected an integer"
    with pytest.raises(OnnxFeError) as e:
        onnx_fe.importance(DEMO / "model.onnx", DEMO / "data", tmp_path, layers="nope")
    code, _, err = cli(capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", tmp_path, "-l", "nope")
    assert err.strip() == f"onnx-fe: error: {e.value}"


def test_missing_inputs_and_empty_output_are_one_line(tmp_path, capsys):
    for args in (
        [tmp_path / "none.onnx", DEMO / "data", "-o", tmp_path / "a"],
        [DEMO / "model.onnx", tmp_path / "nodata", "-o", tmp_path / "b"],
        [DEMO / "model.onnx", DEMO / "data", "-o", ""],
    ):
        code, _, err = cli(capsys, "importance", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("onnx-fe: error: "), err


def test_one_run_at_a_time_per_output_directory(tmp_path, capsys):
    out = tmp_path / "busy"
    with output_lock(out):
        code, _, err = cli(capsys, "importance", DEMO / "model.onnx", DEMO / "data", "-o", out, "-n", "1", "-j", "1")
    assert code == 2 and "in use by another onnx-fe run" in err and len(err.strip().splitlines()) == 1
    assert not (out / "importance.csv").exists()


def test_help_shows_every_default(capsys, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["importance", "--help"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if re.search(r"│\s+(\*\s+)?--[a-z]", line)]
    assert any("--units-per-layer" in r for r in rows) and not any("--rarefy-k" in r for r in rows)
    for row in rows:
        if re.search(r"<[a-z\[\]|,]+>", row):
            assert "[default:" in row or "[required]" in row, row
