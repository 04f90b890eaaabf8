"""The pruning curves' page code (docs/studies/prune_curves.py) on the committed records of docs/pruning-results."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "docs" / "studies"
RESULTS = ROOT / "docs" / "pruning-results"


@pytest.fixture(scope="module")
def page():
    sys.path.insert(0, str(STUDIES))
    try:
        yield importlib.import_module("prune_curves")
    finally:
        sys.path.remove(str(STUDIES))


def _records():
    out = sorted(RESULTS.glob("*.csv"))
    if not out:
        pytest.fail("no committed pruning-curve record")
    return out


def test_the_page_section_regenerates_from_the_records(page, capsys):
    assert page.main(["--check"]) == 0, capsys.readouterr().err
    # and the check can fail: a changed number in the records changes the section
    df = page.load()
    df.loc[df.index[-1], "top1"] = 1 - df.loc[df.index[-1], "top1"]
    assert page.splice(page.PAGE.read_text(), page.section(df)) != page.PAGE.read_text()


def test_records_are_complete_and_consistent(page):
    run_settings = None
    for f in _records():
        card = json.loads(f.with_suffix(".json").read_text())
        run_settings = run_settings or card["settings"]
        assert card["settings"] == run_settings, f.name  # every record made with the same rankings and ratios
        df = pd.read_csv(f)
        ratios = card["settings"]["ratios"]
        rankings = set(df["ranking"])
        assert rankings <= set(card["settings"]["rankings"]), f.name
        assert len(df) == len(rankings) * len(ratios), f.name
        assert (df["n_test"] == card["unpruned"]["n_test"]).all()
        assert df["top1"].between(0, 1).all()
        # ratio 0 is the unpruned model, the same for every ranking
        r0 = df[df["ratio"] == 0]
        assert np.allclose(r0["top1"], card["unpruned"]["top1"], rtol=0, atol=1e-6)  # the CSV keeps 6 digits
        assert (r0["macs"] == card["unpruned"]["macs"]).all()
        # the same channel counts at one ratio whatever the ranking, fewer MACs as the ratio grows
        assert (df.groupby("ratio")["macs"].nunique() == 1).all(), f.name
        m = df.groupby("ratio")["macs"].first().sort_index().to_numpy()
        assert (np.diff(m) <= 0).all() and m[-1] < m[0], f.name
        # top-1 counts whole images
        hits = df["top1"] * df["n_test"]
        assert np.allclose(hits, np.round(hits), atol=1e-3)


def test_area_matches_an_independent_trapezoid(page):
    df = page.load()
    A = page.areas(df).set_index("network")
    net = sorted(A.index)[0]
    for ranking in ("fe_cubical", "weight_l1", "random"):
        g = df[(df["network"] == net) & (df["ranking"] == ranking)].sort_values("ratio")
        x = 1 - g["macs"].to_numpy(float) / g["macs"].iloc[0]
        want = np.trapezoid(g["top1"].to_numpy(float), x) / x[-1]
        assert A.loc[net, ranking] == pytest.approx(want, abs=1e-12)
    # "random" is the mean of the seeded draws, point by point
    raw = pd.read_csv(RESULTS / f"{net}.csv")
    draws = raw[raw["ranking"].str.startswith("random_")].groupby("ratio")["top1"].mean()
    got = df[(df["network"] == net) & (df["ranking"] == "random")].set_index("ratio")["top1"]
    assert np.allclose(got.sort_index().to_numpy(), draws.sort_index().to_numpy())


def test_bootstrap_interval_contains_the_mean_and_shrinks_to_a_point(page):
    m, lo, hi = page.boot_mean(np.array([0.1, 0.4, 0.2, 0.3, 0.5]))
    assert lo <= m <= hi and m == pytest.approx(0.3) and hi - lo > 0
    assert page.boot_mean(np.array([0.25] * 5)) == (0.25, 0.25, 0.25)
