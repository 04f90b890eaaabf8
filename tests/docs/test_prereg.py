"""docs/studies/prereg.py reads the verdict rules from docs/preregistration.md, and the page keeps its registered block."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "preregistration.md"

_spec = importlib.util.spec_from_file_location("prereg", ROOT / "docs" / "studies" / "prereg.py")
prereg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prereg)

# The registered block is never edited (changes are appended as amendments). If this fails, undo the edit.
REGISTERED_SHA256 = "cebd129984eeb9d613ec19e989a64f4d936edd37b3b2c74908eed9dcbd2d0858"


@pytest.fixture(scope="module")
def rules():
    return prereg.load(PAGE)


def test_registered_block_is_unchanged():
    assert prereg.block_sha256(PAGE) == REGISTERED_SHA256


def test_every_claim_is_fully_specified(rules):
    ids = [c["id"] for c in rules["claims"]]
    assert ids == ["1", "2", "3", "4", "5A", "5B", "6"]
    for c in rules["claims"]:
        assert c["direction"] in (-1, 1)
        assert c["primary"] in ("fe", "fe_rarefied", "ineffectiveness_reference_rule")
        for key in ("name", "effect", "control", "families", "split", "secondary"):
            assert c[key], (c["id"], key)
    assert {c["id"]: c["direction"] for c in rules["claims"]} == {
        "1": 1,
        "2": -1,
        "3": -1,
        "4": 1,
        "5A": -1,
        "5B": 1,
        "6": 1,
    }


def test_design_constants(rules):
    assert rules["verdict_rule"]["ci_level"] == 0.95
    assert set(rules["methods"]) == {"cubical", "clique"}
    seeds = rules["seeds"]
    assert len(seeds["confirmatory"]) >= 5
    assert not set(seeds["confirmatory"]) & set(seeds["exploration"])
    assert rules["primary_quantity_default"] == {"name": "fe_rarefied", "k": 5}
    assert rules["cubical_parameter_rule"]["stability"]["min_agreement"] == 0.8
    assert rules["cubical_parameter_rule"]["qualify"]["direction"] == -1
    assert rules["budget"] == {"full_rebuild_hours": 3, "regeneration_minutes": 15, "repo_growth_mb": 40, "cores": 2}
    assert rules["amendments"] == [] or all(a["date"] and a["reason"] for a in rules["amendments"])


def test_no_partly_verdict_on_the_page():
    assert "partly" not in PAGE.read_text(encoding="utf-8").split("There is no")[0].lower()


@pytest.mark.parametrize(
    "low, high, direction, expected",
    [
        (0.1, 0.5, 1, "reproduced"),
        (-0.5, -0.1, 1, "contradicted"),
        (-0.1, 0.1, 1, "inconclusive"),
        (-0.5, -0.1, -1, "reproduced"),
        (0.1, 0.5, -1, "contradicted"),
        (-0.1, 0.1, -1, "inconclusive"),
        (0.0, 0.3, 1, "inconclusive"),  # a bound at 0 does not exclude 0
        (-0.3, 0.0, -1, "inconclusive"),
        (0.0, 0.0, 1, "inconclusive"),
        (float("nan"), 0.2, 1, "inconclusive"),  # not estimable
        (None, None, -1, "inconclusive"),
        (1e-12, 1e-12, 1, "reproduced"),
    ],
)
def test_verdict(rules, low, high, direction, expected):
    assert prereg.verdict(low, high, direction, rules) == expected


def test_verdict_refuses_bad_input(rules):
    with pytest.raises(ValueError):
        prereg.verdict(-0.1, 0.1, 0, rules)
    with pytest.raises(ValueError):
        prereg.verdict(0.5, 0.1, 1, rules)


def test_verdict_labels_come_from_the_page(rules):
    relabelled = prereg._merge(
        rules,
        {
            "verdict_rule": {
                "reproduced": "ci_excludes_zero_against_direction",
                "contradicted": "ci_excludes_zero_in_direction",
            }
        },
    )
    assert prereg.verdict(0.1, 0.5, 1, relabelled) == "contradicted"


def test_amendments_apply_in_order():
    text = PAGE.read_text(encoding="utf-8") + (
        '\n```json prereg-amendment\n{"date": "2099-01-01", "reason": "test", '
        '"claims": [{"id": "5B", "margin": 1}, {"id": "7", "name": "new", "direction": -1}], '
        '"primary_quantity_default": {"k": 10}}\n```\n'
        '\n```json prereg-amendment\n{"date": "2099-01-02", "reason": "test 2", "primary_quantity_default": {"k": 8}}\n```\n'
    )
    rules = prereg.parse(text)
    assert rules["primary_quantity_default"] == {"name": "fe_rarefied", "k": 8}
    assert prereg.claim(rules, "5B")["margin"] == 1
    assert prereg.claim(rules, "5B")["direction"] == 1  # untouched keys stay
    assert [c["id"] for c in rules["claims"]][-1] == "7"
    assert [a["date"] for a in rules["amendments"]][-2:] == ["2099-01-01", "2099-01-02"]


@pytest.mark.parametrize(
    "body",
    [
        '{"reason": "no date", "seeds": {}}',
        '{"date": "yesterday", "reason": "bad date"}',
        '{"date": "2026-12-01"}',
        '{"date": "2026-12-01", "reason": "r", "claims": [{"direction": 1}]}',
        '{"date": "2026-12-01", "reason": "r", "claims": [{"id": "2", "direction": 0}]}',
        "not json",
    ],
)
def test_malformed_amendments_are_refused(body):
    with pytest.raises(prereg.PreregError):
        prereg.parse(PAGE.read_text(encoding="utf-8") + f"\n```json prereg-amendment\n{body}\n```\n")


def test_amendments_must_be_in_date_order():
    a = '\n```json prereg-amendment\n{"date": "%s", "reason": "r"}\n```\n'
    with pytest.raises(prereg.PreregError):
        prereg.parse(PAGE.read_text(encoding="utf-8") + a % "2026-12-05" + a % "2026-12-01")


def test_t_interval(rules):
    m, lo, hi = prereg.t_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.0, rules=rules)
    assert m == 3.0 and lo < m < hi
    assert math.isclose(hi - m, 2.7764451 * math.sqrt(2.5 / 5), rel_tol=1e-6)
    _, lo2, hi2 = prereg.t_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, rules=rules)
    assert lo2 < lo and hi2 > hi
    assert all(math.isnan(v) for v in prereg.t_interval([1.0, float("nan"), 2.0, float("nan")], 0.0, rules=rules))
