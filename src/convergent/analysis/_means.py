"""Mean activations (Li et al. 2016): per-unit means differ within a net, but their distribution is
alike across nets.

For every net: the sorted curve of its units' mean activations and their spread (coefficient of
variation). For every pair: the two-sample Kolmogorov-Smirnov statistic between the nets' sets of
unit means, and the Wasserstein-1 distance normalised by the pooled standard deviation of unit means.
As a reference for "alike", the same KS statistic between two random halves of one net's units
(averaged over nets and a few fixed splits): a between-net KS near this within-net level means the
nets' distributions of unit means are as alike as two halves of one net.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from convergent._errors import ConvergentError


@dataclass
class MeanActivations:
    """Distribution of per-unit mean activations across nets at one layer."""

    sorted_means: dict[str, np.ndarray]
    spread: dict[str, float]
    pairs: dict[str, dict[str, float]]
    within_ks: float

    def to_dict(self) -> dict[str, Any]:
        ks = [p["ks"] for p in self.pairs.values()]
        return {
            "spread": self.spread,
            "pairs": self.pairs,
            "between_ks_mean": float(np.mean(ks)) if ks else 0.0,
            "within_ks": self.within_ks,
        }


def compare_means(
    means: Mapping[str, np.ndarray], *, splits: int = 5, seed: int = 0
) -> MeanActivations:
    """Compare nets' distributions of unit means.

    Parameters
    ----------
    means : mapping of net name to (d,) array of its units' mean activations.
    splits : int
        Random halvings per net for the within-net KS reference.
    """
    if not means:
        raise ConvergentError("compare_means needs the unit means of at least one net.")
    rng = np.random.default_rng(seed)
    sorted_means = {k: np.sort(np.asarray(v, dtype=np.float64))[::-1] for k, v in means.items()}
    spread = {}
    for k, v in sorted_means.items():
        scale = np.abs(v).mean()
        spread[k] = float(v.std() / scale) if scale > 0 else 0.0
    pairs = {}
    for a, b in combinations(list(means), 2):
        va, vb = sorted_means[a], sorted_means[b]
        pooled = np.concatenate([va, vb]).std()
        pairs[f"{a}~{b}"] = {
            "ks": float(ks_2samp(va, vb, method="asymp").statistic),
            "wasserstein": float(wasserstein_distance(va, vb) / pooled) if pooled > 0 else 0.0,
        }
    within = []
    for v in sorted_means.values():
        if len(v) < 4:
            continue
        for _ in range(splits):
            perm = rng.permutation(len(v))
            half = len(v) // 2
            within.append(ks_2samp(v[perm[:half]], v[perm[half:]], method="asymp").statistic)
    return MeanActivations(sorted_means, spread, pairs, float(np.mean(within)) if within else 0.0)
