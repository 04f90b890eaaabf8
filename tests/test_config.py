"""The settings object: built the same way from CLI text and Python values, checked once, serialisable."""

import dataclasses
import json
import pickle

import h5py
import numpy as np
import onnx
import pytest
from graphs import simple_cnn, write_image_folder

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.config import ScoreConfig
from onnx_fe.errors import OnnxFeError, OptionError


def test_cli_text_and_python_values_give_the_same_config():
    a = ScoreConfig.build(
        "m.onnx",
        "d",
        layers="conv1,3",
        input_size="320x240",
        mean="0.5,0.4,0.3",
        std="0.2",
        scale="1/255",
        classes="a,b",
        threshold=60,
    )
    b = ScoreConfig.build(
        "m.onnx",
        "d",
        layers=["conv1", 3],
        input_size=(320, 240),
        mean=(0.5, 0.4, 0.3),
        std=0.2,
        scale=1 / 255,
        classes=["a", "b"],
        threshold=60,
    )
    assert a == b
    assert a.preprocess.input_size == (320, 240) and a.layers == ("conv1", "3")
    assert a.method.kwargs == {"resolution": 100, "threshold": 60}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": "320y"}, "--input-size '320y': expected HxW"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"workers": 0}, "--workers must be at least 1"),
        ({"seed": -1}, "--seed must be at least 0"),
        ({"std": "0"}, "--std must not contain 0"),
        ({"std": "inf"}, "values must be finite"),
        ({"mean": "a,b"}, "--mean 'a,b': expected a number"),
        ({"method": "bogus"}, "--method 'bogus': choose one of cubical, clique"),
        ({"max_edge_density": 0.5}, "--max-edge-density applies to --method clique only"),
        ({"layout": "hwc"}, "--layout 'hwc': choose one of auto, nchw, nhwc"),
        ({"classes": ","}, "--classes is empty"),
        ({"scale": "1/0"}, "--scale '1/0'"),
        ({"threshold": 0}, "threshold must lie in 1..resolution"),
    ],
)
def test_bad_options_raise_option_errors(kwargs, message):
    with pytest.raises(OptionError, match=None) as e:
        ScoreConfig.build("m.onnx", "d", **kwargs)
    assert message in str(e.value)
    assert isinstance(e.value, OnnxFeError)


def test_config_round_trips_through_json_and_pickle():
    c = ScoreConfig.build("m.onnx", "d", "out", layers="0", method="clique", threshold=40, classes="x", mean="1,2,3")
    assert ScoreConfig.from_json(c.to_json()) == c
    assert pickle.loads(pickle.dumps(c)) == c
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.batch_size = 3


def test_fingerprint_ignores_what_cannot_change_a_score():
    a = ScoreConfig.build("m.onnx", "d", "out1", batch_size=4, workers=1, device="cpu")
    b = ScoreConfig.build("m.onnx", "d", "out2", batch_size=64, workers=2, device="auto")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != ScoreConfig.build("m.onnx", "d", seed=1).fingerprint()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), root / "m.onnx")
    return root, write_image_folder(root / "data", n_classes=2, per_class=3)


def test_api_accepts_cli_forms_and_stores_the_config(files):
    root, data = files
    r = onnx_fe.score(root / "m.onnx", data, root / "o", layers="0,2", input_size="16x16", device="cpu")
    with h5py.File(r.results_h5) as f:
        stored = ScoreConfig.from_json(f.attrs["config"])
        assert sorted(f["layers"]) == ["000", "002"]
    assert stored.layers == ("0", "2") and stored.preprocess.input_size == (16, 16)
    r2 = onnx_fe.score(config=stored)  # the stored config alone reproduces the run (reused here)
    assert r2.reused and r2.results_h5 == r.results_h5
    assert onnx_fe.inspect(root / "m.onnx", input_size="16x16")[0].height == 16


@pytest.mark.parametrize(
    ("api", "cli"),
    [
        ({"input_size": "9y9"}, ["--input-size", "9y9"]),
        ({"batch_size": 0}, ["-b", "0"]),
        ({"layers": ["99"]}, ["-l", "99"]),
        ({"mean": "1,2"}, ["--mean", "1,2"]),
    ],
)
def test_api_and_cli_give_the_same_message(files, capsys, api, cli):
    root, data = files
    with pytest.raises(OnnxFeError) as e:
        onnx_fe.score(root / "m.onnx", data, root / "x", device="cpu", **api)
    assert main(["score", str(root / "m.onnx"), str(data), "-o", str(root / "x"), "--device", "cpu", *cli]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"onnx-fe: error: {e.value}"


def test_a_bug_is_reported_as_internal_error_with_a_saved_traceback(files, capsys, monkeypatch):
    root, data = files
    import onnx_fe.experiments.score as score_mod

    def boom(*a, **k):
        raise KeyError("unexpected")

    monkeypatch.setattr(score_mod, "run", boom)
    assert main(["score", str(root / "m.onnx"), str(data), "-o", str(root / "y")]) == 70
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error: KeyError" in err and "this is a bug" in err
    path = err.split("traceback in ")[1].rstrip(")")
    with open(path) as f:
        assert "KeyError" in f.read()


def test_runner_pickles_without_its_session_and_rebuilds_it(files):
    root, data = files
    from onnx_fe.experiments.score import Plan

    plan = Plan.build(ScoreConfig.build(root / "m.onnx", data, device="cpu"))
    x = plan.dataset.load(0, 2, plan.preprocess, plan.runner.input_dtype)
    want = plan.runner.run(x)
    clone = pickle.loads(pickle.dumps(plan.runner))
    assert clone.session is None
    got = clone.run(x)
    assert clone.device == "cpu" and all(np.array_equal(a, b) for a, b in zip(want, got))
    assert json.loads(plan.config.to_json())["model"].endswith("m.onnx")


def test_statistics_options_are_checked_and_round_trip():
    from onnx_fe.config import StatisticsOptions
    from onnx_fe.scores import statistics as S

    d = ScoreConfig.build("m.onnx", "d").statistics
    assert (d.ci_level, d.resamples, d.bootstrap_seed, d.rarefy_k) == (
        S.DEFAULT_LEVEL,
        S.DEFAULT_RESAMPLES,
        S.DEFAULT_SEED,
        S.DEFAULT_K,
    )
    a = ScoreConfig.build("m.onnx", "d", ci_level="90%", resamples="200", bootstrap_seed=3, rarefy_k="5")
    assert a.statistics == StatisticsOptions(0.9, 200, 3, 5)
    assert ScoreConfig.build("m.onnx", "d", ci_level="0.9").statistics.ci_level == 0.9
    assert ScoreConfig.build("m.onnx", "d", resamples=0).statistics.resamples == 0  # no intervals
    assert ScoreConfig.from_json(a.to_json()) == a
    old = json.loads(a.to_json())
    del old["statistics"]  # a config stored before the option group existed
    assert ScoreConfig.from_json(json.dumps(old)).statistics == StatisticsOptions()
    for kwargs, message in [
        ({"ci_level": 1}, "--ci-level 1: must lie strictly between 0 and 1"),
        ({"ci_level": "95"}, "--ci-level '95': must lie strictly between 0 and 1"),
        ({"ci_level": "high"}, "--ci-level 'high': expected a number"),
        ({"ci_level": True}, "--ci-level True: expected a number"),
        ({"resamples": -1}, "--resamples must be at least 0"),
        ({"resamples": 2.5}, "--resamples 2.5: expected an integer"),
        ({"bootstrap_seed": -2}, "--bootstrap-seed must be at least 0"),
        ({"rarefy_k": 1}, "--rarefy-k must be at least 2"),
    ]:
        with pytest.raises(OptionError) as e:
            ScoreConfig.build("m.onnx", "d", **kwargs)
        assert message in str(e.value)


def test_the_cubical_engine_is_an_option_that_does_not_change_the_fingerprint(files):
    a = ScoreConfig.build("m.onnx", "d", engine="cripser")
    assert a.method.engine == "cripser" and ScoreConfig.from_json(a.to_json()) == a
    assert a.fingerprint() == ScoreConfig.build("m.onnx", "d").fingerprint()
    with pytest.raises(OptionError, match="--engine"):
        ScoreConfig.build("m.onnx", "d", engine="gpu")
    root, data = files
    r1 = onnx_fe.score(root / "m.onnx", data, root / "e1", engine="cripser", device="cpu")
    r2 = onnx_fe.score(root / "m.onnx", data, root / "e2", device="cpu")
    assert r1.scores_csv.read_bytes() == r2.scores_csv.read_bytes()
