"""Many-to-many: spectral clustering of the units of two nets together (Li et al. 2016, section 5).

If nets learn the same subspaces in different bases, the units of A and B that span one subspace are
strongly correlated with each other as a group, while no single pair need be. Clustering the joint
correlation graph of both nets' units finds such groups; a cluster holding units of both nets in
similar numbers is a shared subspace.

Affinity (``affinity=``): ``"absolute"`` (default) uses |corr| (a unit and its negation span the same
direction); ``"shift"`` uses (1 + corr) / 2 (anti-correlated units are dissimilar). Dead units have no
correlations and are left out (label -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergent._errors import ConvergentError

AFFINITIES = ("absolute", "shift")


def _affinity(corr: np.ndarray, affinity: str) -> np.ndarray:
    if affinity not in AFFINITIES:
        raise ValueError(
            f"The 'affinity' parameter must be one of {AFFINITIES}. Got {affinity!r} instead."
        )
    aff = np.abs(corr) if affinity == "absolute" else (1.0 + corr) / 2.0
    aff = (aff + aff.T) / 2.0
    np.fill_diagonal(aff, 1.0)
    return aff


def spectral_clustering(
    corr: Any,
    n_clusters: int,
    seed: int = 0,
    *,
    affinity: str = "absolute",
    dead: Sequence[int] = (),
) -> np.ndarray:
    """Spectral clustering of units from their correlation matrix.

    Parameters
    ----------
    corr : array-like, shape (D, D)
        Joint correlation of the units (e.g. of nets A and B together).
    n_clusters : int
    seed : int
        Seed of the eigen-solver start and the k-means label assignment (deterministic).
    affinity : {'absolute', 'shift'}
    dead : sequence of int
        Units to leave out (label -1).

    Returns
    -------
    labels : ndarray of int, shape (D,)
    """
    from sklearn.cluster import SpectralClustering

    mat = np.asarray(corr, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(
            f"The 'corr' parameter must be a square matrix. Got shape {mat.shape} instead."
        )
    if not np.isfinite(mat).all():
        raise ValueError("The 'corr' parameter holds NaN or infinite values.")
    live = np.ones(len(mat), dtype=bool)
    live[np.asarray(dead, dtype=np.int64)] = False
    n_live = int(live.sum())
    if int(n_clusters) != n_clusters or n_clusters < 2:
        raise ValueError(
            f"The 'n_clusters' parameter must be an integer >= 2. Got {n_clusters!r} instead."
        )
    if n_clusters > n_live:
        raise ConvergentError(
            f"Cannot make {n_clusters} clusters of {n_live} live units; choose at most {n_live}."
        )
    aff = _affinity(mat[np.ix_(live, live)], affinity)
    model = SpectralClustering(
        n_clusters=int(n_clusters),
        affinity="precomputed",
        random_state=seed,
        assign_labels="kmeans",
        n_init=10,
    )
    labels = np.full(len(mat), -1, dtype=np.int64)
    labels[live] = model.fit_predict(aff)
    # canonical label order: by first appearance, so equal partitions give equal labels
    mapping: dict[int, int] = {}
    for lab in labels[live]:
        mapping.setdefault(int(lab), len(mapping))
    labels[live] = [mapping[int(v)] for v in labels[live]]
    return labels


@dataclass
class ClusterResult:
    """Clusters of the joint units of nets A and B for one number of clusters."""

    n_clusters: int
    labels: np.ndarray  # (d_A + d_B,) A's units first
    d_a: int
    members_a: list[list[int]]
    members_b: list[list[int]]
    balance: float
    inside_corr: float
    outside_corr: float
    prediction_r2: float
    order: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters,
            "sizes_a": [len(m) for m in self.members_a],
            "sizes_b": [len(m) for m in self.members_b],
            "balance": self.balance,
            "inside_abs_corr": self.inside_corr,
            "outside_abs_corr": self.outside_corr,
            "cluster_prediction_r2": self.prediction_r2,
        }


def cluster_pair(
    corr: Any,
    range_a: tuple[int, int],
    range_b: tuple[int, int],
    n_clusters: Sequence[int] | int = (2, 4, 8, 16),
    seed: int = 0,
    *,
    affinity: str = "absolute",
    dead: Sequence[int] = (),
) -> list[ClusterResult]:
    """Cluster the units of nets A and B together for each number of clusters.

    For each clustering: the members from each net; the *balance* (sum over clusters of
    2 min(n_A, n_B) divided by the number of clustered units: 1 when every cluster holds as many A
    as B units, 0 when no cluster mixes the nets); the mean |between-net correlation| of A-B pairs
    inside a cluster vs. across clusters; how well each cluster's A units linearly predict its B units
    (mean R^2 of least squares from the correlation blocks); and a unit order (cluster by cluster, A
    before B) that shows the block structure.
    """
    if hasattr(corr, "corr") and callable(corr.corr):
        dead = list(dead) or list(corr.dead_units())
        corr = corr.corr()
    full = np.asarray(corr, dtype=np.float64)
    ia = np.arange(*range_a)
    ib = np.arange(*range_b)
    idx = np.concatenate([ia, ib])
    joint = full[np.ix_(idx, idx)]
    dead = np.asarray(dead, dtype=np.int64)
    local_dead = np.flatnonzero(np.isin(idx, dead))
    d_a = len(ia)
    counts = [n_clusters] if isinstance(n_clusters, int) else list(n_clusters)
    between = np.abs(joint[:d_a, d_a:])
    out = []
    for k in counts:
        labels = spectral_clustering(joint, k, seed, affinity=affinity, dead=local_dead)
        la, lb = labels[:d_a], labels[d_a:]
        members_a = [np.flatnonzero(la == c).tolist() for c in range(k)]
        members_b = [np.flatnonzero(lb == c).tolist() for c in range(k)]
        clustered = int((labels >= 0).sum())
        balance = sum(2 * min(len(a), len(b)) for a, b in zip(members_a, members_b)) / max(
            clustered, 1
        )
        same = (la[:, None] == lb[None, :]) & (la[:, None] >= 0)
        diff = (la[:, None] != lb[None, :]) & (la[:, None] >= 0) & (lb[None, :] >= 0)
        inside = float(between[same].mean()) if same.any() else 0.0
        outside = float(between[diff].mean()) if diff.any() else 0.0
        r2s = []
        for a_units, b_units in zip(members_a, members_b):
            if not a_units or not b_units:
                continue
            g = joint[np.ix_(a_units, a_units)]
            c = joint[np.ix_(a_units, [d_a + j for j in b_units])]
            w = np.linalg.lstsq(g, c, rcond=None)[0]
            r2s.extend(np.clip(np.einsum("pt,pt->t", c, w), 0.0, 1.0).tolist())
        order = np.concatenate(
            [
                np.concatenate(
                    [
                        np.asarray(members_a[c], dtype=np.int64),
                        d_a + np.asarray(members_b[c], dtype=np.int64),
                    ]
                )
                for c in range(k)
            ]
            + [np.flatnonzero(labels < 0)]
        ).astype(np.int64)
        out.append(
            ClusterResult(
                k,
                labels,
                d_a,
                members_a,
                members_b,
                float(balance),
                inside,
                outside,
                float(np.mean(r2s)) if r2s else 0.0,
                order,
            )
        )
    return out
