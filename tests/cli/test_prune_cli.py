"""`onnx-fe prune` end to end: the written files, the input left alone, external data, rankings, one-line errors."""

from __future__ import annotations

import csv
import hashlib
import os
import stat

import numpy as np
import onnx
import pytest
from prune_graphs import affine, depthwise, residual

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError
from onnx_fe.model.graph import find_units
from onnx_fe.scores.ranking import LayerRanking, Ranking


def digest(*paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


@pytest.fixture
def res_model(tmp_path):
    p = tmp_path / "res.onnx"
    onnx.save(residual(), p)
    return p


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_units_write_model_and_csv(res_model, tmp_path, capsys):
    before = digest(res_model)
    out = tmp_path / "out" / "small.onnx"
    rc = main(["prune", str(res_model), "-o", str(out), "--units", "1:2,2:0", "--verify", "--latency-runs", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert digest(res_model) == before
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    units = {u.index: u.name for u in find_units(onnx.load(res_model))}
    got = [(r["layer"], int(r["layer_index"]), int(r["unit"]), int(r["group"])) for r in rows(out.with_suffix(".csv"))]
    # layers 0 (A) and 1 (B) are one residual group: unit 2 goes from both; layer 2 (C) is alone
    assert got == [(units[0], 0, 2, 0), (units[1], 1, 2, 0), (units[2], 2, 0, 1)]
    assert list(rows(out.with_suffix(".csv"))[0]) == ["layer", "layer_index", "unit", "group"]
    assert "pruned as one" in err and "parameters:" in err and "MACs per image:" in err and "latency" in err
    diff = float(err.split("largest |pruned - masked original| = ")[1].split()[0])
    assert diff < 1e-5


def test_hard_link_to_the_input_is_refused(res_model, tmp_path, capsys):
    link = tmp_path / "link.onnx"
    os.link(res_model, link)
    before = digest(res_model)
    rc = main(["prune", str(res_model), "-o", str(link), "--units", "0:1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("onnx-fe: error: ") and err.count("\n") == 1 and "link" in err
    assert digest(res_model) == before
    with pytest.raises(OnnxFeError, match="destroy the input"):
        onnx_fe.prune(res_model, link, units="0:1")


def test_external_data_in_external_data_out(tmp_path):
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save_model(
        affine(),
        str(src),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.bin",
        size_threshold=256,
    )
    before = digest(src, src.parent / "m.bin")
    out = tmp_path / "p.onnx"
    r = onnx_fe.prune(src, out, units="0:1", verify=True, latency_runs=0)
    assert digest(src, src.parent / "m.bin") == before
    assert r.external_data == str(tmp_path / "p.onnx.data") and (tmp_path / "p.onnx.data").exists()
    skeleton = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in skeleton.graph.initializer)
    onnx.checker.check_model(str(out), full_check=True)
    assert r.max_diff < 1e-5
    # the weights file is as readable as the model file (onnx alone writes it 0600)
    assert stat.S_IMODE((tmp_path / "p.onnx.data").stat().st_mode) == stat.S_IMODE(out.stat().st_mode)
    # an output whose weights file would be the input's weights file is refused before anything is written
    onnx.save_model(
        affine(),
        str(src),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="q.onnx.data",
        size_threshold=256,
    )
    before = digest(src, src.parent / "q.onnx.data")
    with pytest.raises(OnnxFeError, match="destroy the input"):
        onnx_fe.prune(src, src.parent / "q.onnx", units="0:1", latency_runs=0)
    assert digest(src, src.parent / "q.onnx.data") == before


def _ranking(model_path, tmp_path, worst):
    """A ranking file as `onnx-fe rank` writes it, putting the units in ``worst`` (layer -> units) last."""
    layers = []
    for u in find_units(onnx.load(model_path)):
        w = next(t for t in onnx.load(model_path).graph.initializer if t.name == f"{u.name}.w")
        n = w.dims[0]
        score = np.arange(n, 0, -1, dtype=float)  # higher is more important: unit 0 first
        for k in worst.get(u.index, []):
            score[k] = -1.0 - k
        order = np.lexsort((np.arange(n), -score))
        layers.append(LayerRanking(layer=u.name, layer_index=u.index, score=score, order=order))
    csv_path, _ = Ranking(by="weight_l1", layers=layers).save(tmp_path / "rank.csv")
    return csv_path


def test_ranking_ratio_removes_the_lowest_ranked(tmp_path, capsys):
    p = tmp_path / "dw.onnx"
    onnx.save(depthwise(), p)
    rk = _ranking(p, tmp_path, {0: [1, 4], 1: [4, 1]})
    out = tmp_path / "small.onnx"
    rc = main(["prune", str(p), "-o", str(out), "--ranking", str(rk), "--ratio", "0.3", "--latency-runs", "0"])
    assert rc == 0, capsys.readouterr().err
    got = {(int(r["layer_index"]), int(r["unit"])) for r in rows(out.with_suffix(".csv"))}
    # A (6) and its depthwise conv D are one group: round(0.3*6) = 2 channels, units 1 and 4 (last in both
    # rankings), from both layers; C (4 units) loses round(1.2) = 1, its last-ranked unit 3 (ties: unit order)
    assert got == {(0, 1), (0, 4), (1, 1), (1, 4), (2, 3)}
    r = onnx_fe.prune(p, tmp_path / "g.onnx", ranking=rk, global_ratio=0.25, latency_runs=0)
    assert r.macs[1] <= 0.75 * r.macs[0] and r.n_removed > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--units", "9:0"], "no layer 9"),
        (["--units", "0:99"], "has 6 units"),
        (["--units", "zero"], "LAYER_INDEX:UNIT"),
        ([], "choose what to remove"),
        (["--ratio", "0.3"], "need --ranking"),
        (["--units", "0:1", "--ratio", "0.3"], "one of them"),
        (["--ranking", "nowhere.csv", "--ratio", "1.5"], "between 0 and 1"),
        (["--ranking", "nowhere.csv", "--ratio", "0.5"], "ranking not found"),
        (["--units", "2:0,2:1,2:2,2:3"], "every unit"),
    ],
)
def test_one_line_errors(res_model, tmp_path, capsys, args, message):
    out = tmp_path / "o.onnx"
    rc = main(["prune", str(res_model), "-o", str(out), "--latency-runs", "0", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("onnx-fe: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def _wide_depthwise():
    """A (10) → depthwise ×2 D (20) → C (7, 1×1) → GAP → Gemm: A and D are one group with 2 D channels per class."""
    from prune_graphs import B

    b = B()
    a = b.op("Relu", [b.conv("x", "A", 3, 10)])
    d = b.op("Relu", [b.bn(b.conv(a, "D", 10, 20, group=10, bias=False), "bnD", 20)])
    c = b.op("Relu", [b.conv(d, "C", 20, 7, k=1)])
    return b.model(b.head(c, 7))


def _kept(path):
    m = onnx.load(path)
    return {
        n.name: next(t.dims[0] for t in m.graph.initializer if t.name == n.input[1])
        for n in m.graph.node
        if n.op_type == "Conv"
    }


def test_round_to_keeps_multiples(tmp_path, capsys):
    p = tmp_path / "wide.onnx"
    onnx.save(_wide_depthwise(), p)
    rk = _ranking(p, tmp_path, {0: [7, 5, 2], 1: [15, 14, 11, 10, 5, 4], 2: [6, 0]})
    plain = tmp_path / "plain.onnx"
    assert main(["prune", str(p), "-o", str(plain), "--ranking", str(rk), "--ratio", "0.3", "--latency-runs", "0"]) == 0
    # without rounding: round(0.3*10) = 3 classes of the A/D group go, round(0.3*7) = 2 of C
    assert _kept(plain) == {"A": 7, "D": 14, "C": 5}
    out = tmp_path / "r4.onnx"
    args = ["--ranking", str(rk), "--ratio", "0.3", "--round-to", "4", "--latency-runs", "0", "--verify"]
    rc = main(["prune", str(p), "-o", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 0, err
    # the kept count is rounded up to a multiple of 4 (fewer removed, never more): A 7 -> 8 (and D 16); C would keep
    # 5 -> 8, more than its 7 channels, so C is left whole
    assert _kept(out) == {"A": 8, "D": 16, "C": 7}
    got = {(int(r["layer_index"]), int(r["unit"])) for r in rows(out.with_suffix(".csv"))}
    # the two lowest-ranked classes (A's units 7 and 5, D's channels 14, 15 and 10, 11) go
    assert {u for li, u in got if li == 0} == {5, 7}
    assert {u for li, u in got if li == 1} == {10, 11, 14, 15}
    assert not any(li == 2 for li, _ in got)
    assert float(err.split("largest |pruned - masked original| = ")[1].split()[0]) < 1e-5
    # the global budget with rounding: every pruned layer keeps a multiple of 4, and the MACs still drop
    r = onnx_fe.prune(p, tmp_path / "g.onnx", ranking=rk, global_ratio=0.5, round_to=4, latency_runs=0)
    kept = _kept(tmp_path / "g.onnx")
    full = {"A": 10, "D": 20, "C": 7}
    assert all(kept[k] % 4 == 0 for k in kept if kept[k] != full[k]) and kept != full
    assert r.macs[1] < r.macs[0]
    # a multiple larger than every group: nothing to remove, said in one line
    with pytest.raises(OnnxFeError, match="round-to 16"):
        onnx_fe.prune(p, tmp_path / "n.onnx", ranking=rk, ratio=0.5, round_to=16, latency_runs=0)


@pytest.mark.parametrize(
    "extra, message",
    [(["--units", "0:1", "--round-to", "4"], "--units names the channels"), (["--round-to", "0"], "positive whole")],
)
def test_round_to_errors(res_model, tmp_path, capsys, extra, message):
    out = tmp_path / "o.onnx"
    args = extra if "--units" in extra else ["--ranking", "nowhere.csv", "--ratio", "0.5", *extra]
    rc = main(["prune", str(res_model), "-o", str(out), "--latency-runs", "0", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("onnx-fe: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()
