"""`onnx-fe validate` end to end on the demo model, with a hand-written importance table, and its errors."""

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.errors import OnnxFeError
from onnx_fe.io.results import seal

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
COLUMNS = ["indicator", "layer_index", "spearman", "ci_low", "ci_high", "n_units", "expected_sign", "target", "method"]
IMPORTANCE_COLUMNS = [
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


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "demo"
    assert main(["score", str(DEMO / "model.onnx"), str(DEMO / "data"), "-n", "5", "-o", str(out), "-q"]) == 0
    return out


def layer_units(results: Path):
    with h5py.File(results / "results.h5", "r") as f:
        return [
            (str(g.attrs["name"]), int(g.attrs["index"]), int(g.attrs["channels"]))
            for g in (f["layers"][k] for k in sorted(f["layers"]))
        ], str(f.attrs["model_sha256"])


def write_importance(results: Path, where: Path, *, sha=None, drop=(), loss=True, seed=3, json_file=True):
    """A small importance run as `onnx-fe importance` writes it: importance.csv (+ importance.json with the SHA)."""
    layers, model_sha = layer_units(results)
    rng = np.random.default_rng(seed)
    where.mkdir(parents=True, exist_ok=True)
    values = {}
    with open(where / "importance.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(IMPORTANCE_COLUMNS)
        for name, idx, c in layers:
            for u in range(c):
                if (idx, u) in drop:
                    continue
                d = float(rng.normal())
                values[(idx, u)] = d
                if loss:
                    w.writerow([name, idx, u, 20, d, d - 0.1, d + 0.1, 0.01, 0.0, 0.02, ""])
                else:
                    w.writerow([name, idx, u, 20, "", "", "", "", "", "", abs(d)])
    if json_file:
        (where / "importance.json").write_text(json.dumps({"model_sha256": sha or model_sha}))
    return values


def test_validate_writes_the_specified_table(scored, tmp_path, capsys):
    imp = tmp_path / "imp"
    values = write_importance(scored, imp)
    code, out, err = cli(capsys, "validate", scored, imp, "--resamples", "200")
    assert code == 0, err
    path = scored / "validity" / "validity.csv"  # the default output: beside the results
    assert f"wrote {path}" in out and "fe_increment" in out and "pooled within-layer" in out
    df = pd.read_csv(path, dtype={"layer_index": str})
    assert list(df.columns) == COLUMNS
    layers, _ = layer_units(scored)
    per = [str(i) for _, i, _ in layers] + ["all"]
    ind = [
        "feature_entropy",
        "fe_rarefied",
        "fe_reference",
        "ineffectiveness",
        "birth_rate",
        "mean_activation",
        "apoz",
        "weight_l1",
        "hrank",
        "activation_std",
        "random",
    ]
    want = [(k, li) for k in ind for li in per]
    want += [("fe|birth_rate+mean_activation", li) for li in per] + [("fe_increment", "all")]
    assert list(zip(df.indicator, df.layer_index)) == want
    assert set(df.target) == {"delta_loss"} and set(df.method) == {"cubical"}
    sign = dict(zip(df.indicator, df.expected_sign))
    assert sign["feature_entropy"] == -1 and sign["mean_activation"] == 1 and sign["random"] == 0
    assert sign["hrank"] == 1 and sign["apoz"] == -1 and sign["birth_rate"] == 0

    # the numbers: unit values as `rank` aggregates them, Spearman per layer, pooled = unit-weighted mean
    rank_ma = onnx_fe.rank(scored, "mean_activation")
    rhos, ns = [], []
    for _name, idx, c in layers:
        y = [values[(idx, u)] for u in range(c)]
        rho = stats.spearmanr(rank_ma.layer(idx).score, y).statistic
        row = df[(df.indicator == "mean_activation") & (df.layer_index == str(idx))].iloc[0]
        assert row.spearman == pytest.approx(rho, abs=1e-12) and row.n_units == c
        assert row.ci_low <= row.spearman <= row.ci_high
        rhos.append(rho)
        ns.append(c)
    pooled = df[(df.indicator == "mean_activation") & (df.layer_index == "all")].iloc[0]
    assert pooled.spearman == pytest.approx(np.average(rhos, weights=ns), abs=1e-12)
    ref = onnx_fe.rank(scored, "feature_entropy")
    idx0, c0 = layers[-1][1], layers[-1][2]
    row = df[(df.indicator == "fe_reference") & (df.layer_index == str(idx0))].iloc[0]
    want_ref = stats.spearmanr(ref.layer(idx0).score, [values[(idx0, u)] for u in range(c0)]).statistic
    assert row.spearman == pytest.approx(want_ref, abs=1e-12)

    boot = pd.read_csv(scored / "validity" / "validity_bootstrap.csv")
    assert len(boot) == 200 and list(boot.columns) == [
        "resample",
        *ind,
        "fe|birth_rate+mean_activation",
        "fe_increment",
    ]
    info = json.loads((scored / "validity" / "validity.json").read_text())
    assert info["target"] == "delta_loss" and info["resamples"] == 200 and info["n_units"] == sum(ns)


def test_api_returns_rows_is_deterministic_and_the_report_shows_it(scored, tmp_path):
    imp = tmp_path / "imp"
    write_importance(scored, imp, seed=5)
    out = tmp_path / "v"
    a = onnx_fe.validate(scored, imp, out, resamples=100, seed=1)
    b = onnx_fe.validate(scored, imp / "importance.csv", tmp_path / "v2", resamples=100, seed=1)
    c = onnx_fe.validate(scored, imp, tmp_path / "v3", resamples=100, seed=2)
    assert a.path == out / "validity.csv"
    assert a.path.read_bytes() == b.path.read_bytes()  # deterministic for a seed
    assert a.path.read_bytes() != c.path.read_bytes()  # the seed sets the bootstrap
    skip = ("fe_rarefied", "fe_increment")  # no value with 5 images per class; folds drawn with the seed
    assert [r["spearman"] for r in a.rows if r["indicator"] not in skip] == [
        r["spearman"] for r in c.rows if r["indicator"] not in skip
    ]  # the seed changes the CIs, not the estimates
    assert [r["indicator"] for r in a.pooled()][-2:] == ["fe|birth_rate+mean_activation", "fe_increment"]
    rep = onnx_fe.report(scored, tmp_path / "r.html", validity=out, gallery=False)
    assert "validity" in rep.sections
    page = rep.path.read_text(encoding="utf-8")
    import re

    body = re.search(r'<section id="validity".*?</section>', page, re.S).group(0)
    assert "<svg" in body and "<table" in body and "fe_increment" in body
    fe = next(r for r in a.pooled() if r["indicator"] == "feature_entropy")
    assert f'data-v="{fe["spearman"]}"' in body


def test_report_finds_results_validity_and_refuses_a_stale_one(scored, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored, run, ignore=shutil.ignore_patterns("validity"))
    imp = tmp_path / "imp"
    write_importance(run, imp)
    onnx_fe.validate(run, imp, resamples=50)
    assert (run / "validity" / "validity.csv").exists()
    rep = onnx_fe.report(run, tmp_path / "r.html", gallery=False)
    body = rep.path.read_text(encoding="utf-8").split('<section id="validity"')[1].split("</section>")[0]
    assert "<svg" in body
    with h5py.File(run / "results.h5", "a") as f:  # as if scored again
        f.attrs["scores_csv_sha256"] = "0" * 64
    seal(run / "results.h5")  # a finished file, not one damaged afterwards
    rep = onnx_fe.report(run, tmp_path / "r2.html", gallery=False)
    body = rep.path.read_text(encoding="utf-8").split('<section id="validity"')[1].split("</section>")[0]
    assert "<svg" not in body and "scored again" in body
    assert any("scored again" in n for n in rep.notes)


def test_missing_units_non_classifier_and_absent_indicator_columns(scored, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(scored, run, ignore=shutil.ignore_patterns("validity"))
    with h5py.File(run / "results.h5", "a") as f:  # results written before hrank existed
        for k in f["layers"]:
            del f["layers"][k]["hrank"]
    seal(run / "results.h5")  # as that version wrote it: a finished file, not one damaged afterwards
    imp = tmp_path / "imp"
    write_importance(run, imp, drop={(0, 0), (0, 1), (2, 5)}, loss=False)
    code, out, err = cli(capsys, "validate", run, imp, "-o", tmp_path / "v", "--resamples", "50")
    assert code == 0, err
    assert "3 of 56 scored units have no importance" in err
    assert "target is delta_output" in err
    assert "hrank" in err and "base features birth_rate, mean_activation, apoz" in err
    df = pd.read_csv(tmp_path / "v" / "validity.csv", dtype={"layer_index": str})
    assert "hrank" not in set(df.indicator) and set(df.target) == {"delta_output"}
    assert df[(df.indicator == "feature_entropy") & (df.layer_index == "0")].n_units.item() == 6


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_importance", "importance not found"),
        ("empty_dir", "no importance.csv in"),
        ("other_model", "of another model than the results"),
        ("no_sha", "cannot be checked to be of the scored model"),
        ("no_common", "share no unit"),
        ("all_nan", "no finite delta_loss or delta_output"),
        ("no_results", "results not found"),
        ("bad_level", "--ci-level"),
        ("foreign_output", "was not written by `onnx-fe validate`"),
        ("empty_output", "is empty; give a path"),
    ],
)
def test_errors_are_one_line(scored, tmp_path, capsys, case, message):
    imp = tmp_path / "imp"
    res, extra = scored, []
    if case == "no_importance":
        imp = tmp_path / "nothing"
    elif case == "empty_dir":
        imp.mkdir()
    elif case == "other_model":
        write_importance(scored, imp, sha="f" * 64)
    elif case == "no_sha":
        write_importance(scored, imp, json_file=False)
    elif case == "no_common":
        write_importance(scored, imp)
        df = pd.read_csv(imp / "importance.csv")
        df["layer_index"] += 100
        df.to_csv(imp / "importance.csv", index=False)
    elif case == "all_nan":
        write_importance(scored, imp)
        df = pd.read_csv(imp / "importance.csv")
        df["delta_loss"] = np.nan
        df.to_csv(imp / "importance.csv", index=False)
    elif case == "no_results":
        write_importance(scored, imp)
        res = tmp_path / "no-results"
    elif case == "bad_level":
        write_importance(scored, imp)
        extra = ["--ci-level", "1.5"]
    elif case == "foreign_output":
        write_importance(scored, imp)
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "validity.csv").write_text("my,own,table\n1,2,3\n")
        extra = ["-o", tmp_path / "o"]
    elif case == "empty_output":
        write_importance(scored, imp)
        extra = ["-o", ""]
    code, out, err = cli(capsys, "validate", res, imp, "--resamples", "20", *extra)
    assert code == 2
    assert err.startswith("onnx-fe: error: ") and err.count("\n") == 1 and message in err, err
    if case == "foreign_output":
        assert (tmp_path / "o" / "validity.csv").read_text() == "my,own,table\n1,2,3\n"
    with pytest.raises(OnnxFeError, match=message.replace("|", r"\|").replace("(", r"\(")):
        onnx_fe.validate(
            res,
            imp,
            *(extra[1:] if extra[:1] == ["-o"] else []),
            resamples=20,
            **({"ci_level": 1.5} if case == "bad_level" else {}),
        )
