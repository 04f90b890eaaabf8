"""Maps too small for a hole are not scored: inspect says why, score leaves them out, naming one is an error."""

import h5py
import numpy as np
import onnx
import pytest
from graphs import G, write_image_folder

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError


def thin_cnn():
    """A 12×24 input; conv1 keeps 12×24, two stride-2 convs give 6×12 then 3×6, a third gives 2×3."""
    g = G((None, 3, 12, 24))
    g.conv(4, name="conv1")
    g.act("relu")
    for name in ("conv2", "conv3", "conv4"):
        g.conv(4, stride=2, name=name)
        g.act("relu")
    g.head(3)
    return g.model()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("thin")
    onnx.save(thin_cnn(), root / "m.onnx")
    return root, write_image_folder(root / "data", n_classes=3, per_class=4, size=(12, 24))


def test_inspect_marks_maps_below_3x3_not_scorable(files):
    root, _ = files
    units = onnx_fe.inspect(root / "m.onnx")
    sizes = {u.name: (u.height, u.width) for u in units}
    assert sizes == {"conv1": (12, 24), "conv2": (6, 12), "conv3": (3, 6), "conv4": (2, 3)}
    by = {u.name: u for u in units}
    assert [n for n, u in by.items() if not u.scorable] == ["conv4"]
    assert "too small for a birth point" in by["conv4"].reason
    assert by["conv1"].activated and by["conv1"].tap_kind == "post-activation (Relu)"


def test_score_leaves_them_out_and_says_so(files, capsys):
    root, data = files
    assert main(["score", str(root / "m.onnx"), str(data), "-o", str(root / "o"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "not scored, maps too small for a birth point: 3 conv4 (2×3)" in err
    with h5py.File(root / "o" / "results.h5") as f:
        assert [f["layers"][k].attrs["name"] for k in sorted(f["layers"])] == ["conv1", "conv2", "conv3"]
        assert all(f["layers"][k].attrs["tap_op"] == "Relu" for k in f["layers"])


def test_naming_one_is_a_clear_error(files):
    root, data = files
    with pytest.raises(OnnxFeError, match="layer 3 'conv4' is not scorable: 2×3 map: too small"):
        onnx_fe.score(root / "m.onnx", data, root / "x", layers="conv4", device="cpu")


def test_clique_needs_4x4_and_leaves_3x3_out(tmp_path):
    g = G((None, 3, 12, 12))
    g.conv(4, name="a")
    g.act("relu")
    g.conv(4, stride=2, name="b")  # 6×6
    g.act("relu")
    g.conv(4, stride=2, name="c")  # 3×3: cubical yes, clique no
    g.act("relu")
    g.head(2)
    onnx.save(g.model(), tmp_path / "m.onnx")
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=3, size=(12, 12))
    cub = onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "cub", device="cpu")
    cli = onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "cli", method="clique", device="cpu")
    assert [r["layer"] for r in cub.summary] == ["a", "b", "c"]
    assert [r["layer"] for r in cli.summary] == ["a", "b"]
    with pytest.raises(OnnxFeError, match="the clique construction needs at least 4×4"):
        onnx_fe.score(tmp_path / "m.onnx", data, tmp_path / "x", method="clique", layers="c", device="cpu")
    # a 3×3 map can have a cubical hole: a ring of 8 high pixels around a low one (89 % of the map: threshold 100)
    ring = np.ones((3, 3))
    ring[1, 1] = 0
    assert onnx_fe.birth_points(ring[None], threshold=100)[0] == 89
