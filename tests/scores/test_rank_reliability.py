"""Issue 11, rankings: damaged results files, `rank -o` onto files it must not replace or cannot write,
seeds, class names with commas, and negative zeros."""

import h5py
import numpy as np
import pytest
from test_rank import HAND, LABELS, write_results

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError


def one_error_line(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("onnx-fe: error: "), (code, err)
    assert "Traceback" not in err
    return lines[0]


def _damaged(tmp_path, how):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    with h5py.File(res / "results.h5", "r+") as f:
        if how == "no_labels":
            del f["labels"]
        elif how == "no_classes":
            del f["classes"]
        elif how == "no_dataset":
            del f["layers/000/ineffectiveness"]
        elif how == "text_index":
            f["layers/000"].attrs["index"] = "first"
        elif how == "float_index":
            f["layers/000"].attrs["index"] = 0.5
        elif how == "empty_layers":
            del f["layers/000"]
        elif how == "short_dataset":
            del f["layers/000/mean_activation"]
            f["layers/000/mean_activation"] = np.zeros((3, 7), np.float32)
    return res


@pytest.mark.parametrize(
    "how,words",
    [
        ("no_labels", "no 'labels' dataset"),
        ("no_classes", "no 'classes' dataset"),
        ("no_dataset", "no 'ineffectiveness' dataset"),
        ("text_index", "non-integer 'index'"),
        ("float_index", "non-integer 'index'"),
        ("empty_layers", "holds no scored layer"),
        ("short_dataset", "mean_activation has shape (3, 7)"),
    ],
)
def test_a_damaged_results_file_is_one_line_for_rank(tmp_path, capsys, how, words):
    res = _damaged(tmp_path, how)
    for by in ("feature_entropy", "apoz"):
        line = one_error_line(capsys, "rank", res, "--by", by)
        assert "damaged" in line and words in line, line
    with pytest.raises(OnnxFeError, match="damaged"):
        onnx_fe.load_rankings(res)  # what ablate reads


def test_rank_output_onto_an_existing_plain_file_is_one_line(tmp_path, capsys):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    (tmp_path / "notes").write_text("keep me")
    line = one_error_line(capsys, "rank", res, "-o", tmp_path / "notes")
    assert "notes" in line
    assert (tmp_path / "notes").read_text() == "keep me"


def test_rank_never_overwrites_a_file_that_is_not_a_ranking(tmp_path, capsys):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    scores = res / "scores.csv"
    scores.write_text("layer,layer_index,unit,class\nx,0,0,a\n")
    line = one_error_line(capsys, "rank", res, "-o", scores)
    assert "not a ranking" in line and scores.read_text().startswith("layer,layer_index,unit,class")
    # a previous ranking is replaced as before
    assert main(["rank", str(res), "-o", str(tmp_path / "r.csv"), "-q"]) == 0
    assert main(["rank", str(res), "--by", "apoz", "-o", str(tmp_path / "r.csv"), "-q"]) == 0
    assert "apoz" in (tmp_path / "r.csv").read_text()


@pytest.mark.parametrize("where", ["/proc/foo/r.csv", "/dev/null/sub/r.csv", "/dev/null/r"])
def test_rank_output_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    line = one_error_line(capsys, "rank", res, "-o", where)
    assert "cannot write" in line


def test_a_negative_seed_for_random_is_one_line(tmp_path, capsys):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    line = one_error_line(capsys, "rank", res, "--by", "random", "--seed", "-1")
    assert "--seed -1" in line


def test_a_class_named_with_a_comma_can_be_ranked_on(tmp_path):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a,b", "c"])
    r = onnx_fe.rank(res, classes=["a,b"])
    assert r.classes == ["a,b"]
    with pytest.raises(OnnxFeError, match="names no class"):
        onnx_fe.rank(res, classes=[","])


def test_no_negative_zero_in_a_saved_ranking(tmp_path):
    res = write_results(tmp_path / "r", HAND, LABELS, ["a", "b"])
    r = onnx_fe.rank(res, by="mean_activation")
    r.layers[0].score = -np.abs(r.layers[0].score) * 0.0  # scores given by a caller, e.g. negated ones
    assert np.signbit(r.layers[0].score).all()
    csv_path, _ = r.save(tmp_path / "m.csv")
    text = csv_path.read_text()
    assert "-0.0" not in text and ",0.0,0," in text
