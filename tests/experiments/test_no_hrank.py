"""score --no-hrank: the HRank baseline is neither computed nor stored; every other number is the default run's;
the option is part of the settings (a run with HRank does not reuse one without); rank --by hrank says why it
cannot rank such results, in one line."""

import csv
import io
from pathlib import Path

import h5py
import pytest

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError
from onnx_fe.scores import baselines

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo" / "model.onnx", ROOT / "models" / "demo" / "data"
OPTS = dict(images_per_class=3, workers=1, resamples=20, device="cpu")


def _columns(path: Path) -> tuple[list[str], list[dict]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return list(rows[0]), rows


def test_no_hrank_skips_the_svd_and_changes_nothing_else(tmp_path, monkeypatch, capsys):
    full = onnx_fe.score(*DEMO, tmp_path / "full", **OPTS)
    calls = []
    real = baselines.map_ranks
    monkeypatch.setattr("onnx_fe.experiments.score.map_ranks", lambda m, *a: calls.append(len(m)) or real(m, *a))
    args = ["score", DEMO[0], DEMO[1], "-o", tmp_path / "lean", "--no-hrank", "--images-per-class", "3", "-j", "1"]
    code = main([str(a) for a in [*args, "--resamples", "20", "--device", "cpu", "--quiet"]])
    assert code == 0, capsys.readouterr().err
    assert calls == []  # no map's rank was computed
    lean = tmp_path / "lean"
    with h5py.File(lean / "results.h5") as f:
        for key in f["layers"]:
            assert "hrank" not in f["layers"][key]
            assert "activation_std" in f["layers"][key]
    cols, rows = _columns(lean / "scores.csv")
    want_cols, want_rows = _columns(full.scores_csv)
    assert cols == want_cols
    assert {r["hrank"] for r in rows} == {""}
    assert {r["hrank"] for r in want_rows} != {""}
    for a, b in zip(rows, want_rows):
        assert {k: v for k, v in a.items() if k != "hrank"} == {k: v for k, v in b.items() if k != "hrank"}
    with pytest.raises(OnnxFeError, match="--no-hrank"):
        onnx_fe.rank(lean, by="hrank")
    assert onnx_fe.rank(lean, by="feature_entropy").layers  # other indicators rank as usual
    # with HRank again: the settings differ, so the results are scored afresh (and then hold it)
    again = onnx_fe.score(*DEMO, lean, **OPTS)
    assert not again.reused
    assert again.scores_csv.read_text() == full.scores_csv.read_text()


def test_the_option_enters_the_settings_only_when_off():
    from onnx_fe.config import ScoreConfig

    on = ScoreConfig.build(*DEMO)
    off = ScoreConfig.build(*DEMO, hrank=False)
    assert "hrank" not in on.fingerprint()  # a default run keeps the settings of runs made before the option
    assert off.fingerprint() == {**on.fingerprint(), "hrank": False}
    assert ScoreConfig.from_json(off.to_json()) == off
    old = on.to_dict()
    del old["hrank"]  # a config stored before the option existed reads as a default run
    assert ScoreConfig.from_dict(old) == on
