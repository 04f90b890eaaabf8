"""The committed model zoo: every model loads and is scorable; PyTorch and Keras exports agree."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import onnx_fe

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "models" / "index.json"
ENTRIES = json.loads(INDEX.read_text())["models"] if INDEX.exists() else []


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_every_zoo_model_is_inspectable_and_scorable(entry):
    units = onnx_fe.inspect(ROOT / entry["path"])
    assert units and any(u.scorable for u in units)
    for folder in entry["data_folders"].values():
        assert (ROOT / folder).is_dir()


def _scores(model, data, out, method):
    r = onnx_fe.score(model, data, out, method=method, images_per_class=6, device="cpu")
    with h5py.File(r.results_h5) as f:
        return {
            f["layers"][k].attrs["chain"] + k: (
                f["layers"][k]["birth_points"][()],
                f["layers"][k]["feature_entropy"][()],
            )
            for k in f["layers"]
        }


@pytest.mark.parametrize("method", ["cubical", "clique"])
def test_pytorch_and_keras_exports_give_identical_birth_points(tmp_path, method):
    d = ROOT / "models/digits_vgg/converged"
    if not (d / "model_keras.onnx").exists():
        pytest.skip("no Keras export in the zoo")
    data = ROOT / "models/data/digits/test"
    torch_s = _scores(d / "model.onnx", data, tmp_path / "torch", method)
    keras_s = _scores(d / "model_keras.onnx", data, tmp_path / "keras", method)
    assert torch_s.keys() == keras_s.keys() and len(torch_s) == 4
    for k in torch_s:
        bp_t, fe_t = torch_s[k]
        bp_k, fe_k = keras_s[k]
        assert np.array_equal(bp_t, bp_k), f"{k}: {(bp_t != bp_k).sum()} of {bp_t.size} birth points differ"
        assert np.array_equal(fe_t, fe_k)
