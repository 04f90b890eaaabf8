"""Sample-size statistics on the zoo's digits VGG, and the noise null across map sizes (docs/statistics.md).

    python docs/studies/statistics_digits.py [--out /tmp/onnx-fe-stats]     # about 1 minute on 2 CPU cores

1. Scores models/digits_vgg/converged on models/data/digits/test (cubical, CPU; a finished score is reused).
2. Per layer, over its unit × class cells: Spearman(raw FE, n_births) and Spearman(fe_rarefied, n_births) for
   k = 5 and 10 (rarefied: the cells with n_births ≥ k; raw FE is also given on that same subset).
3. Simulated units with the layer's real n_births but one birth distribution for every cell (the layer's pooled
   births), so that n_births carries no information about the distribution: the Spearman values an estimator gives
   by itself. A real correlation well beyond the simulated one comes from the network, not from the estimator.
4. The noise null: FE, rarefied FE and birth rate of smoothed ReLU noise maps at 8², 16² and 32², with as many maps
   per noise unit as the digits classes have images.

Printed as Markdown.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import h5py
import numpy as np

import onnx_fe
from onnx_fe.scores import statistics as S

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "digits_vgg" / "converged" / "model.onnx"
DATA = ROOT / "models" / "data" / "digits" / "test"
KS = (5, 10)
SIM_REPEATS = 20
SPLITS = 10
SPLIT_KS = (3, 5, 10, 15)


def split_half(bp, labels, n_classes, k) -> tuple[float, float]:
    rs, fracs = [], []
    for rep in range(SPLITS):
        rng = np.random.default_rng(rep)
        half = np.zeros(len(labels), bool)
        for c in range(n_classes):
            idx = np.flatnonzero(labels == c)
            half[rng.permutation(idx)[: len(idx) // 2]] = True
        a, b = (
            S.cell_statistics(bp[m], labels[m], n_classes, k=k, n_resamples=0).fe_rarefied.ravel()
            for m in (half, ~half)
        )
        ok = np.isfinite(a) & np.isfinite(b)
        fracs.append(ok.mean())
        rs.append(np.corrcoef(a[ok], b[ok])[0, 1] if ok.sum() > 2 else np.nan)
    return (float(np.nanmean(rs)) if np.isfinite(rs).any() else float("nan")), float(np.mean(fracs))


def simulated_spearman(bp_nb: np.ndarray, pooled: np.ndarray, k: int, seed: int) -> tuple[str, str]:
    """Spearman(raw FE, n) and Spearman(fe_rarefied, n), median [min, max] over repeats, for cells with the real
    n_births and births drawn from one distribution (`pooled`, counts over values 1..)."""
    p = pooled / pooled.sum()
    rng = np.random.default_rng(seed)
    raw, rare = [], []
    nb = bp_nb[bp_nb > 0]
    for _ in range(SIM_REPEATS):
        fe = np.empty(len(nb))
        fr = np.empty(len(nb))
        for i, n in enumerate(nb):
            counts = rng.multinomial(n, p)
            counts = counts[counts > 0]
            q = counts / n
            fe[i] = float(-(q * np.log(q)).sum())
            fr[i] = S.fe_rarefied_from_counts(counts, k)
        raw.append(S.spearman(fe, nb))
        rare.append(S.spearman(fr, nb))

    def fmt(x):
        x = np.asarray(x)
        return f"{np.nanmedian(x):.2f} [{np.nanmin(x):.2f}, {np.nanmax(x):.2f}]"

    return fmt(raw), fmt(rare)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/onnx-fe-stats"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    t = time.perf_counter()
    res = onnx_fe.score(MODEL, DATA, a.out / "digits_vgg_converged", device="cpu")
    t_score = time.perf_counter() - t
    with h5py.File(res.results_h5) as f:
        labels = f["labels"][()]
        n_classes = len(f["classes"])
        layers = [
            (g.attrs["index"], g.attrs["name"], int(g.attrs["height"]), int(g.attrs["width"]), g["birth_points"][()])
            for _, g in sorted(f["layers"].items())
        ]
    per_class = np.bincount(labels)
    t = time.perf_counter()
    for _, _, _, _, bp in layers:
        S.cell_statistics(bp, labels, n_classes)
    t_stats = time.perf_counter() - t
    print(
        f"## digits_vgg/converged, {len(labels)} test images ({per_class.min()}–{per_class.max()} per class), "
        "cubical, 95 % CIs from 1000 resamples\n"
    )
    head = " | ".join(f"ρ(fe_rarefied k={k}, n) | cells n ≥ {k} | ρ(raw FE, n) on them" for k in KS)
    print(f"| layer | map | cells | ρ(raw FE, n_births) | {head} |")
    print("| --- | --- | ---: | ---: |" + " ---: | ---: | ---: |" * len(KS))
    sims, means = [], []
    for idx, name, h, w, bp in layers:
        st = {k: S.cell_statistics(bp, labels, n_classes, k=k) for k in KS}
        nb = st[KS[0]].n_births.ravel()
        fe = st[KS[0]].feature_entropy.ravel()
        row = [f"{idx} `{name}`", f"{h}×{w}", str(nb.size), f"{S.spearman(fe, nb):.2f}"]
        pooled = np.bincount(bp[bp > 0])[1:] if (bp > 0).any() else np.zeros(1)
        sim_row = [f"{idx}"]
        for k in KS:
            fr = st[k].fe_rarefied.ravel()
            m = np.isfinite(fr)
            row += [f"{S.spearman(fr, nb):.2f}", str(int(m.sum())), f"{S.spearman(fe[m], nb[m]):.2f}"]
            if pooled.sum() > 0:
                sr, sf = simulated_spearman(np.where(nb >= k, nb, 0), pooled, k, seed=idx)
                sim_row += [sr, sf]
            else:
                sim_row += ["—", "—"]
        print("| " + " | ".join(row) + " |")
        sims.append(sim_row)
        s10 = st[S.DEFAULT_K]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # units without a cell of n ≥ k: NaN, left out
            unit = [np.nanmean(a, axis=0) for a in (s10.feature_entropy, s10.fe_rarefied, s10.birth_rate)]
        means.append((idx, h, w, *(S.mean_ci(u) for u in unit), nb))

    print(
        "\n### Simulated cells: the layer's n_births (cells with n ≥ k), one pooled birth distribution for all "
        f"(median [min, max] of {SIM_REPEATS} repeats)\n"
    )
    print("| layer |" + "".join(f" ρ(raw FE, n) k={k} cells | ρ(fe_rarefied k={k}, n) |" for k in KS))
    print("| --- |" + " ---: | ---: |" * len(KS))
    for r in sims:
        print("| " + " | ".join(r) + " |")

    print(
        f"\n### Layer means: each unit's mean over classes, then the mean over units with a 95 % t CI over units "
        f"(fe_rarefied with k = {S.DEFAULT_K}: classes with n_births ≥ k; units without one are left out)\n"
    )
    print("| layer | map | mean FE | mean fe_rarefied (units) | mean birth rate | mean n_births per cell |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for idx, h, w, fe, fr, br, nb in means:
        print(
            f"| {idx} | {h}×{w} | {fe.estimate:.2f} [{fe.low:.2f}, {fe.high:.2f}] | "
            f"{fr.estimate:.2f} [{fr.low:.2f}, {fr.high:.2f}] ({fr.n}) | "
            f"{br.estimate:.2f} [{br.low:.2f}, {br.high:.2f}] | {nb.mean():.1f} |"
        )

    print(
        "\n### Split-half reproducibility: each class's images split in two at random, fe_rarefied on each half, "
        f"Pearson r between halves over the cells valid in both (mean of {SPLITS} splits)\n"
    )
    print("| layer | " + " | ".join(f"k={k}: r (cells valid in both halves)" for k in SPLIT_KS) + " |")
    print("| --- |" + " ---: |" * len(SPLIT_KS))
    for idx, _, _, _, bp in layers:
        cells = []
        for k in SPLIT_KS:
            r, frac = split_half(bp, labels, n_classes, k)
            cells.append(f"{r:.2f} ({frac:.0%})" if np.isfinite(r) else f"— ({frac:.0%})")
        print(f"| {idx} | " + " | ".join(cells) + " |")

    n_maps = int(round(per_class.mean()))
    print(
        f"\n### Noise null: 16 noise units × {n_maps} maps per size (Gaussian noise, smoothed σ = 1 px, ReLU; "
        "cubical defaults)\n"
    )
    print(
        "| map | birth rate | mean n_births | raw FE | "
        + " | ".join(f"fe_rarefied k={k} (units with n ≥ k)" for k in KS)
        + " |"
    )
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(KS))
    for size in (8, 16, 32):
        nulls = [S.noise_null(size, size, n_maps=n_maps, n_units=16, k=k) for k in KS]
        z = nulls[0]
        rare = " | ".join(
            f"{u.fe_rarefied:.2f} ({int(np.isfinite(u.fe_rarefied_units).sum())})"
            if np.isfinite(u.fe_rarefied)
            else "— (0)"
            for u in nulls
        )
        print(f"| {size}×{size} | {z.birth_rate:.2f} | {z.n_births:.1f} | {z.feature_entropy:.2f} | {rare} |")
    print(
        f"\nscore (CPU{', reused' if res.reused else ''}): {t_score:.1f} s; cell_statistics of all "
        f"{len(layers)} layers (k = {S.DEFAULT_K}, 1000 resamples): {t_stats:.2f} s; whole script "
        f"{time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
