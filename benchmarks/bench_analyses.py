"""The analyses' hot paths against what a user would otherwise run: one table, measured in one run.

- bipartite matching of a (d, d) correlation block: ours (``convergent.bipartite_matching``, which
  wraps ``scipy.optimize.linear_sum_assignment``) vs. ``networkx.max_weight_matching`` on the same matrix as a complete
  bipartite graph (what the paper's code used), checking equal total weight. networkx is not a
  project dependency (``pip install networkx``); sizes whose predicted networkx time (cubic scaling
  from the last size run) exceeds ``--budget`` seconds are skipped and said so.
- sparse prediction, d_A = d_B = 256 units, 100k samples: ours from the moments (every target and
  penalty at once) vs. scikit-learn ``Lasso`` fitted on the z-scored activations target by target,
  warm-started along the same penalties. sklearn runs on ``--sklearn-targets`` targets and its time
  is scaled to all targets (said in the table); the coefficient check covers those targets.
- spectral clustering of 2 x 512 units into 16 clusters: ours vs. scikit-learn
  ``SpectralClustering(affinity="precomputed")`` on the same ``|corr|`` affinity (adjusted Rand
  index against the planted blocks).

Usage: python benchmarks/bench_analyses.py [--quick] [--budget SECONDS] [--sklearn-targets N]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

ROWS: list[tuple[str, ...]] = []
NOTES: list[str] = []


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _sec(t: float) -> str:
    return f"{t:.2g}" if t < 0.1 else f"{t:.2f}"


def _row(*cells: str) -> None:
    ROWS.append(tuple(cells))


def _matching_corr(d: int, seed: int = 0) -> np.ndarray:
    """Between-net correlations of two noisy, permuted copies of correlated units."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(4 * d, d))
    b = a[:, rng.permutation(d)] + rng.normal(size=(4 * d, d))
    return np.corrcoef(np.concatenate([a, b], 1).T)[:d, d:]


def _ours_matching() -> tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    from convergent import bipartite_matching

    def run(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = bipartite_matching(corr)
        rows = np.flatnonzero(res.partner >= 0)
        return rows, res.partner[rows]

    return "convergent", run


def bench_matching(sizes: list[int], budget: float) -> None:
    name, ours = _ours_matching()
    try:
        import networkx as nx
    except ImportError:
        nx = None
    last: tuple[int, float] | None = None
    for d in sizes:
        corr = _matching_corr(d)
        ours(corr)  # warm-up
        t_ours, (rows, cols) = _timed(lambda corr=corr: ours(corr))
        weight = float(corr[rows, cols].sum())
        label = f"bipartite matching ({name})"
        if nx is None:
            _row(label, f"{d} x {d}", _sec(t_ours), "networkx", "not installed", "", "")
            continue
        predicted = None if last is None else last[1] * (d / last[0]) ** 3
        if predicted is not None and predicted > budget:
            _row(label, f"{d} x {d}", _sec(t_ours), "networkx", "skipped", "", "")
            NOTES.append(
                f"networkx at {d} x {d} skipped: predicted ~{predicted:.0f} s "
                f"(cubic from {last[0]}) > budget {budget:.0f} s"
            )
            continue

        def run_nx(corr: np.ndarray = corr, d: int = d) -> set:
            graph = nx.Graph()
            # + 2 keeps weights positive; every perfect matching gains the same 2 d
            graph.add_weighted_edges_from(
                (("a", i), ("b", j), float(corr[i, j]) + 2.0) for i in range(d) for j in range(d)
            )
            return nx.max_weight_matching(graph, maxcardinality=True)

        t_nx, matching = _timed(run_nx)
        nx_weight = 0.0
        for u, v in matching:
            (_, i), (_, j) = sorted((u, v))  # ("a", i) sorts before ("b", j)
            nx_weight += corr[i, j]
        same = abs(nx_weight - weight) <= 1e-9 * d
        _row(
            label,
            f"{d} x {d}",
            _sec(t_ours),
            "networkx",
            f"{t_nx:.2f}",
            f"{t_nx / t_ours:.0f}x",
            f"same total weight: {same}",
        )
        last = (d, t_nx)


def _sparse_data(d: int, n: int) -> np.ndarray:
    """ReLU sources; each target a sparse mix of 1-4 sources plus noise. (n, 2 d) float32."""
    rng = np.random.default_rng(1)
    a = np.maximum(rng.normal(size=(n, d)) @ (np.eye(d) + 0.1 * rng.normal(size=(d, d))), 0)
    w = np.zeros((d, d))
    for t in range(d):
        idx = rng.choice(d, 1 + t % 4, replace=False)
        w[idx, t] = rng.normal(size=len(idx))
    b = a @ w + rng.normal(size=(n, d))
    return np.concatenate([a, b], 1).astype(np.float32)


def bench_sparse(d: int, n: int, n_sklearn: int) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    from convergent.analysis._sparse import sparse_prediction
    from convergent.stats import Moments

    raw = _sparse_data(d, n)
    penalties = [0.1, 0.03, 0.01]
    try:  # float64 products, so the comparison measures the solver, not float32 rounding
        empty = Moments(2 * d, exact=True)
    except TypeError:
        empty = Moments(2 * d)
    t_mom, moments = _timed(lambda: empty.update(raw))
    t_ours, res = _timed(
        lambda: sparse_prediction(moments, np.arange(d), np.arange(d, 2 * d), penalties)
    )
    z = raw.astype(np.float64)
    z -= z.mean(0)
    z /= z.std(0)
    size = f"{d}->{d}, n={n // 1000}k, {len(penalties)} pen."
    _row(
        "sparse prediction (moments pass)",
        size,
        f"{t_mom:.2f}",
        "",
        "",
        "",
        "shared by all analyses",
    )
    targets = np.linspace(0, d - 1, min(n_sklearn, d)).astype(int)
    for tol in (1e-4, 1e-10):
        coefs = np.zeros((len(penalties), d, len(targets)))

        def sk(tol: float = tol, coefs: np.ndarray = coefs) -> None:
            for k, t in enumerate(targets):
                model = Lasso(alpha=penalties[0], tol=tol, max_iter=100_000, warm_start=True)
                for i, alpha in enumerate(penalties):
                    model.set_params(alpha=alpha)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        coefs[i, :, k] = model.fit(z[:, :d], z[:, d + t]).coef_

        t_sub, _ = _timed(sk)
        t_sk = t_sub * d / len(targets)
        diff = np.abs(coefs - res.coef[:, :, targets]).max()
        scaled = "" if len(targets) == d else f" ({len(targets)} targets x{d / len(targets):.0f})"
        _row(
            "sparse prediction (path)",
            size,
            f"{t_ours:.2f}",
            f"sklearn Lasso tol={tol:g}{scaled}",
            f"{t_sk:.1f}",
            f"{t_sk / t_ours:.0f}x",
            f"max |coef diff| {diff:.1e}",
        )
    NOTES.append(
        f"sparse: ours mean non-zero predictors per penalty {np.round(res.mean_nonzero(), 2).tolist()}"
        f", sweeps {res.n_sweeps.tolist()}, largest duality gap {res.duality_gap.max():.1e}"
    )


def bench_spectral(d: int, blocks: int) -> None:
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from convergent.analysis._spectral import affinity_matrix, spectral_clustering

    rng = np.random.default_rng(2)
    size = d // blocks
    latent = rng.normal(size=(4 * d, blocks, size))
    parts = []
    for _ in range(2):  # two nets: a random orthogonal basis of every block, plus noise
        for k in range(blocks):
            q, _ = np.linalg.qr(rng.normal(size=(size, size)))
            parts.append(latent[:, k] @ q + 0.3 * rng.normal(size=(4 * d, size)))
    corr = np.corrcoef(np.concatenate(parts, 1).T)
    planted = np.tile(np.repeat(np.arange(blocks), size), 2)
    spectral_clustering(corr[:8, :8], 2)  # warm-up: imports
    t_ours, labels = _timed(lambda: spectral_clustering(corr, blocks, seed=0))
    aff = affinity_matrix(corr)
    ref = SpectralClustering(blocks, affinity="precomputed", random_state=0)
    t_sk, sk_labels = _timed(lambda: ref.fit_predict(aff))
    _row(
        "spectral clustering",
        f"2 x {d}, {blocks} clusters",
        f"{t_ours:.2f}",
        "sklearn SpectralClustering",
        f"{t_sk:.2f}",
        f"{t_sk / t_ours:.1f}x",
        f"ARI ours {adjusted_rand_score(planted, labels):.3f}, "
        f"sklearn {adjusted_rand_score(planted, sk_labels):.3f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--budget", type=float, default=60.0, help="networkx seconds per size")
    parser.add_argument("--sklearn-targets", type=int, default=32, help="targets sklearn fits")
    args = parser.parse_args()
    if args.quick:
        bench_matching([32, 64], args.budget)
        bench_sparse(32, 5_000, 8)
        bench_spectral(64, 4)
    else:
        bench_matching([96, 256, 512, 1024], args.budget)
        bench_sparse(256, 100_000, args.sklearn_targets)
        bench_spectral(512, 16)
    header = ("analysis", "size", "ours s", "reference", "ref s", "ref/ours", "check")
    widths = [max(len(r[i]) for r in [header, *ROWS]) for i in range(len(header))]
    for r in [header, *ROWS]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for note in NOTES:
        print(f"- {note}")


if __name__ == "__main__":
    main()
