"""Coverage of the confidence intervals of onnx_fe.scores.statistics, by simulation (tables of docs/statistics.md).

    python docs/studies/statistics_coverage.py            # about 1 minute on one CPU core
    python docs/studies/statistics_coverage.py --trials 500 --k 5

Each trial is one unit × class cell: N images, each with a birth point with probability ``rate``, whose value is
drawn from a known distribution P over 1..75. For every cell the module's 95 % intervals are computed (1000
resamples) and checked against the quantity each estimate targets:

* ``birth_rate`` → the true rate;
* ``fe_rarefied`` → θ_k(P), the expected plug-in entropy of k i.i.d. draws from P (exact), over the trials with
  at least k births;
* ``feature_entropy`` → the true entropy H(P) (which the plug-in estimate underestimates at small n).

Trials are the columns of one birth-point matrix, so a whole scenario is one vectorised call. Printed as Markdown.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onnx_fe.scores import statistics as S

# Pooled birth-point histograms (values start..) of the unit with the median number of births of layers 0, 1 and 2
# of models/digits_vgg/converged (cubical, 450 test images): realistic, broad distributions.
DIGITS_LIKE = {
    "digits layer 0 unit": (
        10,
        [2, 2, 0, 1, 1, 4, 5, 4, 5, 10, 10, 11, 9, 21, 13, 22, 8, 12, 11, 9, 6, 8, 6, 7, 6, 9, 1, 9, 4, 6, 4, 4, 5]
        + [2, 2, 3, 4, 3, 4, 5, 3, 4, 3, 4, 2, 8, 3, 2, 3, 0, 2, 0, 0, 9, 9, 1, 1, 3, 2, 7, 3, 2, 0, 1, 0, 2],
    ),
    "digits layer 1 unit": (
        15,
        [2, 0, 5, 2, 1, 2, 4, 1, 6, 6, 6, 9, 10, 3, 14, 11, 15, 7, 18, 16, 8, 17, 10, 14, 7, 9, 8, 10, 8, 4, 7, 6]
        + [10, 5, 3, 6, 0, 1, 2, 2, 1, 2, 3, 0, 1],
    ),
    "digits layer 2 unit": (33, [2, 0, 2, 4, 0, 5, 0, 4, 7, 0, 1, 2, 0, 5, 4, 0, 4, 8, 0, 6, 0, 5, 3, 0, 3, 2, 0, 2]),
}


def on_support(start: int, weights) -> np.ndarray:
    p = np.zeros(75)
    p[start - 1 : start - 1 + len(weights)] = weights
    return p / p.sum()


def scenarios() -> dict[str, tuple[np.ndarray, float, int]]:
    """name → (P over values 1..75, birth rate, images per class)."""
    v = np.arange(1, 76)
    out = {
        "2 values (0.8, 0.2)": (on_support(1, [0.8, 0.2]), 0.5, 60),
        "3 values (0.7, 0.2, 0.1)": (on_support(1, [0.7, 0.2, 0.1]), 0.3, 100),
        "geometric, 30 values": (on_support(1, 0.8 ** np.arange(30)), 0.5, 100),
        "Gaussian, sd 6 steps": (
            np.exp(-0.5 * ((v - 45) / 6.0) ** 2) / np.exp(-0.5 * ((v - 45) / 6.0) ** 2).sum(),
            0.4,
            45,
        ),
    }
    for (name, (start, w)), (rate, n) in zip(DIGITS_LIKE.items(), [(0.9, 45), (0.6, 45), (0.3, 45)], strict=True):
        out[name] = (on_support(start, w), rate, n)
    out["uniform over 75 values"] = (np.full(75, 1 / 75), 0.3, 45)
    return out


def simulate(p, rate, n_images, trials, k, seed, resamples=1000):
    rng = np.random.default_rng(seed)
    born = rng.random((n_images, trials)) < rate
    values = rng.choice(np.arange(1, len(p) + 1), size=(n_images, trials), p=p)
    bp = np.where(born, values, 0)
    r = S.cell_statistics(bp, np.zeros(n_images, int), 1, k=k, n_resamples=resamples, seed=seed)
    r = S.CellStatistics(*(a[0] if a.ndim == 2 else a for a in r))
    h, theta = S.entropy_of_distribution(p), S.expected_plugin_entropy(p, k)
    rare = np.isfinite(r.fe_rarefied)

    def cover(lo, hi, target, m=None):
        m = np.ones(len(lo), bool) if m is None else m
        return float(np.mean((lo[m] <= target) & (target <= hi[m])))

    fr = r.fe_rarefied[rare]
    return {
        "n_births": float(r.n_births.mean()),
        "rate": cover(r.birth_rate_ci_low, r.birth_rate_ci_high, rate),
        "rare_trials": int(rare.sum()),
        "rarefied": cover(r.fe_rarefied_ci_low, r.fe_rarefied_ci_high, theta, rare),
        "rare_bias": float(fr.mean() - theta),
        # mean CI length over the length a normal interval with the true sd would have
        "rare_width": float(np.mean(r.fe_rarefied_ci_high[rare] - r.fe_rarefied_ci_low[rare]) / (2 * 1.96 * fr.std())),
        "fe": cover(r.fe_ci_low, r.fe_ci_high, h),
        "fe_bias": float(r.feature_entropy.mean() - h),
        "H": h,
        "theta": theta,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--k", type=int, default=S.DEFAULT_K)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    t0 = time.perf_counter()
    print(f"### Coverage of 95 % intervals, k = {a.k}, {a.trials} trials per row, 1000 resamples, seed {a.seed}\n")
    print(
        "| births drawn from | N | rate | mean n_births | birth_rate CI covers rate | trials with n ≥ k | "
        f"fe_rarefied CI covers θ_{a.k} | fe_rarefied − θ_{a.k} | CI length / (2·1.96·sd) | "
        "FE CI covers H | FE − H | H | θ_k |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (p, rate, n) in scenarios().items():
        d = simulate(p, rate, n, a.trials, a.k, a.seed)
        print(
            f"| {name} | {n} | {rate} | {d['n_births']:.1f} | {d['rate']:.3f} | {d['rare_trials']} | "
            f"{d['rarefied']:.3f} | {d['rare_bias']:+.4f} | {d['rare_width']:.2f} | {d['fe']:.3f} | "
            f"{d['fe_bias']:+.3f} | {d['H']:.3f} | {d['theta']:.3f} |"
        )
    # raw FE at growing n: how far its CI falls short of the true entropy
    print("\n### Raw FE's CI against the true entropy as births grow (every image has a birth point)\n")
    print("| births drawn from | n | FE CI covers H | mean FE − H | fe_rarefied CI covers θ_k |")
    print("| --- | ---: | ---: | ---: | ---: |")
    sc = scenarios()
    for name in ("geometric, 30 values", "digits layer 1 unit"):
        p = sc[name][0]
        for n in (10, 20, 50, 100, 200, 500):
            d = simulate(p, 1.0, n, min(a.trials, 1000), a.k, a.seed)
            rare = f"{d['rarefied']:.3f}" if d["rare_trials"] else "—"
            print(f"| {name} | {n} | {d['fe']:.3f} | {d['fe_bias']:+.3f} | {rare} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
