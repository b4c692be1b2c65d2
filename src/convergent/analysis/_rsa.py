"""Sample-based similarity on a bounded set of inputs: RSA and mutual k-nearest neighbours.

- **RSA** (Kriegeskorte et al. 2008): each net's representational dissimilarity matrix over the M
  inputs, ``1 - Pearson correlation`` between two inputs' feature vectors (correlation distance),
  compared by the Spearman correlation of the upper triangles. An input whose feature vector is
  constant (e.g. every unit dead on it) has correlation 0 with every other input (distance 1).
- **Mutual k-NN alignment** (Huh et al. 2024, "The platonic representation hypothesis"): each
  input's k nearest other inputs by cosine similarity of the L2-normalised features, in each net;
  the score is the mean over inputs of ``|N_A(i) & N_B(i)| / k``, in [0, 1] (chance ~ k/(M-1)).
  Ties are broken towards the lower input position (stable sort).

Both take a :class:`SampleBuffer` (with unit ranges) or two arrays (M, d_A), (M, d_B) of the same
inputs; widths may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from convergent.stats._buffer import SampleBuffer
from convergent.stats._scores import PairScore


def _pair_features(
    x: Any, y: Any, nets: tuple[str, str] | None, unit_ranges: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    if isinstance(x, SampleBuffer):
        if y is not None:
            raise ValueError("Pass either a SampleBuffer (and nets=...) or two arrays, not both.")
        ranges = dict(unit_ranges or x.unit_ranges)
        if not ranges:
            raise ValueError(
                "The SampleBuffer carries no unit ranges; pass unit_ranges={net: (start, stop)}."
            )
        if nets is None:
            if len(ranges) != 2:
                raise ValueError(
                    f"The buffer holds {len(ranges)} nets {list(ranges)}; say which two with "
                    "nets=(a, b)."
                )
            nets = tuple(ranges)
        for net in nets:
            if net not in ranges:
                raise ValueError(f"No net {net!r} in the buffer. Nets: {list(ranges)}.")
        feats = x.features
        a, b = (feats[:, slice(*ranges[n])] for n in nets)
        return a, b, (str(nets[0]), str(nets[1]))
    if y is None:
        raise ValueError(
            "With an array as the first argument, pass net B's features as the second."
        )
    a, b = (
        np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
        for v in (x, y)
    )
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"The features must be 2-D arrays of the same inputs. Got shapes {a.shape} and "
            f"{b.shape} instead."
        )
    names = tuple(nets) if nets is not None else ("a", "b")
    return a, b, names


def correlation_rdm(features: np.ndarray) -> np.ndarray:
    """Condensed (upper triangle, row-major) correlation distances between the rows."""
    centred = features - features.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit = centred * scale[:, None]
    corr = np.clip(unit @ unit.T, -1.0, 1.0)
    rows, cols = np.triu_indices(features.shape[0], k=1)
    return 1.0 - corr[rows, cols]


def _spearman(u: np.ndarray, v: np.ndarray) -> float | None:
    ru, rv = rankdata(u), rankdata(v)
    ru, rv = ru - ru.mean(), rv - rv.mean()
    denom = np.sqrt((ru @ ru) * (rv @ rv))
    return float(ru @ rv / denom) if denom > 0 else None


def rsa(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> PairScore:
    """Spearman correlation of the two nets' correlation-distance RDMs over the same inputs.

    Parameters
    ----------
    x : SampleBuffer or (M, d_A) array
    y : (M, d_B) array, optional
    nets, unit_ranges
        Which nets of the buffer and their unit ranges (default: the buffer's).

    Raises
    ------
    ValueError
        With fewer than 3 inputs (an RDM needs at least 2 distances to rank).
    """
    a, b, names = _pair_features(x, y, nets, unit_ranges)
    m = a.shape[0]
    if m < 3:
        raise ValueError(f"RSA needs at least 3 inputs; got {m}.")
    rho = _spearman(correlation_rdm(a), correlation_rdm(b))
    details = {"inputs": m, "widths": [a.shape[1], b.shape[1]]}
    if rho is None:
        note = "undefined: an RDM is constant (all its distances tie); reported as 0"
        return PairScore("rsa", 0.0, names, m, False, note, details)
    return PairScore("rsa", rho, names, m, True, "", details)


def _knn(features: np.ndarray, k: int) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit = features * scale[:, None]
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def mutual_knn(
    x: Any,
    y: Any = None,
    *,
    k: int = 10,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> PairScore:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024) of two nets over the same inputs.

    Raises
    ------
    ValueError
        If ``k`` is not an integer in [1, M - 1].
    """
    a, b, names = _pair_features(x, y, nets, unit_ranges)
    m = a.shape[0]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= m - 1:
        raise ValueError(
            f"The 'k' parameter of mutual_knn must be an integer in [1, {m - 1}] for {m} inputs. "
            f"Got {k!r} instead."
        )
    k = int(k)
    na, nb = _knn(a, k), _knn(b, k)
    hits = (na[:, :, None] == nb[:, None, :]).any(axis=2).sum(axis=1)
    details = {"inputs": m, "k": k, "chance": k / (m - 1)}
    return PairScore("mutual_knn", float(hits.mean() / k), names, m, True, "", details)
