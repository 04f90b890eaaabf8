"""Calibration of the network-level comparison (onnx_fe.scores.compare) by simulation; prints the table of
docs/method.md, "Comparing networks".

Two simulated "networks" of 2 layers (8 and 16 units) are scored on the same images: 5 classes × 20 images. Each
unit has a birth rate drawn from U(0.3, 0.9) and, given a birth, a birth point from a discretised Gaussian on 1..75
(centre U(20, 55), sd U(2, 8) steps), the same in every class. One network ("reference") is drawn once per
scenario; per trial, fresh images give fresh birth points. Scenarios:

* ``same units``: the other network's unit j has the reference unit j's distribution; images independent.
  E[D] = 0 and the two rows of an image are exchangeable.
* ``same units, 50 % shared rows``: as above, but for a random half of the images the other network's row equals
  the reference's (like a lightly fine-tuned copy). E[D] = 0, exchangeable.
* ``equal T, units not corresponding``: the other network's unit j has the distribution of a different reference
  unit of the same layer, with its values mirrored (v → 76 − v): every per-unit entropy is one of the reference's,
  so E[D] = 0 exactly, but unit j is not unit j (like a random-init twin or an independent training).
* ``broader units``: the other network's unit j is the reference unit j with 1.5× the spread: E[D] > 0. The target
  of the interval, E_N[D] (the mean difference at this number of images), comes from 4000 trials without resampling.

Per trial: bootstrap CI (B resamples) and permutation p-value (P permutations). Run:

    python docs/studies/compare_calibration.py              # 400 trials per scenario, B = 500, P = 199 (~3 min on 2 cores)
    python docs/studies/compare_calibration.py --trials 100 # quicker
    python docs/studies/compare_calibration.py --level-check # the permutation test's level alone: "same units",
                                                             # 2 × 3000 trials, P = 19, no bootstrap (~4 min)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onnx_fe.scores.compare import compare_networks

V = 75
UNITS = (8, 16)
K, PER = 5, 20


def _units(rng, n):
    return rng.uniform(0.3, 0.9, n), rng.uniform(20, 55, n), rng.uniform(2, 8, n)


def _pmf(centre, sd):
    v = np.arange(1, V + 1)
    p = np.exp(-0.5 * ((v - centre) / sd) ** 2)
    return p / p.sum()


def _draw(rng, spec, n_images):
    """(N, C) birth points of one layer: spec = list of (rate, pmf) per unit."""
    out = np.zeros((n_images, len(spec)), dtype=np.int64)
    for j, (rate, pmf) in enumerate(spec):
        born = rng.random(n_images) < rate
        out[born, j] = rng.choice(np.arange(1, V + 1), size=born.sum(), p=pmf)
    return out


def scenario(name, rng):
    """(reference spec, other spec, share of copied rows) per layer."""
    ref, oth = [], []
    for c in UNITS:
        rate, centre, sd = _units(rng, c)
        r = [(rate[j], _pmf(centre[j], sd[j])) for j in range(c)]
        if name == "broader units":
            o = [(rate[j], _pmf(centre[j], 1.5 * sd[j])) for j in range(c)]
        elif name == "equal T, units not corresponding":
            perm = np.roll(np.arange(c), 1)
            o = [(rate[perm[j]], r[perm[j]][1][::-1]) for j in range(c)]
        else:
            o = list(r)
        ref.append(r)
        oth.append(o)
    return ref, oth, 0.5 if name.endswith("shared rows") else 0.0


def trial(rng, ref, oth, share):
    n = K * PER
    a = [_draw(rng, s, n) for s in ref]
    b = [_draw(rng, s, n) for s in oth]
    if share:
        copy = rng.random(n) < share
        for x, y in zip(a, b):
            y[copy] = x[copy]
    return a, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--permutations", type=int, default=199)
    ap.add_argument("--truth-trials", type=int, default=4000)
    ap.add_argument("--level-check", action="store_true")
    args = ap.parse_args()
    labels = np.repeat(np.arange(K), PER)
    if args.level_check:
        level_check(labels)
        return
    names = (
        "same units",
        "same units, 50 % shared rows",
        "equal T, units not corresponding",
        "broader units",
    )
    print(
        f"{args.trials} trials per scenario, {K} classes × {PER} images, layers of {UNITS} units, "
        f"B = {args.resamples}, P = {args.permutations}, k = 10\n"
    )
    print(
        "| scenario | statistic | E_N[D] | CI covers E_N[D] | mean CI length | sd of D | "
        "p ≤ 0.05 (permutation) | p ≤ 0.05 (CI excludes 0) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    t0 = time.time()
    for si, name in enumerate(names):
        rng = np.random.default_rng([2024, si])
        ref, oth, share = scenario(name, rng)
        truth = np.zeros(2)
        if name == "broader units":
            ds = []
            for _ in range(args.truth_trials):
                a, b = trial(rng, ref, oth, share)
                ds.append(compare_networks(a, b, labels, n_resamples=0, n_permutations=0).difference)
            truth = np.nanmean(np.array(ds), axis=0)
        cover, length, rej_p, rej_ci, d = [], [], [], [], []
        for t in range(args.trials):
            a, b = trial(rng, ref, oth, share)
            r = compare_networks(a, b, labels, n_resamples=args.resamples, n_permutations=args.permutations, seed=t)
            lo, hi = r.difference_ci[:, 0], r.difference_ci[:, 1]
            cover.append((lo <= truth) & (truth <= hi))
            length.append(hi - lo)
            rej_p.append(r.p_value <= 0.05)
            rej_ci.append((lo > 0) | (hi < 0))
            d.append(r.difference)
        for s, stat in enumerate(("fe", "fe_rarefied")):
            print(
                f"| {name} | {stat} | {truth[s]:+.3f} | {np.mean([c[s] for c in cover]):.3f} | "
                f"{np.nanmean([x[s] for x in length]):.3f} | {np.nanstd([x[s] for x in d]):.3f} | "
                f"{np.mean([x[s] for x in rej_p]):.3f} | {np.mean([x[s] for x in rej_ci]):.3f} |"
            )
    print(f"\n({time.time() - t0:.0f} s)")


def level_check(labels, trials=3000, permutations=19):
    """Share of p ≤ 0.05 and ≤ 0.1 under exchangeable rows; exact test: 0.05 and 0.10 up to binomial noise."""
    print(f"same units, {trials} trials per family, P = {permutations}, no bootstrap")
    print("| family | statistic | p ≤ 0.05 | p ≤ 0.10 | p ≤ 0.50 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for fam in (5, 6):
        rng = np.random.default_rng([fam, 0])
        ref, oth, share = scenario("same units", rng)
        ps = []
        for t in range(trials):
            a, b = trial(rng, ref, oth, share)
            r = compare_networks(a, b, labels, n_resamples=0, n_permutations=permutations, seed=t + 10000 * fam)
            ps.append(r.p_value)
        ps = np.array(ps)
        for s, stat in enumerate(("fe", "fe_rarefied")):
            q = [(ps[:, s] <= x).mean() for x in (0.05, 0.1, 0.5)]
            print(f"| {fam} | {stat} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} |")


if __name__ == "__main__":
    main()
