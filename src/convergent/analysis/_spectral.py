"""Many-to-many: spectral clustering of the units of two nets together (Li et al. 2016, section 5).

If two nets learn the same subspaces in different bases, the units of A and B spanning one subspace
correlate with each other as a group although no single pair need correlate strongly. Clustering the
graph of the joint correlation matrix (within-net and between-net blocks together) finds such groups;
a cluster holding units of both nets in similar numbers is a candidate shared subspace.

Affinity (``affinity=``), from a correlation ``c``; the diagonal is set to 0:

- ``"absolute"`` (default): ``|c|``. A unit and its negation span the same direction, so the sign of
  a correlation says nothing about belonging to one subspace.
- ``"positive"``: ``max(c, 0)``; anti-correlated units are unrelated.
- ``"signed-shift"``: ``(1 + c) / 2``; anti-correlated units are dissimilar, uncorrelated ones half
  similar (a dense graph: weak structure is washed out).
- ``"squared"``: ``c^2``, the shared variance; sharpens strong links relative to ``"absolute"``.

Algorithm (Ng, Jordan and Weiss 2001): ``L = D^-1/2 A D^-1/2``; the eigenvectors of its
``n_clusters`` largest eigenvalues (dense ``scipy.linalg.eigh``, deterministic), rows normalised to
unit length, then labels by k-means (scikit-learn ``KMeans(n_init, random_state=seed)``) or by the
deterministic column-pivoted QR rounding of Damle, Minden and Ying (2019) (``"cluster_qr"``).
Labels are renumbered by first appearance, so equal partitions give equal label arrays.

Units with no affinity to any other unit (dead units, whose correlations are all 0, or units isolated
by the affinity) are left out and get label -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

#: Affinity names and how each maps a correlation to a non-negative similarity.
AFFINITIES = {
    "absolute": np.abs,
    "positive": lambda c: np.maximum(c, 0.0),
    "signed-shift": lambda c: (1.0 + c) / 2.0,
    "squared": np.square,
}
ASSIGN_LABELS = ("kmeans", "cluster_qr")


def _check_corr(corr: Any, caller: str) -> np.ndarray:
    c = np.asarray(corr, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(
            f"The 'corr' parameter of {caller} must be a non-empty square (D, D) correlation matrix. "
            f"Got an array of shape {c.shape} instead."
        )
    if not np.all(np.isfinite(c)):
        raise ValueError(
            f"The 'corr' parameter of {caller} must be finite. Got {np.count_nonzero(~np.isfinite(c))} "
            "NaN or infinite entries; Moments.corr() never returns NaN (dead units get 0)."
        )
    if not np.allclose(c, c.T, rtol=0.0, atol=1e-8):
        raise ValueError(
            f"The 'corr' parameter of {caller} must be symmetric. Got a largest asymmetry of "
            f"{np.abs(c - c.T).max():.3g}; pass the joint correlation of all units (both nets)."
        )
    return c


def _check_n_clusters(value: Any, caller: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"The 'n_clusters' parameter of {caller} must be an integer >= 1. Got {value!r} instead."
        )
    return int(value)


def affinity_matrix(corr: Any, affinity: str = "absolute") -> np.ndarray:
    """Non-negative similarity of units from their correlations, diagonal 0.

    Parameters
    ----------
    corr : array-like, shape (D, D)
        Symmetric correlation matrix.
    affinity : {"absolute", "positive", "signed-shift", "squared"}
        See the module notes. Units whose off-diagonal correlations are all 0 (dead units) get
        affinity 0 to every unit, whatever the mapping.

    Returns
    -------
    ndarray, shape (D, D)
    """
    return _affinity(_check_corr(corr, "affinity_matrix"), affinity, "affinity_matrix")


def _affinity(c: np.ndarray, affinity: str, caller: str) -> np.ndarray:
    if affinity not in AFFINITIES:
        raise ValueError(
            f"The 'affinity' parameter of {caller} must be one of {sorted(AFFINITIES)}. "
            f"Got {affinity!r} instead."
        )
    off = c.copy()
    np.fill_diagonal(off, 0.0)
    dead = ~np.any(off != 0, axis=1)
    aff = AFFINITIES[affinity](off)
    aff = (aff + aff.T) / 2.0
    aff[dead] = 0.0
    aff[:, dead] = 0.0
    np.fill_diagonal(aff, 0.0)
    return aff


def _embedding(aff: np.ndarray, n_components: int) -> np.ndarray:
    """(m, n_components) eigenvectors of ``D^-1/2 A D^-1/2`` for its largest eigenvalues, largest
    first; every node must have positive degree."""
    inv_sqrt = 1.0 / np.sqrt(aff.sum(axis=1))
    norm = aff * np.outer(inv_sqrt, inv_sqrt)
    m = len(norm)
    _, vectors = scipy.linalg.eigh(norm, subset_by_index=[m - n_components, m - 1])
    return vectors[:, ::-1]


def _cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Damle-Minden-Ying rounding: pivoted QR picks one representative row per cluster."""
    k = vectors.shape[1]
    _, _, piv = scipy.linalg.qr(vectors.T, pivoting=True, mode="economic")
    u, _, vt = np.linalg.svd(vectors[piv[:k]].T)
    return np.argmax(np.abs(vectors @ (u @ vt)), axis=1)


def _assign(
    vectors: np.ndarray, n_clusters: int, seed: int, method: str, n_init: int
) -> np.ndarray:
    if n_clusters == 1:
        return np.zeros(len(vectors), dtype=np.int64)
    emb = vectors[:, :n_clusters]
    if method == "cluster_qr":
        return _cluster_qr(emb)
    from sklearn.cluster import KMeans

    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    return KMeans(n_clusters, n_init=n_init, random_state=seed).fit_predict(emb)


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative labels 0, 1, ... in order of first appearance; -1 stays."""
    out = np.full(len(labels), -1, dtype=np.int64)
    live = labels >= 0
    _, first = np.unique(labels[live], return_index=True)
    order = np.argsort(first)  # old labels sorted by first appearance
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    _, inverse = np.unique(labels[live], return_inverse=True)
    out[live] = rank[inverse]
    return out


def _cluster_many(
    corr: np.ndarray,
    n_clusters_list: Sequence[int],
    seed: int,
    affinity: str,
    assign_labels: str,
    n_init: int,
    caller: str,
) -> list[np.ndarray]:
    """Labels for several numbers of clusters from one eigen-decomposition."""
    if assign_labels not in ASSIGN_LABELS:
        raise ValueError(
            f"The 'assign_labels' parameter of {caller} must be one of {ASSIGN_LABELS}. "
            f"Got {assign_labels!r} instead."
        )
    ks = [_check_n_clusters(k, caller) for k in n_clusters_list]
    aff = _affinity(_check_corr(corr, caller), affinity, caller)
    live = aff.sum(axis=1) > 0
    n_live = int(live.sum())
    if max(ks) > n_live:
        raise ValueError(
            f"The 'n_clusters' parameter of {caller} must be at most the number of units with "
            f"non-zero affinity, {n_live} of {len(aff)} (the others are dead or isolated). "
            f"Got {max(ks)} instead; ask for fewer clusters."
        )
    vectors = _embedding(aff[np.ix_(live, live)], max(ks)) if max(ks) > 1 else None
    out = []
    for k in ks:
        labels = np.full(len(aff), -1, dtype=np.int64)
        if k == 1:
            labels[live] = 0
        else:
            labels[live] = _assign(vectors, k, seed, assign_labels, n_init)
        out.append(_first_appearance(labels))
    return out


def spectral_clustering(
    corr: Any,
    n_clusters: int,
    seed: int = 0,
    *,
    affinity: str = "absolute",
    assign_labels: str = "kmeans",
    n_init: int = 10,
) -> np.ndarray:
    """Spectral clustering of units from their joint correlation matrix.

    Parameters
    ----------
    corr : array-like, shape (D, D)
        Correlation of all units together, e.g. of nets A and B (within- and between-net blocks),
        as from ``Moments.corr()``.
    n_clusters : int
        Number of clusters, at most the number of units with non-zero affinity.
    seed : int
        Seed of k-means; the result is deterministic for a given seed.
    affinity : {"absolute", "positive", "signed-shift", "squared"}
        How correlations become similarities (module notes); default ``|corr|``.
    assign_labels : {"kmeans", "cluster_qr"}
        Rounding of the spectral embedding to labels; ``"cluster_qr"`` ignores ``seed``.
    n_init : int
        k-means restarts.

    Returns
    -------
    labels : ndarray of int, shape (D,)
        Cluster of every unit, numbered by first appearance; -1 for units with no affinity to any
        other unit (dead units).
    """
    return _cluster_many(
        corr, [n_clusters], seed, affinity, assign_labels, n_init, "spectral_clustering"
    )[0]


@dataclass(frozen=True)
class PairClustering:
    """One clustering of the units of nets A and B together.

    ``k`` clusters, ``d_A`` and ``d_B`` units; unit indices are local to their net (0-based).

    Attributes
    ----------
    n_clusters : int
    labels_a, labels_b : ndarray of int, shapes (d_A,), (d_B,)
        Cluster per unit, -1 for left-out (dead) units.
    count_a, count_b : ndarray of int, shape (k,)
        Units of A and of B per cluster.
    balance : ndarray, shape (k,)
        ``min(count_a, count_b) / max(count_a, count_b)`` per cluster: 1 for equal shares, 0 for a
        cluster of one net only.
    balance_score : float
        ``sum_c 2 min(count_a, count_b) / sum_c (count_a + count_b)``: the fraction of clustered units
        that could be paired with a unit of the other net inside their cluster (1 if every cluster is
        balanced, 0 if every cluster holds one net only).
    within_corr, between_corr : float or None
        Mean ``|corr_AB|`` over between-net pairs in the same cluster / in different clusters
        (None when there is no such pair).
    r2_b : ndarray, shape (d_B,)
        R^2 of each B unit by least squares on the A units of its cluster (0 when that cluster has
        no A unit, or the unit is left out); clipped to [0, 1] against rounding.
    r2 : ndarray, shape (k,)
        Mean ``r2_b`` over each cluster's B units (0 for a cluster without B units).
    order_a, order_b : ndarray of int, shapes (d_A,), (d_B,)
        Unit orders by cluster (left-out units last): ``corr_AB[order_a][:, order_b]`` shows the
        block structure.
    order : ndarray of int, shape (d_A + d_B,)
        Joint order (A unit ``i`` is ``i``, B unit ``j`` is ``d_A + j``): cluster by cluster, A's
        units then B's, left-out units last.
    """

    n_clusters: int
    labels_a: np.ndarray
    labels_b: np.ndarray
    count_a: np.ndarray
    count_b: np.ndarray
    balance: np.ndarray
    balance_score: float
    within_corr: float | None
    between_corr: float | None
    r2_b: np.ndarray
    r2: np.ndarray
    order_a: np.ndarray
    order_b: np.ndarray
    order: np.ndarray

    def members(self, cluster: int) -> tuple[np.ndarray, np.ndarray]:
        """Units of A and of B (net-local indices) in ``cluster``."""
        return np.flatnonzero(self.labels_a == cluster), np.flatnonzero(self.labels_b == cluster)

    @property
    def mean_r2(self) -> float:
        """Mean ``r2_b`` over clustered B units (0.0 when none)."""
        clustered = self.labels_b >= 0
        return float(self.r2_b[clustered].mean()) if clustered.any() else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no NaN; None where undefined)."""
        clusters = []
        for c in range(self.n_clusters):
            a, b = self.members(c)
            clusters.append(
                {
                    "units_a": a.tolist(),
                    "units_b": b.tolist(),
                    "balance": float(self.balance[c]),
                    "r2": float(self.r2[c]),
                }
            )
        return {
            "n_clusters": self.n_clusters,
            "labels_a": self.labels_a.tolist(),
            "labels_b": self.labels_b.tolist(),
            "balance_score": self.balance_score,
            "within_corr": self.within_corr,
            "between_corr": self.between_corr,
            "mean_r2": self.mean_r2,
            "clusters": clusters,
            "order_a": self.order_a.tolist(),
            "order_b": self.order_b.tolist(),
        }


@dataclass(frozen=True)
class ClusterPairResult:
    """Spectral clusterings of two nets' units for several numbers of clusters.

    Attributes
    ----------
    range_a, range_b : tuple of int
        ``(start, stop)`` of each net's units among the input's variables.
    affinity : str
    seed : int
    clusterings : list of PairClustering
        One per requested number of clusters, in the order asked.
    """

    range_a: tuple[int, int]
    range_b: tuple[int, int]
    affinity: str
    seed: int
    clusterings: list[PairClustering]

    def __getitem__(self, n_clusters: int) -> PairClustering:
        for c in self.clusterings:
            if c.n_clusters == n_clusters:
                return c
        raise KeyError(
            f"No clustering into {n_clusters} clusters; computed "
            f"{[c.n_clusters for c in self.clusterings]}."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no NaN)."""
        return {
            "range_a": list(self.range_a),
            "range_b": list(self.range_b),
            "affinity": self.affinity,
            "seed": self.seed,
            "clusterings": [c.to_dict() for c in self.clusterings],
        }


def _as_range(value: Any, name: str, dim: int) -> tuple[int, int]:
    if isinstance(value, range) and value.step == 1:
        value = (value.start, value.stop)
    try:
        start, stop = (int(v) for v in value)
        ok = start == value[0] and stop == value[1]
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= start < stop <= dim:
        raise ValueError(
            f"The '{name}' parameter of cluster_pair must be a (start, stop) pair of unit indices "
            f"with 0 <= start < stop <= {dim}. Got {value!r} instead; e.g. "
            "moments.metadata['unit_ranges']['net0']."
        )
    return start, stop


def _pair_clustering(labels: np.ndarray, corr: np.ndarray, n_a: int, k: int) -> PairClustering:
    la, lb = labels[:n_a], labels[n_a:]
    count_a = np.bincount(la[la >= 0], minlength=k)
    count_b = np.bincount(lb[lb >= 0], minlength=k)
    low, high = np.minimum(count_a, count_b), np.maximum(count_a, count_b)
    balance = low / np.maximum(high, 1)
    total = int((count_a + count_b).sum())
    balance_score = float(2 * low.sum() / total) if total else 0.0

    between = np.abs(corr[:n_a, n_a:])
    both = (la[:, None] >= 0) & (lb[None, :] >= 0)
    same = both & (la[:, None] == lb[None, :])
    other = both & ~same
    within_corr = float(between[same].mean()) if same.any() else None
    between_corr = float(between[other].mean()) if other.any() else None

    r2_b = np.zeros(len(lb))
    r2 = np.zeros(k)
    for c in range(k):
        a = np.flatnonzero(la == c)
        b = np.flatnonzero(lb == c)
        if a.size and b.size:
            gram = corr[np.ix_(a, a)]
            cross = corr[np.ix_(a, n_a + b)]
            coef = np.linalg.lstsq(gram, cross, rcond=None)[0]
            fit = 2.0 * np.sum(coef * cross, axis=0) - np.sum(coef * (gram @ coef), axis=0)
            r2_b[b] = np.clip(fit, 0.0, 1.0)
        if b.size:
            r2[c] = r2_b[b].mean()

    def by_cluster(lab: np.ndarray) -> np.ndarray:
        return np.lexsort((np.arange(len(lab)), np.where(lab < 0, k, lab)))

    order_a, order_b = by_cluster(la), by_cluster(lb)
    joint_key = np.where(labels < 0, k, labels)
    net = np.repeat([0, 1], [n_a, len(lb)])
    order = np.lexsort((np.arange(len(labels)), net, joint_key))
    return PairClustering(
        n_clusters=k,
        labels_a=la,
        labels_b=lb,
        count_a=count_a,
        count_b=count_b,
        balance=balance,
        balance_score=balance_score,
        within_corr=within_corr,
        between_corr=between_corr,
        r2_b=r2_b,
        r2=r2,
        order_a=order_a,
        order_b=order_b,
        order=order,
    )


def cluster_pair(
    moments_or_corr: Any,
    range_a: Sequence[int],
    range_b: Sequence[int],
    n_clusters_list: int | Sequence[int],
    seed: int = 0,
    *,
    affinity: str = "absolute",
    assign_labels: str = "kmeans",
    n_init: int = 10,
) -> ClusterPairResult:
    """Cluster the units of nets A and B together and describe how the clusters mix the nets.

    Parameters
    ----------
    moments_or_corr : Moments or array-like, shape (D, D)
        Joint moments of the units (their ``subset(...).corr()`` is used) or a joint correlation
        matrix.
    range_a, range_b : (int, int)
        ``(start, stop)`` of each net's units among the variables (``metadata["unit_ranges"]``);
        must not overlap.
    n_clusters_list : int or sequence of int
        Numbers of clusters to try; one eigen-decomposition serves all.
    seed : int
        k-means seed (deterministic result).
    affinity, assign_labels, n_init
        As in :func:`spectral_clustering`.

    Returns
    -------
    ClusterPairResult
        Per number of clusters: labels, members per net, balance, within/between-cluster mean
        ``|corr_AB|``, cluster-wise A -> B linear R^2 and the block-revealing unit orders.
    """
    if hasattr(moments_or_corr, "corr") and hasattr(moments_or_corr, "subset"):
        dim = int(moments_or_corr.dim)
        source = moments_or_corr
    elif isinstance(moments_or_corr, (np.ndarray, list, tuple)):
        source = _check_corr(moments_or_corr, "cluster_pair")
        dim = len(source)
    else:
        raise TypeError(
            "The 'moments_or_corr' parameter of cluster_pair must be Moments (with corr() and "
            f"subset()) or a (D, D) correlation array. Got {type(moments_or_corr).__name__} instead."
        )
    a0, a1 = _as_range(range_a, "range_a", dim)
    b0, b1 = _as_range(range_b, "range_b", dim)
    if a0 < b1 and b0 < a1:
        raise ValueError(
            f"The 'range_a' and 'range_b' parameters of cluster_pair must not overlap. Got "
            f"{(a0, a1)} and {(b0, b1)} instead; pass the unit ranges of two different nets."
        )
    ks = [n_clusters_list] if isinstance(n_clusters_list, (int, np.integer)) else n_clusters_list
    ks = list(ks)
    if not ks:
        raise ValueError(
            "The 'n_clusters_list' parameter of cluster_pair must name at least one number of "
            "clusters. Got an empty sequence instead."
        )
    index = np.r_[a0:a1, b0:b1]
    if isinstance(source, np.ndarray):
        corr = source[np.ix_(index, index)]
    else:
        corr = _check_corr(source.subset(index).corr(), "cluster_pair")
    labels = _cluster_many(corr, ks, seed, affinity, assign_labels, n_init, "cluster_pair")
    n_a = a1 - a0
    return ClusterPairResult(
        range_a=(a0, a1),
        range_b=(b0, b1),
        affinity=affinity,
        seed=int(seed),
        clusterings=[_pair_clustering(lab, corr, n_a, int(k)) for k, lab in zip(ks, labels)],
    )
