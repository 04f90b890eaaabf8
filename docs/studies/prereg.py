"""The pre-registered rules of docs/preregistration.md, read from the page itself.

    import prereg                      # with docs/studies/ on sys.path
    rules = prereg.load()              # the registered block with every amendment applied, in order
    rules["claims"]                    # list of claims: id, direction, primary, effect, control, ...
    prereg.verdict(low, high, +1)      # "reproduced" | "contradicted" | "inconclusive"

The page holds one fenced block opened with ```` ```json prereg ```` (never edited) and, below the heading
"Amendments", any number of ```` ```json prereg-amendment ```` blocks, each with a "date" (YYYY-MM-DD), a "reason"
and the keys it changes. Amendments are applied in the order they appear: dictionaries are merged key by key,
claims are matched by "id" (a new id adds a claim), any other value is replaced.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "preregistration.md"
_FENCE = re.compile(r"^```json (prereg|prereg-amendment)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


class PreregError(ValueError):
    """The page or an amendment does not follow the format above."""


def blocks(text: str) -> tuple[str, list[str]]:
    """The registered block's text and the amendment blocks' texts, in page order."""
    found = _FENCE.findall(text)
    base = [body for kind, body in found if kind == "prereg"]
    if len(base) != 1:
        raise PreregError(f"expected exactly one ```json prereg block, found {len(base)}")
    return base[0], [body for kind, body in found if kind == "prereg-amendment"]


def block_sha256(path: str | Path = PAGE) -> str:
    """SHA-256 of the registered block's text (tests pin it: the block is never edited)."""
    return hashlib.sha256(blocks(Path(path).read_text(encoding="utf-8"))[0].encode()).hexdigest()


def _merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, val in patch.items():
        if key == "claims":
            claims = {c["id"]: c for c in out.get("claims", [])}
            order = [c["id"] for c in out.get("claims", [])]
            for c in val:
                if "id" not in c:
                    raise PreregError("an amended claim needs its 'id'")
                if c["id"] in claims:
                    claims[c["id"]] = _merge(claims[c["id"]], c)
                else:
                    claims[c["id"]] = c
                    order.append(c["id"])
            out["claims"] = [claims[i] for i in order]
        elif isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def parse(text: str) -> dict:
    """The rules of a page's text: the registered block with its amendments applied."""
    base, amendments = blocks(text)
    try:
        rules = json.loads(base)
    except json.JSONDecodeError as e:
        raise PreregError(f"the registered block is not valid JSON: {e}") from None
    applied = []
    for i, body in enumerate(amendments, 1):
        try:
            patch = json.loads(body)
        except json.JSONDecodeError as e:
            raise PreregError(f"amendment {i} is not valid JSON: {e}") from None
        date, reason = patch.pop("date", None), patch.pop("reason", None)
        try:
            day = _dt.date.fromisoformat(str(date))
        except ValueError:
            raise PreregError(f"amendment {i} needs a 'date' as YYYY-MM-DD, got {date!r}") from None
        if not reason:
            raise PreregError(f"amendment {i} needs a 'reason'")
        if applied and day < _dt.date.fromisoformat(applied[-1]["date"]):
            raise PreregError(f"amendment {i} is dated before the one above it")
        rules = _merge(rules, patch)
        applied.append({"date": day.isoformat(), "reason": reason, "changes": sorted(patch)})
    rules["amendments"] = applied
    _check(rules)
    return rules


def load(path: str | Path = PAGE) -> dict:
    """The rules of docs/preregistration.md (or another page)."""
    return parse(Path(path).read_text(encoding="utf-8"))


def _check(rules: dict) -> None:
    vr = rules.get("verdict_rule", {})
    if sorted(vr.get("labels", [])) != ["contradicted", "inconclusive", "reproduced"]:
        raise PreregError("verdict_rule.labels must be exactly reproduced, contradicted, inconclusive")
    for c in rules.get("claims", []):
        if c.get("direction") not in (-1, 1):
            raise PreregError(f"claim {c.get('id')}: direction must be +1 or -1")


def claim(rules: dict, claim_id: str) -> dict:
    for c in rules["claims"]:
        if c["id"] == str(claim_id):
            return c
    raise KeyError(f"no claim {claim_id!r} in the pre-registration")


def verdict(ci_low: float, ci_high: float, direction: int, rules: dict | None = None) -> str:
    """The pre-registered verdict for an effect whose 95 % CI is [ci_low, ci_high].

    direction: the paper's expected sign of the effect (+1 or -1). A CI that contains 0 (ends included), or a
    missing / NaN bound (effect not estimable), is inconclusive; there is no "partly".
    """
    rules = rules or load()
    vr = rules["verdict_rule"]
    label = {vr[k]: k for k in ("reproduced", "contradicted", "inconclusive")}
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    lo, hi = (float("nan") if v is None else float(v) for v in (ci_low, ci_high))
    if math.isnan(lo) or math.isnan(hi):
        return label["ci_contains_zero_or_not_estimable"]
    if lo > hi:
        raise ValueError(f"CI low {lo} is above high {hi}")
    if lo > 0 or hi < 0:
        same = (lo > 0) == (direction > 0)
        return label["ci_excludes_zero_in_direction" if same else "ci_excludes_zero_against_direction"]
    return label["ci_contains_zero_or_not_estimable"]


def t_interval(per_seed_effects, var_images: float, level: float | None = None, rules: dict | None = None):
    """The pre-registered CI: mean over seeds ± t(1 − α/2, S − 1) · sqrt(var_seeds / S + var_images).

    per_seed_effects: e_s per training seed (NaN = no value for that seed); var_images: the variance of the
    seed mean over the image resamples. Returns (m, low, high); all NaN when fewer seeds than the registered
    minimum have a value.
    """
    import numpy as np
    from scipy.stats import t as student_t

    rules = rules or load()
    level = level if level is not None else rules["verdict_rule"]["ci_level"]
    e = np.asarray(per_seed_effects, dtype=float)
    e = e[np.isfinite(e)]
    s = e.size
    if s < rules["seeds"]["min_seeds_for_estimate"] or not np.isfinite(var_images):
        return float("nan"), float("nan"), float("nan")
    m = float(e.mean())
    half = float(student_t.ppf(0.5 + level / 2, s - 1) * np.sqrt(e.var(ddof=1) / s + var_images))
    return m, m - half, m + half
