"""The generalisation study's scripts (docs/studies/generalization.py, generalization_run.py) on synthetic records.

The records are made here, in a temporary directory, for the registered grid: a measure planted equal to the gap must
get τ = Ψ = 1 and the verdict "FE predicts the gap", one planted against it "FE predicts the opposite", random ones
no verdict; the page's numbers must match scipy and a direct enumeration of the one-axis pairs. Nothing is written into
docs/generalization-results/.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from onnx_fe.experiments.compare import NETWORKS_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "docs" / "studies"
PREREG = ROOT / "docs" / "preregistration_generalization.md"
B = 200  # resamples in the tests, set by an amendment (which also tests that amendments are applied)


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(STUDIES))
    try:
        yield importlib.import_module("generalization_run"), importlib.import_module("generalization")
    finally:
        sys.path.remove(str(STUDIES))


def _amended(tmp: Path, patch: dict) -> Path:
    """A copy of the pre-registration with one more amendment block."""
    p = tmp / "prereg.md"
    block = json.dumps({"amendment": 99, "date": "2026-12-31", "reason": "test", **patch}, indent=1)
    p.write_text(PREREG.read_text() + f"\n\n```json prereg-generalization-amendment\n{block}\n```\n")
    return p


def _records(out: Path, r: dict, page, *, fe=None, fail=(), seed=0) -> dict:
    """Cards and networks_<family>_<method>.csv tables for every registered network; ``fe``: method → function of
    (gap, rng) giving that method's FE (default random). Returns name → gap."""
    rng = np.random.default_rng(seed)
    reg = page.grid(r)
    (out / "cards").mkdir(parents=True)
    gaps = {}
    for n, g in reg.items():
        gap = float(rng.uniform(0.0, 0.3))
        gaps[n] = gap
        net = {"widths": [8, 16, 32]} if "vgg" in g["family"] else {"stems": 1, "depth": 3, "width": 16}
        card = {
            "name": n,
            "family": g["family"],
            "bits": g["bits"],
            "differs_in": None,
            "converged": n not in fail,
            "epochs": 40,
            "history": [{"epoch": 40, "train_ce": 0.2 if n in fail else 0.009}],
            "settings": {"dataset": g["dataset"], "net": net},
            "train_acc": 1.0,
            "test_acc": 1.0 - gap,
            "gap": gap,
            "seconds": 10.0,
            "train_seconds": 9.0,
        }
        (out / "cards" / f"{n}.json").write_text(json.dumps(card))
    base = {n: {k: float(rng.normal()) for k in NETWORKS_COLUMNS[10:]} for n in reg}
    for n in reg:
        base[n]["param_count"] = int(rng.integers(1000, 100000))
        base[n]["inverse_margin"] = math.inf if rng.random() < 0.1 else abs(base[n]["inverse_margin"])
    for fam in r["families"]:
        for meth in r["methods"]:
            with open(out / f"networks_{fam}_{meth}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, NETWORKS_COLUMNS)
                w.writeheader()
                for n, g in reg.items():
                    if g["family"] != fam or n in fail:
                        continue
                    row = {"model": n, "path": f"models/genzoo/{n}/model.onnx", "method": meth, "layers": 3}
                    row.update(base[n])
                    f_of = (fe or {}).get(meth)
                    row[f"fe_{meth}"] = f_of(gaps[n], rng) if f_of else float(rng.normal())
                    row[f"fe_rarefied_{meth}"] = float(rng.normal())
                    row[f"birth_rate_{meth}"] = float(rng.normal())
                    w.writerow(row)
    return gaps


def _page(tmp: Path, prereg: Path, results: Path) -> str:
    page, fig = tmp / "docs" / "generalization.md", tmp / "docs" / "img" / "generalization.png"
    cmd = [sys.executable, str(STUDIES / "generalization.py"), "--results", str(results), "--prereg", str(prereg)]
    run = subprocess.run([*cmd, "--page", str(page), "--figure", str(fig)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return page.read_text()


def _primary(text: str) -> dict:
    """(hypothesis, method, statistic) → (estimate, verdict) from the page's primary table."""
    sec = text.split("## Primary tests")[1].split("\n## ")[0]
    out = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("H1", "H2"):
            out[(cells[0], cells[1], cells[2])] = (cells[3].split(" [")[0], cells[6].strip("*"))
    return out


def test_registration_applies_the_amendments(mods, tmp_path):
    run, page = mods
    r = run.registration()
    assert r["families"]["digits_vgg"]["base"] == "01010100"  # amendment 1
    assert r["families"]["shapes_depth"]["epoch_cap"] == 300 and r["seed"] == 23
    assert [a["amendment"] for a in r["amendments"]][:1] == [1]
    # the page's grid (registration + amendments) is the grid models/build_genzoo.py trains
    sys.path.insert(0, str(ROOT))
    try:
        from models import build_genzoo
    finally:
        sys.path.remove(str(ROOT))
    built = {n["name"]: (n["family"], n["bits"]) for n in build_genzoo.grid()}
    assert {n: (g["family"], g["bits"]) for n, g in page.grid(r).items()} == built
    # a nested key changes only itself; the note records the amendment
    r2 = run.registration(_amended(tmp_path, {"sharpness": {"draws": 16}, "resamples": 50}))
    assert r2["sharpness"]["draws"] == 16 and r2["sharpness"]["delta"] == 0.1 and r2["resamples"] == 50
    assert r2["families"] == r["families"]
    assert r2["amendments"][-1] == {
        "amendment": 99,
        "date": "2026-12-31",
        "reason": "test",
        "keys": ["resamples", "sharpness"],
    }
    with pytest.raises(SystemExit, match="disagree"):
        run.check_package(r2)  # compare --summary cannot take 16 draws: the run refuses


def test_run_commands_take_each_familys_layers(mods):
    run, _ = mods
    r = run.registration()
    for fam, f in r["families"].items():
        args = run.commands(r, fam, "clique", [Path("a/model.onnx")])
        assert args[:3] == ["compare", "a/model.onnx", str(ROOT / r["scoring_images"][f["dataset"]])]
        assert args[3:11] == ["-n", "50", "-m", "clique", "--threshold", "50", "--max-edge-density", "0.8"]
        assert ("-l" in args) == (f["layers"] != "all")
        if f["layers"] != "all":
            assert args[args.index("-l") + 1] == f["layers"]
        assert args[-7:] == [
            "--summary",
            "--permutations",
            "0",
            "--no-plot",
            "-q",
            "-o",
            str(run.CACHE / fam / "clique"),
        ]


def test_planted_fe_predicts_the_gap_and_random_measures_do_not(mods, tmp_path):
    run, page = mods
    prereg = _amended(tmp_path, {"resamples": B})
    r = run.registration(prereg)
    res = tmp_path / "res"
    _records(res, r, page, fe={"cubical": lambda g, rng: g, "clique": lambda g, rng: -3 * g})
    text = _page(tmp_path, prereg, res)
    assert "below the issue's size" not in text
    p = _primary(text)
    assert len(p) == 16
    assert p[("H1", "cubical", "FE")] == ("+1.000", "FE predicts the gap")
    assert p[("H1", "clique", "FE")] == ("−1.000", "FE predicts the opposite")
    for (h, meth, what), (_, verdict) in p.items():
        if h == "H2":
            b = what.split(" − ", 1)[1]
            assert verdict == (f"FE better than {b}" if meth == "cubical" else f"{b} better than FE"), (meth, b)
    assert f"({B} resamples" in text and "amendment 99, 2026-12-31" in text
    # every random baseline's Ψ is far from ±1, and no secondary table carries a verdict
    data = page.load(res, r)
    st = page.analyse(data, r)
    for m in ("path_norm", "param_count", "pacbayes_flatness", "mean_activation"):
        assert abs(st["measures"][m]["psi"]) < 0.6, m
    assert st["measures"]["fe_cubical"]["tau_overall"] == 1.0 and st["measures"]["fe_cubical"]["psi"] == 1.0
    assert next(line for line in text.splitlines() if line.startswith("| 1 | ")).startswith("| 1 | **FE (cubical)** |")


def test_a_random_fe_gets_no_verdict(mods, tmp_path):
    run, page = mods
    prereg = _amended(tmp_path, {"resamples": B})
    r = run.registration(prereg)
    res = tmp_path / "res"
    _records(res, r, page, seed=3)
    p = _primary(_page(tmp_path, prereg, res))
    for meth in r["methods"]:
        assert p[("H1", meth, "FE")][1] == "not shown"


def test_page_numbers_match_scipy_and_the_pairs(mods, tmp_path):
    run, page = mods
    r = run.registration(_amended(tmp_path, {"resamples": 20}))
    res = tmp_path / "res"
    gaps = _records(res, r, page, seed=7, fail=("digits_vgg_01010100",))
    data = page.load(res, r)
    st = page.analyse(data, r)
    rows = data["rows"]
    assert len(rows) == 71 and "digits_vgg_01010100" not in {x["name"] for x in rows}
    for m in ("fe_clique", "inverse_margin", "path_norm"):
        v = np.array([x[m] for x in rows])
        g = np.array([gaps[x["name"]] for x in rows])
        ds = np.array([x["dataset"] for x in rows])
        taus = []
        for d in ("digits", "shapes"):
            finite = np.where(np.isinf(v[ds == d]), 1e300, v[ds == d])  # +inf ranks above every value
            taus.append(stats.kendalltau(finite, g[ds == d]).statistic)
            assert st["measures"][m]["tau"][d] == pytest.approx(taus[-1], abs=1e-12)
        assert st["measures"][m]["tau_overall"] == pytest.approx(np.mean(taus), abs=1e-12)
        # Ψ by enumerating the pairs of the same family that differ in exactly one axis
        per_axis: dict[int, list[float]] = {}
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                diff = [k for k in range(8) if a["bits"][k] != b["bits"][k]]
                if a["family"] == b["family"] and len(diff) == 1:
                    with np.errstate(invalid="ignore"):
                        s = np.nan_to_num(np.sign(a[m] - b[m])) * np.sign(a["gap"] - b["gap"])
                    per_axis.setdefault(diff[0], []).append(float(s))
        assert len(per_axis) == 8 and all(len(v) == 7 for v in per_axis.values())  # the excluded base's pairs
        want = {k: float(np.mean(v)) for k, v in per_axis.items()}
        assert st["measures"][m]["psi_axes"] == pytest.approx(want, abs=1e-12)
        assert st["measures"][m]["psi"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)


def test_below_size_is_said_first_and_exclusions_are_listed(mods, tmp_path):
    run, page = mods
    prereg = _amended(tmp_path, {"resamples": 20})
    r = run.registration(prereg)
    names = list(page.grid(r))
    fail = names[::3]  # 24 not converged: 48 would be enough, 48 − 1 is not
    fail = fail + [names[1]]
    res = tmp_path / "res"
    _records(res, r, page, fail=fail)
    text = _page(tmp_path, prereg, res)
    first = text.split("\n\n")[1]
    assert first.startswith("**This study is below the issue's size: 47 of the 72")
    excl = next(line for line in text.splitlines() if line.startswith("Excluded (not converged"))
    assert all(f"`{n}`" in excl for n in fail) and excl.count("`") == 2 * len(fail)
    assert "converged 47**" in text and "720 core-seconds" in text  # 72 cards × max(seconds, train_seconds)


def test_records_that_break_the_rules_are_refused(mods, tmp_path):
    run, page = mods
    r = run.registration()
    res = tmp_path / "res"
    _records(res, r, page, fail=("shapes_vgg_11110000",))
    page.load(res, r)  # as made: fine
    # a not-converged network with a record (exclusion rule)
    t = res / "networks_shapes_vgg_cubical.csv"
    original = t.read_text()
    with open(t, newline="") as f:
        rows = list(csv.DictReader(f))

    def write(change):
        with open(t, "w", newline="") as f:
            w = csv.DictWriter(f, NETWORKS_COLUMNS)
            w.writeheader()
            w.writerows([rows[0] | change, *rows[1:]])

    write({"model": "shapes_vgg_11110000"})
    with pytest.raises(SystemExit, match="not converged"):
        page.load(res, r)
    # the two methods' tables disagree on a baseline
    write({"path_norm": "123.5"})
    with pytest.raises(SystemExit, match="path_norm"):
        page.load(res, r)
    # a smoke test's card is never a record
    t.write_text(original)
    card = res / "cards" / "digits_depth_00110010.json"
    c = json.loads(card.read_text()) | {"smoke_max_epochs": 2}
    card.write_text(json.dumps(c))
    with pytest.raises(SystemExit, match="smoke"):
        page.load(res, r)
