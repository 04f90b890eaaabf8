"""docs/reproduction.md says what the committed results give, by the pre-registered rules.

The per-seed effects (row 0: the images as they are) do not depend on the number of image resamples, so a run with
2 resamples must give exactly the committed per-seed effects of every claim and method; every committed verdict must
follow from its committed CI by prereg.verdict; and the page's verdict table must show the committed verdicts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS / "studies"))

import prereg  # noqa: E402

SUMMARY = DOCS / "repro-results" / "summary.json"


@pytest.fixture(scope="module")
def summary():
    return json.loads(SUMMARY.read_text())


def test_every_claim_and_method_has_a_registered_verdict(summary):
    rules = prereg.load()
    ids = [c["id"] for c in rules["claims"]]
    assert sorted(summary) == sorted(ids)
    for cid, by in summary.items():
        c = prereg.claim(rules, cid)
        assert sorted(by) == ["clique", "cubical"]
        for m, r in by.items():
            assert r["primary"] == c["primary"], (cid, m)
            assert r["verdict"] == prereg.verdict(r["ci_low"], r["ci_high"], c["direction"], rules), (cid, m)
            assert len(r["seeds"]) == len(r["per_seed"])
            if len(r["seeds"]) >= rules["seeds"]["min_seeds_for_estimate"]:
                assert np.mean(r["per_seed"]) == pytest.approx(r["mean"], abs=1e-12)
                assert r["ci_low"] <= r["mean"] <= r["ci_high"]


def test_the_page_shows_the_committed_verdicts(summary):
    page = (DOCS / "reproduction.md").read_text()
    rows = re.findall(r"^\| (\w+) \| [^|]+ \| (clique|cubical) \| [^|]+ \| [^|]+ \| \*\*(\w+)\*\* \|$", page, re.M)
    got = {(c, m): v for c, m, v in rows}
    want = {(c, m): r["verdict"] for c, by in summary.items() for m, r in by.items()}
    assert got == want


def test_the_committed_per_seed_effects_regenerate(summary):
    import reproduce

    res = reproduce.analyse(2, jobs=2)
    for cid, by in summary.items():
        for m, r in by.items():
            new = res["claims"][cid][m]["results"][r["primary"]]
            assert new["seeds"] == r["seeds"], (cid, m)
            np.testing.assert_allclose(new["per_seed"], r["per_seed"], rtol=0, atol=1e-12, err_msg=f"{cid} {m}")
