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


# --------------------------------------------------------------------------- records and their values


class Store:
    """The records of docs/repro-results, the image-resampling weights of every image folder, and each record's
    layer values under every weighting (computed once, on first use).

    ``threshold``: the cubical threshold (records hold uncensored cubical birth points).
    """

    FOLDERS = ("digits/test", "digits/train", "shapes/test", "shapes/train")

    def __init__(self, results, rules: dict, threshold: int, n_resamples: int | None = None):
        from pathlib import Path

        self.results = Path(results)
        self.rules = rules
        self.threshold = threshold
        self.k = rules["primary_quantity_default"]["k"]
        self.min_side = rules["eligible_layers"]["min_side"]
        b = rules["ci"]["image_resamples"] if n_resamples is None else n_resamples
        self.n_resamples = b
        rng = np.random.default_rng(rules["ci"]["rng_seed"])
        self.weights, self.labels, self.ids = {}, {}, {}
        for folder in self.FOLDERS:  # one draw per image folder, in this fixed order
            labels, ids = self._folder_labels(folder)
            self.labels[folder], self.ids[folder] = labels, ids
            self.weights[folder] = S.stratified_weights(labels, b, rng)
        self._rec: dict = {}
        self._lv: dict = {}

    def _folder_labels(self, folder):
        # every record of a folder holds all its images in the same order: read the first one found
        split = folder.split("/")[1]
        data = folder.split("/")[0]
        unit = {"digits": "digits_vgg", "shapes": "shapes_vgg"}[data]
        for p in sorted(self.results.glob(f"s*/{unit}__converged__{split}__*.npz")):
            rec = D.load_record(p)
            return rec["labels"], rec["image_ids"]
        raise FileNotFoundError(f"no record of {unit} on {folder} under {self.results}")

    def has(self, seed: int, name: str, method: str) -> bool:
        return (self.results / f"s{seed}" / f"{name}__{method}.npz").exists()

    def record(self, seed: int, name: str, method: str) -> dict:
        key = (seed, name, method)
        if key not in self._rec:
            rec = D.load_record(self.results / f"s{seed}" / f"{name}__{method}.npz")
            folder = rec["key"]["folder"].removeprefix("models/data/")
            if rec["image_ids"] != self.ids[folder]:
                raise ValueError(f"s{seed} {name} {method}: images differ from the folder's")
            rec["folder"] = folder
            if method == "cubical":
                for layer in rec["layers"]:
                    layer["bp"] = D.censor(layer["bp"], self.threshold)
            self._rec[key] = rec
        return self._rec[key]

    def cells(self, seed, name, method, layer_index, rows=None, rows_key=None, point_only=False) -> dict:
        """Every quantity of every cell of one layer under every weighting, (P, K, C) each (``point_only``: row 0
        only). ``rows``: a boolean mask of the folder's images to use (the folder's weights restricted to them),
        named by ``rows_key`` in the cache of layer values, which is filled on the way."""
        rec = self.record(seed, name, method)
        layer = next(x for x in rec["layers"] if x["index"] == layer_index)
        w = self.weights[rec["folder"]]
        if point_only:
            w = w[:1]
        bp, labels = layer["bp"], rec["labels"]
        if rows is not None:
            bp, labels, w = bp[rows], labels[rows], w[:, rows]
        c = S.cell_values(bp, labels, w, self.k)
        if not point_only:
            key = (seed, name, method, rows_key, layer_index)
            if key not in self._lv:
                v = {q: S.layer_value(c[q]) for q in S.QUANTITIES}
                v["size"] = layer["height"]
                v["coverage"] = S.coverage(c["fe_rarefied"])
                self._lv[key] = v
        return c

    def layer_values(self, seed, name, method, rows_key=None, rows=None) -> dict:
        """{layer index: {"size": side, quantity: (P,) values, "coverage": share of cells with a rarefied value}}
        for the eligible layers of a record."""
        rec = self.record(seed, name, method)
        out = {}
        for layer in rec["layers"]:
            if min(layer["height"], layer["width"]) < self.min_side:
                continue
            key = (seed, name, method, rows_key, layer["index"])
            if key not in self._lv:
                self.cells(seed, name, method, layer["index"], rows, rows_key)
            out[layer["index"]] = self._lv[key]
        return out


# --------------------------------------------------------------------------- the claims' per-seed effects
#
# Each claim function returns {quantity: {seed: (P,) effect under every weighting}} plus a dict of descriptive
# numbers for the page. Row 0 is the effect on the data as they are.

FAMILY_DATA = {
    "digits_vgg": "digits",
    "shapes_vgg": "shapes",
    "shapes_vgg_bn": "shapes",
    "shapes_resnet": "shapes",
    "depthnet_digits": "digits",
    "depthnet_shapes": "shapes",
}
DEPTH_STEMS = {"depthnet_digits": 1, "depthnet_shapes": 2}
LAST = 3  # the last eligible conv of the shapes VGG / VGG-BN (8x8)


ROLES = ("converged", "init")


def _have_pairs(st: Store, s: int, fams, method: str) -> bool:
    """Whether seed s has the converged and the init test records of every family."""
    return all(st.has(s, f"{f}__{r}__test", method) for f in fams for r in ROLES)


def _mean_coverage(st: Store, s: int, fams, method: str) -> float:
    """Mean share of cells with a rarefied value over the eligible layers of the families' converged and init nets."""
    return float(
        np.mean(
            [v["coverage"] for f in fams for r in ROLES for v in st.layer_values(s, f"{f}__{r}__test", method).values()]
        )
    )


def _diff_over_layers(tr: dict, ini: dict, q: str, layers=None) -> np.ndarray:
    """Mean over the layers (both networks have a value) of trained − init: (P,)."""
    idx = sorted(set(tr) & set(ini)) if layers is None else layers
    return S.mean_over([tr[i][q] - ini[i][q] for i in idx])


def claim_1(st: Store, seeds, method: str, margin: float) -> tuple[dict, dict]:
    """margin − mean |FE_twin − FE_original| over the cells of the eligible layers, mean over the two families."""
    eff = {"fe": {}}
    desc = {"identical_maps": {}, "act_ratio": {}, "wl1_ratio": {}, "mean_abs_dfe": {}}
    for s in seeds:
        per_fam, ident, act, wl1 = [], [], [], []
        for fam in ("digits_vgg", "shapes_vgg"):
            a, b = f"{fam}__converged__test", f"{fam}__rescaled__test"
            if not (st.has(s, a, method) and st.has(s, b, method)):
                break
            ra, rb = st.record(s, a, method), st.record(s, b, method)
            diffs = []
            for la in ra["layers"]:
                if min(la["height"], la["width"]) < st.min_side:
                    continue
                lb = next(x for x in rb["layers"] if x["index"] == la["index"])
                ca = st.cells(s, a, method, la["index"])["fe"]
                cb = st.cells(s, b, method, la["index"])["fe"]
                diffs.append(np.abs(cb - ca).reshape(ca.shape[0], -1))
                ident.append(float((la["bp"] == lb["bp"]).mean()))
                if la["index"] == 0:
                    act.append(float(np.mean(lb["act"]) / np.mean(la["act"])))
                    wl1.append(float(np.mean(lb["wl1"]) / np.mean(la["wl1"])))
            per_fam.append(np.concatenate(diffs, axis=1).mean(axis=1))
        else:
            mad = S.mean_over(per_fam)
            eff["fe"][s] = margin - mad
            desc["mean_abs_dfe"][s] = float(mad[0])
            desc["identical_maps"][s] = float(np.mean(ident))
            desc["act_ratio"][s] = float(np.mean(act))
            desc["wl1_ratio"][s] = float(np.mean(wl1))
    return eff, desc


def claim_2(st: Store, seeds, method: str) -> tuple[dict, dict]:
    fams = ("digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet")
    eff = {q: {} for q in S.QUANTITIES}
    eff["fe_rarefied_vs_randomize_twin"] = {}
    desc = {"per_family": {f: {} for f in fams}, "coverage": {}}
    for s in seeds:
        if not _have_pairs(st, s, fams, method):
            continue
        if all(st.has(s, f"{f}__randomize__test", method) for f in fams):
            eff["fe_rarefied_vs_randomize_twin"][s] = S.mean_over(
                [
                    _diff_over_layers(
                        st.layer_values(s, f"{f}__converged__test", method),
                        st.layer_values(s, f"{f}__randomize__test", method),
                        "fe_rarefied",
                    )
                    for f in fams
                ]
            )
        for q in S.QUANTITIES:
            per = []
            for f in fams:
                tr = st.layer_values(s, f"{f}__converged__test", method)
                ini = st.layer_values(s, f"{f}__init__test", method)
                d = _diff_over_layers(tr, ini, q)
                per.append(d)
                if q == "fe_rarefied":
                    desc["per_family"][f][s] = float(d[0])
            eff[q][s] = S.mean_over(per)
        desc["coverage"][s] = _mean_coverage(st, s, fams, method)
    return eff, desc


def claim_3(st: Store, seeds, method: str) -> tuple[dict, dict]:
    fams = ("depthnet_digits", "depthnet_shapes")
    eff = {q: {} for q in S.QUANTITIES}
    eff["trained_only_slope"] = {}
    eff["gap_slope_vgg_resnet"] = {}
    desc = {"gap_by_layer": {f: {} for f in fams}, "trained_by_layer": {f: {} for f in fams}, "coverage": {}}
    desc["slope_by_family"] = {f: {} for f in fams}  # the primary's slope per family (its mean is the effect)
    x = np.arange(6) / 5.0
    for s in seeds:
        if not _have_pairs(st, s, fams, method):
            continue
        for q in list(S.QUANTITIES) + ["trained_only_slope"]:
            qq = "fe_rarefied" if q == "trained_only_slope" else q
            slopes = []
            for f in fams:
                tr = st.layer_values(s, f"{f}__converged__test", method)
                ini = st.layer_values(s, f"{f}__init__test", method)
                idx = sorted(tr)[DEPTH_STEMS[f] :]
                assert len(idx) == 6 and all(tr[i]["size"] == 16 for i in idx), (f, idx)
                if q == "trained_only_slope":
                    y = np.stack([tr[i][qq] for i in idx], axis=1)
                else:
                    y = np.stack([tr[i][qq] - ini[i][qq] for i in idx], axis=1)
                    if q == "fe_rarefied":
                        desc["gap_by_layer"][f][s] = [float(v) for v in y[0]]
                        desc["trained_by_layer"][f][s] = [float(tr[i][qq][0]) for i in idx]
                slopes.append(S.ols_slope(x, y))
                if q == "fe_rarefied":
                    desc["slope_by_family"][f][s] = slopes[-1]
            eff[q][s] = S.mean_over(slopes)
        desc["coverage"][s] = _mean_coverage(st, s, fams, method)
        # secondary: the gap's slope over relative depth in the VGG / ResNet families (map size changes there)
        vfams = ("digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet")
        if _have_pairs(st, s, vfams, method):
            slopes = []
            for f in vfams:
                tr = st.layer_values(s, f"{f}__converged__test", method)
                ini = st.layer_values(s, f"{f}__init__test", method)
                idx = sorted(set(tr) & set(ini))
                xv = np.array(idx, dtype=float) / max(idx[-1], 1)
                slopes.append(S.ols_slope(xv, np.stack([tr[i]["fe_rarefied"] - ini[i]["fe_rarefied"] for i in idx], 1)))
            eff["gap_slope_vgg_resnet"][s] = S.mean_over(slopes)
    return eff, desc


def claim_4(st: Store, seeds, method: str, cards: dict) -> tuple[dict, dict]:
    eff = {q: {} for q in S.QUANTITIES}
    desc = {"loss": {}, "value": {}, "birth_rate": {}}
    for s in seeds:
        names = [f"shapes_vgg__epoch_{e:02d}__train" for e in range(10)] + ["shapes_vgg__converged__train"]
        if not all(st.has(s, n, method) for n in names) or s not in cards:
            continue
        loss = np.array([cards[s]["models"][f"epoch_{e:02d}"]["train_loss_eval"] for e in range(11)])
        desc["loss"][s] = loss.tolist()
        for q in S.QUANTITIES:
            y = np.stack([st.layer_values(s, n, method)[LAST][q] for n in names], axis=1)
            eff[q][s] = S.spearman_rows(loss, y)
            if q == "fe_rarefied":
                desc["value"][s] = [float(v) for v in y[0]]
            if q == "birth_rate":
                desc["birth_rate"][s] = [float(v) for v in y[0]]
    return eff, desc


def genA_rows(st: Store, n_train: int | None) -> np.ndarray:
    """Images of the shapes training folder among the first n_train training images (None: all)."""
    import json

    man = json.loads((D.ROOT / "models/data/shapes/manifest.json").read_text())["train"]["png_to_index"]
    ids = st.ids["shapes/train"]
    if n_train is None:
        return np.ones(len(ids), dtype=bool)
    return np.array([man[i] < n_train for i in ids])


GENA_N = {"genA_n6000": 6000, "genA_n2000": 2000, "genA_n600": 600, "genA_n200": 200}


def claim_5a(st: Store, seeds, method: str, accs: dict) -> tuple[dict, dict]:
    eff = {q: {} for q in S.QUANTITIES}
    eff["fe_rarefied_common_200"] = {}
    desc = {"acc": {}, "value": {}, "coverage": {}, "birth_rate": {}}
    for s in seeds:
        if not all(st.has(s, f"{u}__converged__train", method) for u in GENA_N) or s not in accs:
            continue
        acc = np.array([accs[s][u] for u in GENA_N])
        desc["acc"][s] = acc.tolist()
        vals = {}
        for u, n in GENA_N.items():
            own = None if n >= 1000 else n
            vals[u] = st.layer_values(s, f"{u}__converged__train", method, rows_key=own, rows=genA_rows(st, own))[LAST]
        for q in S.QUANTITIES:
            y = np.stack([vals[u][q] for u in GENA_N], axis=1)
            eff[q][s] = S.spearman_rows(acc, y)
        desc["value"][s] = [float(vals[u]["fe_rarefied"][0]) for u in GENA_N]
        desc["birth_rate"][s] = [float(vals[u]["birth_rate"][0]) for u in GENA_N]
        desc["coverage"][s] = [vals[u]["coverage"] for u in GENA_N]
        common = genA_rows(st, 200)
        y = np.stack(
            [
                st.layer_values(s, f"{u}__converged__train", method, rows_key=200, rows=common)[LAST]["fe_rarefied"]
                for u in GENA_N
            ],
            axis=1,
        )
        eff["fe_rarefied_common_200"][s] = S.spearman_rows(acc, y)
    return eff, desc


def claim_5a_same_images(st: Store, seeds, method: str, accs: dict) -> dict:
    """Not pre-registered (a sensitivity analysis added after the results were seen): claim 5A's statistic, the
    Spearman rho over the four genA networks of a seed between test accuracy and the conv 3 value, with every
    network scored on the same images: the shapes training PNGs whose manifest index is < 200, which every genA
    network was trained on (genA_n<n> saw the first n training images). Raw FE and rarefied FE.

    Returns {"effects": {quantity: {seed: (P,) effect}}, "n_images": images used, "n_own": {unit: own images}}."""
    common = genA_rows(st, 200)
    out = {"effects": {"fe": {}, "fe_rarefied": {}}, "n_images": int(common.sum())}
    out["n_own"] = {u: int(genA_rows(st, None if n >= 1000 else n).sum()) for u, n in GENA_N.items()}
    for s in seeds:
        if not all(st.has(s, f"{u}__converged__train", method) for u in GENA_N) or s not in accs:
            continue
        acc = np.array([accs[s][u] for u in GENA_N])
        vals = [st.layer_values(s, f"{u}__converged__train", method, rows_key=200, rows=common)[LAST] for u in GENA_N]
        for q in out["effects"]:
            out["effects"][q][s] = S.spearman_rows(acc, np.stack([v[q] for v in vals], axis=1))
    return out


GENB = (0.0, 0.2, 0.4, 0.6, 0.8)


def claim_5b(st: Store, seeds, method: str) -> tuple[dict, dict]:
    eff = {q: {} for q in S.QUANTITIES}
    desc = {"value": {}, "coverage": {}, "birth_rate": {}}
    x = np.array(GENB)
    for s in seeds:
        names = [f"genB_{r:.1f}__converged__train" for r in GENB]
        if not all(st.has(s, n, method) for n in names):
            continue
        vals = [st.layer_values(s, n, method)[LAST] for n in names]
        for q in S.QUANTITIES:
            eff[q][s] = S.spearman_rows(x, np.stack([v[q] for v in vals], axis=1))
        desc["value"][s] = [float(v["fe_rarefied"][0]) for v in vals]
        desc["birth_rate"][s] = [float(v["birth_rate"][0]) for v in vals]
        desc["coverage"][s] = [v["coverage"] for v in vals]
    return eff, desc


# --------------------------------------------------------------------------- from per-seed effects to a verdict


def summarise(per_seed: dict, direction: int, rules: dict, primary: bool) -> dict:
    """The pre-registered estimate: mean over seeds, 95 % CI from the seeds' spread and the image resamples, and
    (for the primary quantity only) the verdict."""
    import prereg

    e0, m_boot, v_img = S.seed_summary(per_seed)
    seeds = sorted(s for s, e in per_seed.items() if np.isfinite(e[0]))
    m, lo, hi = prereg.t_interval(e0, v_img, rules=rules)
    out = {
        "seeds": seeds,
        "per_seed": [float(v) for v in e0],
        "mean": m,
        "ci_low": lo,
        "ci_high": hi,
        "var_seeds_over_S": float(np.var(e0, ddof=1) / len(e0)) if len(e0) > 1 else float("nan"),
        "var_images": v_img,
    }
    out["verdict"] = prereg.verdict(lo, hi, direction, rules) if primary else None
    return out


# --------------------------------------------------------------------------- claim 6: rankings and ablation

N_RANDOM = 10


def rankings(train_recs: dict, threshold_note: str = "") -> dict[str, dict[int, np.ndarray]]:
    """The unit orders (most important first) ablated for claim 6, from the training-split records of one network:
    {"fe_<method>": reference rule, "ineff_<method>": plain ineffectiveness, for each method, and the method-free
    "mean_activation", "apoz", "weight_l1", "random_0".."random_9"}. ``train_recs``: method → record (cubical
    already censored)."""
    from onnx_fe.scores.entropy import entropy_table
    from onnx_fe.scores.ranking import order_from_scores, reference_scores

    out: dict[str, dict[int, np.ndarray]] = {}
    any_rec = next(iter(train_recs.values()))
    for method, rec in train_recs.items():
        k = len(rec["classes"])
        for layer in rec["layers"]:
            _, _, _, ie = entropy_table(layer["bp"], rec["labels"], k)
            with np.errstate(invalid="ignore"):
                fe = np.nanmean(reference_scores(ie), axis=0)
                plain = np.nanmean(ie, axis=0)
            out.setdefault(f"fe_{method}", {})[layer["index"]] = order_from_scores(fe, False)
            out.setdefault(f"ineff_{method}", {})[layer["index"]] = order_from_scores(plain, False)
    for layer in any_rec["layers"]:
        i, c = layer["index"], layer["bp"].shape[1]
        out.setdefault("mean_activation", {})[i] = order_from_scores(layer["act"], True)
        out.setdefault("apoz", {})[i] = order_from_scores(layer["apoz"], False)
        out.setdefault("weight_l1", {})[i] = order_from_scores(layer["wl1"], True)
        for r in range(N_RANDOM):
            out.setdefault(f"random_{r}", {})[i] = order_from_scores(np.random.default_rng([r, i]).random(c), True)
    return out


def auc_gaps(abl: dict, weights: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """AUC(least important first) − AUC(most important first) of every ranking and layer under every weighting of
    the images: {name: {layer: (P,)}}; AUC of accuracy over the fraction of the layer's units removed."""
    w = weights.astype(np.float64)
    tot = w.sum(axis=1)
    out: dict[str, dict[int, np.ndarray]] = {n: {} for n in abl["names"]}
    for li, L in abl["layers"].items():
        x = L["counts"] / L["channels"]
        acc = np.einsum("pn,adcn->padc", w, L["hits"].astype(np.float64)) / tot[:, None, None, None]
        dx = np.diff(x)
        auc = ((acc[..., 1:] + acc[..., :-1]) / 2 * dx).sum(axis=-1) / (x[-1] - x[0])  # (P, rankings, 2)
        for a, n in enumerate(abl["names"]):
            out[n][li] = auc[:, a, 1] - auc[:, a, 0]
    return out


def claim_6(st: Store, seeds, method: str, ablations: dict) -> tuple[dict, dict]:
    """ablations: (seed, family) → loaded ablation of that seed's converged network on the test split."""
    fams = ("digits_vgg", "shapes_vgg")
    keys = {
        "fe_rarefied": None,
        "ineffectiveness_reference_rule": f"fe_{method}",
        "ineffectiveness_plain": f"ineff_{method}",
        "mean_activation": "mean_activation",
        "apoz": "apoz",
        "weight_l1": "weight_l1",
    }
    eff = {q: {} for q in keys if keys[q]}
    eff["fe_minus_best_baseline"] = {}
    desc = {"gaps": {}}
    for s in seeds:
        if not all((s, f) in ablations for f in fams):
            continue
        per = {q: [] for q in eff}
        for f in fams:
            folder = "digits/test" if f == "digits_vgg" else "shapes/test"
            gaps = auc_gaps(ablations[(s, f)], st.weights[folder])
            layers = sorted(gaps["random_0"])
            rnd = {li: np.mean([gaps[f"random_{r}"][li] for r in range(N_RANDOM)], axis=0) for li in layers}
            for q, name in keys.items():
                if name is None:
                    continue
                for li in layers:
                    per[q].append(gaps[name][li] - rnd[li])
            for li in layers:
                best = np.max(np.stack([gaps[b][li] for b in ("mean_activation", "apoz", "weight_l1")]), axis=0)
                per["fe_minus_best_baseline"].append(gaps[f"fe_{method}"][li] - best)
            desc["gaps"][(s, f)] = {n: {li: float(g[li][0]) for li in layers} for n, g in gaps.items()}
        for q in eff:
            eff[q][s] = S.mean_over(per[q])
    return eff, desc
