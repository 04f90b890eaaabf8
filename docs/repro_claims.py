"""Reproduction v2, the pre-registered computations: the cubical parameter rule and every claim's effect.

Reads records (repro_data.load_record) only; the rules come from docs/preregistration.md through prereg.py.
"""

from __future__ import annotations

import numpy as np
import repro_data as D
import repro_stats as S

# --------------------------------------------------------------------------- the cubical parameter rule


def cubical_rule(converged: dict, init: dict, rules: dict) -> dict:
    """The pre-registered choice of the cubical threshold (preregistration.md, "Cubical parameters").

    ``converged`` / ``init``: records of the seed-0 digits VGG and its initial weights on the digits training split,
    cubical, uncensored. Returns the table per candidate, the stability count and the threshold used.
    """
    import onnx_fe

    rule = rules["cubical_parameter_rule"]
    k = rules["primary_quantity_default"]["k"]
    min_side = rules["eligible_layers"]["min_side"]
    labels = converged["labels"]
    if not np.array_equal(labels, init["labels"]) or converged["image_ids"] != init["image_ids"]:
        raise ValueError("the two records must hold the same images in the same order")
    stab = rule["stability"]
    w = np.stack(
        [np.ones(labels.size, dtype=np.int64)]
        + [
            S.subsample_weights(labels, stab["fraction_per_class"], np.random.default_rng(i))
            for i in range(stab["subsamples"])
        ]
    )
    cands = rule["candidates"]["threshold"]
    table, d_all, br_all = [], {}, {}
    for t in cands:
        units, rates = {}, {}
        for role, rec in (("converged", converged), ("init", init)):
            us, bs = [], []
            for layer in rec["layers"]:
                if min(layer["height"], layer["width"]) < min_side:
                    continue
                c = S.cell_values(D.censor(layer["bp"], t), labels, w, k)
                us.append(S.unit_values(c["fe_rarefied"]))
                bs.append(S.unit_values(c["birth_rate"]))
            units[role], rates[role] = np.concatenate(us, axis=1), np.concatenate(bs, axis=1)
        d = np.array([S.cohens_d(units["converged"][p], units["init"][p]) for p in range(w.shape[0])])
        br_c = np.nanmean(rates["converged"], axis=1)
        d_all[t], br_all[t] = d, br_c
        table.append(
            {
                "threshold": t,
                "d": float(d[0]),
                "birth_rate_converged": float(br_c[0]),
                "birth_rate_init": float(np.nanmean(rates["init"][0])),
                "units_with_value_converged": int(np.isfinite(units["converged"][0]).sum()),
                "units_with_value_init": int(np.isfinite(units["init"][0]).sum()),
                "units": int(units["converged"].shape[1]),
            }
        )
    q = rule["qualify"]

    def pick(p):
        ok = [
            (d_all[t][p], t)
            for t in cands
            if np.isfinite(d_all[t][p])
            and np.sign(d_all[t][p]) == q["direction"]
            and br_all[t][p] >= q["min_converged_birth_rate"]
        ]
        return min(ok)[1] if ok else None  # the most negative d (direction -1)

    full = pick(0)
    sub = [pick(p) for p in range(1, w.shape[0])]
    agree = sum(1 for s in sub if s is not None and s == full)
    stable = full is not None and agree >= stab["min_agreement"] * stab["subsamples"]
    fb = rule["fallback"]
    noise = np.random.default_rng(fb["rng_seed"]).standard_normal((fb["maps"], fb["side"], fb["side"]))
    if "no relu" not in fb["noise"].lower():
        noise = np.maximum(noise, 0.0)
    bp = onnx_fe.birth_points(noise, method="cubical", resolution=100, threshold=100)
    rates = {t: float((D.censor(bp, t) > 0).mean()) for t in range(1, 101)}
    noise_t = min((t for t in rates if rates[t] >= fb["min_birth_rate"]), default=None)
    return {
        "candidates": table,
        "full_data_pick": full,
        "subsample_picks": {
            str(s): sum(1 for x in sub if x == s) for s in sorted(set(sub), key=lambda v: (v is None, v))
        },
        "agreement": agree,
        "subsamples": stab["subsamples"],
        "stable": bool(stable),
        "noise_threshold": noise_t,
        "noise_birth_rate": {str(t): rates[t] for t in sorted({max(noise_t - 1, 1), noise_t, 50, 55, 75})},
        "threshold": full if stable else noise_t,
        "by": "selection rule (stable)" if stable else "fallback: noise birth rate 0.5",
    }
