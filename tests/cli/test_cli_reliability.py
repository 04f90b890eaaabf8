"""Issue 11 at the command line: one line for every bad output path and option, Ctrl-C says how to resume,
notices that were missing, and --help that shows every default."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import G, simple_cnn, write_image_folder
from onnx import TensorProto, helper
from PIL import Image

import onnx_fe.experiments.score as pipeline
from onnx_fe.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clirel")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), root / "m.onnx")
    g = G((None, 1, 16, 16), seed=1)
    g.conv(4, name="c1")
    g.act("relu")
    g.head(2)
    onnx.save(g.model(), root / "gray.onnx")
    write_image_folder(root / "data", n_classes=2, per_class=3)
    onnx_fe_out = root / "res"
    assert main(["score", str(root / "m.onnx"), str(root / "data"), "-o", str(onnx_fe_out), "-q"]) == 0
    return root


def one_line(capsys, *args, code=2) -> str:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith("onnx-fe: error: "), (rc, err)
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


# --------------------------------------------------------------------------- output paths that cannot be made

BAD_OUTPUTS = ["/sys/kernel/x", "/proc/foo/bar", "/dev/null/sub"]


@pytest.mark.parametrize("bad", BAD_OUTPUTS)
def test_score_ablate_compare_into_impossible_outputs_give_one_line(files, capsys, bad):
    m, d = files / "m.onnx", files / "data"
    for args in (
        ["score", m, d, "-o", bad, "-q"],
        ["ablate", m, d, "-r", files / "res", "-o", bad, "--steps", "2", "--no-plot", "-q"],
        ["compare", m, d, "-o", bad, "--no-plot", "-q"],
    ):
        line = one_line(capsys, *args)
        assert bad in line and ("cannot create output directory" in line or "cannot write" in line), line


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_mid_run_says_how_to_resume_and_exits_130(files, tmp_path, capsys, monkeypatch):
    real = pipeline.compute_shard
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "compute_shard", interrupted)
    out = tmp_path / "o"
    # the patch reaches shards run in this process only: -j 1
    line = one_line(capsys, "score", files / "m.onnx", files / "data", "-o", out, "-b", "2", "-j", "1", "-q", code=130)
    assert "interrupted" in line and "run the same command again to resume" in line
    assert (out / "results.h5.partial").exists()
    monkeypatch.setattr(pipeline, "compute_shard", real)
    assert main(["score", str(files / "m.onnx"), str(files / "data"), "-o", str(out), "-b", "2", "-q"]) == 0


_SIGINT_IN_IMPORT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, os, signal, sys, time

    class Interrupted(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # onnxruntime's native module turns a SIGINT during its initialisation into ImportError
        def find_spec(self, name, path, target=None):
            return importlib.machinery.ModuleSpec(name, self) if name == "onnxruntime" else None
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None
            raise ImportError("initialization failed")  # as the real module would after a swallowed signal

    sys.meta_path.insert(0, Interrupted())
    # as in an interactive shell, whatever the test runner inherited (a background job ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from onnx_fe.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigint_during_the_onnxruntime_import_is_one_line(files, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", _SIGINT_IN_IMPORT, "score", str(files / "m.onnx"), str(files / "data")]
        + ["-o", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], r.stderr


# --------------------------------------------------------------------------- options refused with one line


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--std", "inf"], "--std"),
        (["--std", "1,inf,1"], "--std"),
        (["--classes", ","], "--classes"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_one_line(files, tmp_path, capsys, extra, words):
    line = one_line(capsys, "score", files / "m.onnx", files / "data", "-o", tmp_path / "o", *extra)
    assert words in line


def test_mean_on_a_gray_model_asks_for_one_value(files, tmp_path, capsys):
    line = one_line(capsys, "score", files / "gray.onnx", files / "data", "-o", tmp_path / "o", "--mean", "1,2,3")
    assert "give 1 or 1" not in line and "one value" in line and "1 channel" in line


def test_a_channel_mismatched_npz_names_the_models_own_layout(files, tmp_path, capsys):
    np.savez(tmp_path / "g.npz", x=np.zeros((4, 1, 16, 16), np.float32), y=np.array([0, 0, 1, 1]))
    line = one_line(capsys, "score", files / "m.onnx", tmp_path / "g.npz", "-o", tmp_path / "o")
    assert "(nchw" in line and "nhwc" not in line


def test_ablate_and_rank_seeds_must_not_be_negative(files, capsys):
    assert "--seed" in one_line(capsys, "rank", files / "res", "--by", "random", "--seed", "-1")
    line = one_line(
        capsys, "ablate", files / "m.onnx", files / "data", "-r", files / "res", "--seed", "-1", "--no-plot"
    )
    assert "--seed" in line


# --------------------------------------------------------------------------- notices and names


def test_fewer_images_than_n_gives_a_notice(files, tmp_path, capsys):
    assert main(["score", str(files / "m.onnx"), str(files / "data"), "-o", str(tmp_path / "o"), "-n", "100"]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note: -n 100")]
    assert len(notes) == 1 and "class_0 (3)" in notes[0]


def test_a_class_folder_named_a_comma_b_can_be_chosen(files, tmp_path, capsys):
    data = tmp_path / "d"
    for name in ("a,b", "c"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(data / name / f"{i}.png")
    out = tmp_path / "o"
    assert main(["score", str(files / "m.onnx"), str(data), "-o", str(out), "--classes", "a\\,b", "-q"]) == 0
    import pandas as pd

    assert set(pd.read_csv(out / "scores.csv")["class"]) == {"a,b"}
    assert main(["rank", str(out), "--classes", "a\\,b", "-q"]) == 0


def test_the_summary_says_when_an_integer_input_gets_pixel_values(tmp_path, capsys):
    g = G((None, 1, 16, 16), seed=2)
    g.input = helper.make_tensor_value_info("image", TensorProto.UINT8, [None, 1, 16, 16])
    g.cur = g.node("Cast", ["image"], to=TensorProto.FLOAT)
    g.conv(4, name="c1")
    g.act("relu")
    g.head(2)
    onnx.save(g.model(), tmp_path / "u8.onnx")
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=2, mode="L")
    assert main(["score", str(tmp_path / "u8.onnx"), str(data), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"uint8 input.*--scale 1", out)


def test_inspect_ends_with_a_summary_and_says_why_quantized_convs_are_left_out(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mrel", ROOT / "tests" / "model" / "test_model_reliability.py")
    mrel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mrel)
    onnx.save(mrel._qlinear_model(extra_float_conv=True), tmp_path / "mixed.onnx")
    assert main(["inspect", str(tmp_path / "mixed.onnx")]) == 0
    out = capsys.readouterr().out
    tail = out[out.rindex("┘") + 1 :]  # what follows the table
    assert re.search(r"QLinearConv\) not scored: quantized convs are not supported", tail)
    assert re.match(r"\s*1 of 1 layers scorable", tail[tail.index("\n", tail.index("ConvInteger")) :])


# --------------------------------------------------------------------------- --help


COMMANDS = ["score", "inspect", "rank", "ablate", "compare", "randomize", "report"]


def _help(cmd: str, width: int, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    assert main([cmd, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_every_default_and_no_bool_for_flags(cmd, capsys, monkeypatch):
    text = _help(cmd, 250, capsys, monkeypatch)
    assert "<bool>" not in text
    rows = [line for line in text.splitlines() if re.search(r"│\s+(\*\s+)?--[a-z]", line)]
    assert rows
    for row in rows:
        if not re.search(r"<[a-z\[\]|,]+>", row):  # a flag: no value, so no type and no default to show
            continue
        assert "[default:" in row or "[required]" in row, row
    if cmd in ("score", "compare"):
        scale = next(r for r in rows if "--scale" in r)
        assert "1/255" in scale and "0.0039" not in scale


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_no_help_line_ends_in_a_lone_period(width, capsys, monkeypatch):
    for cmd in COMMANDS:
        for line in _help(cmd, width, capsys, monkeypatch).splitlines():
            assert not re.search(r"\s\.\s*│?\s*$", line), (cmd, width, line)
