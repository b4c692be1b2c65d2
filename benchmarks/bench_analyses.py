"""The analyses' hot paths against what a user would otherwise run, side by side in one run.

- bipartite matching: ours (``scipy.optimize.linear_sum_assignment`` on the (d, d) correlation block)
  vs. ``networkx.max_weight_matching`` on the same matrix as a complete bipartite graph (what the
  paper's code used); same total weight is checked. networkx is not a project dependency:
  ``pip install networkx`` to run that column (sizes over the time budget are skipped and said so).
- sparse prediction: ours from moments (all targets at once) vs. scikit-learn ``Lasso`` fitted on the
  stored, z-scored activations, target by target, for the same penalties; max coefficient difference.
- spectral clustering of 2 x 512 units.

Usage: python benchmarks/bench_analyses.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def planted_corr(d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(4 * d, d))
    b = a[:, rng.permutation(d)] + rng.normal(size=(4 * d, d))
    return np.corrcoef(np.concatenate([a, b], 1).T)[:d, d:]


def bench_matching(sizes, budget: float) -> None:
    from convergent.analysis import bipartite_matching

    try:
        import networkx as nx
    except ImportError:
        nx = None
    print("\nbipartite matching (d x d correlation)")
    print(f"{'d':>6} {'ours s':>9} {'networkx s':>11} {'ratio':>8} {'same weight':>12}")
    skip = False
    for d in sizes:
        corr = planted_corr(d)
        t_ours, res = _timed(lambda corr=corr: bipartite_matching(corr))
        if nx is None or skip:
            why = "networkx not installed" if nx is None else f"skipped (> {budget:.0f} s budget)"
            print(f"{d:>6} {t_ours:>9.4f} {why:>11}")
            continue

        def run_nx(corr=corr, d=d):
            g = nx.Graph()
            for i in range(d):
                for j in range(d):
                    g.add_edge(("a", i), ("b", j), weight=float(corr[i, j]) + 2.0)  # positive
            return nx.max_weight_matching(g, maxcardinality=True)

        t_nx, match = _timed(run_nx)
        weight = sum(
            corr[i if s == "a" else j, j if s == "a" else i]
            for (s, i), (_, j) in ((sorted(e)[0], sorted(e)[1]) for e in match)
        )
        same = abs(weight - res.score.sum()) < 1e-6 * d
        print(
            f"{d:>6} {t_ours:>9.4f} {t_nx:>11.2f} {t_nx / t_ours:>8.0f} {str(same):>12}", flush=True
        )
        if t_nx > budget:
            skip = True


def bench_sparse(d: int, n: int) -> None:
    from sklearn.linear_model import Lasso

    from convergent.analysis import sparse_prediction
    from convergent.stats import Moments

    rng = np.random.default_rng(1)
    a = np.maximum(rng.normal(size=(n, d)) @ (np.eye(d) + 0.2 * rng.normal(size=(d, d))), 0)
    w = np.zeros((d, d))
    for j in range(d):
        idx = rng.choice(d, 1 + j % 4, replace=False)
        w[idx, j] = rng.normal(size=len(idx))
    b = a @ w + rng.normal(size=(n, d))
    raw = np.concatenate([a, b], 1).astype(np.float32)
    penalties = [0.3, 0.1, 0.03]
    t_mom, m = _timed(lambda: Moments(2 * d).update(raw))
    t_ours, res = _timed(
        lambda: sparse_prediction(m, np.arange(d), np.arange(d, 2 * d), penalties, tol=1e-10)
    )
    z = (raw - raw.mean(0)) / raw.std(0)

    def sk():
        coefs = np.zeros((len(penalties), d, d))
        for i, alpha in enumerate(sorted(penalties, reverse=True)):
            for t in range(d):
                coefs[i, :, t] = (
                    Lasso(alpha=alpha, tol=1e-8, max_iter=100000).fit(z[:, :d], z[:, d + t]).coef_
                )
        return coefs

    t_sk, coefs = _timed(sk)
    diff = np.abs(coefs - res.coef).max()
    print(f"\nsparse prediction, {d} -> {d} units, {n} samples, penalties {penalties}")
    print(f"{'method':<28} {'seconds':>9} {'x ours':>8}")
    print(f"{'ours (moments pass)':<28} {t_mom:>9.2f}")
    print(f"{'ours (path from moments)':<28} {t_ours:>9.2f} {1.0:>8.2f}")
    print(f"{'sklearn Lasso on raw':<28} {t_sk:>9.2f} {t_sk / t_ours:>8.1f}")
    print(f"max |coef difference| = {diff:.2e}")


def bench_spectral(d: int) -> None:
    from convergent.analysis import spectral_clustering

    corr = np.corrcoef(np.random.default_rng(2).normal(size=(4 * d, 2 * d)).T)
    t, labels = _timed(lambda: spectral_clustering(corr, 16, seed=0))
    print(f"\nspectral clustering of 2 x {d} units into 16 clusters: {t:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=120.0, help="networkx seconds per size")
    parser.add_argument("--skip-matching", action="store_true")
    args = parser.parse_args()
    if not args.skip_matching:
        bench_matching([96, 256] if args.quick else [96, 256, 512, 1024], args.budget)
    bench_sparse(64 if args.quick else 128, 20_000 if args.quick else 50_000)
    bench_spectral(128 if args.quick else 512)


if __name__ == "__main__":
    main()
