"""The generalisation measures' cache (onnx_fe/io/measurecache.py) and the measures of many models in processes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from graphs import simple_cnn, write_image_folder

from onnx_fe.config import ScoreConfig
from onnx_fe.experiments import generalization as E
from onnx_fe.io import measurecache


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_FE_CACHE_DIR", str(tmp_path / "cache"))
    models = []
    for seed in (0, 1, 2):
        p = tmp_path / f"m{seed}.onnx"
        onnx.save(simple_cnn(seed=seed, n_classes=3), p)
        models.append(p)
    data = tmp_path / "data"
    write_image_folder(data, n_classes=3, per_class=4)
    return models, data


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and np.isnan(a[k]) and np.isnan(b[k])) or a[k] == b[k] for k in a
    )


def test_a_second_call_reads_the_entry_bit_for_bit(setup, monkeypatch):
    models, data = setup
    first = E.network_measures(models[0], data)
    files = list(measurecache.directory().glob("*.json"))
    assert len(files) == 1
    monkeypatch.setattr(E, "measures_of", lambda *a, **k: pytest.fail("computed again"))
    again = E.network_measures(models[0], data)
    assert _same(again, first) and type(again["param_count"]) is int
    monkeypatch.undo()
    fresh = E.network_measures(models[0], data, cache=False)  # computed, not read
    assert _same(fresh, first)


def test_other_images_or_another_model_are_another_entry(setup):
    models, data = setup
    E.network_measures(models[0], data)
    E.network_measures(models[0], data, images_per_class=2)  # other images
    E.network_measures(models[1], data)  # other weights
    assert len(list(measurecache.directory().glob("*.json"))) == 3


def test_a_broken_or_foreign_entry_is_ignored_and_rewritten(setup):
    models, data = setup
    first = E.network_measures(models[0], data)
    (entry,) = measurecache.directory().glob("*.json")
    entry.write_text("{not json")
    assert _same(E.network_measures(models[0], data), first)
    stored = json.loads(entry.read_text())
    stored["key"]["model_sha256"] = "0" * 64  # the file holds another key: not used
    stored["measures"]["path_norm"] = -1.0
    entry.write_text(json.dumps(stored))
    assert _same(E.network_measures(models[0], data), first)


def test_processes_give_the_serial_numbers(setup, tmp_path, monkeypatch):
    models, data = setup
    serial = E.measures_of_models(models, data, ScoreConfig.build(models[0], data, workers=1))
    monkeypatch.setenv("ONNX_FE_CACHE_DIR", str(tmp_path / "other-cache"))  # computed again, in 2 processes
    parallel = E.measures_of_models(models, data, ScoreConfig.build(models[0], data, workers=2))
    assert len(list((tmp_path / "other-cache" / "generalization").glob("*.json"))) == 3
    assert all(_same(a, b) for a, b in zip(serial, parallel))
    assert serial[0]["path_norm"] != serial[1]["path_norm"]  # each model its own numbers, in order
