"""Planted-structure generators: data where the answer is known, for the analyses to recover."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import ortho_group

from convergent.stats import Moments


def permuted_pair(n: int = 4000, d: int = 12, noise: float = 0.3, seed: int = 0):
    """Net B's units are net A's in a random order, plus noise. Returns (a, b, perm) with
    ``b[:, i] ~ a[:, perm[i]]``, so A unit ``perm[i]`` matches B unit ``i``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d)))
    perm = rng.permutation(d)
    b = a[:, perm] + noise * rng.normal(size=(n, d))
    return a, b, perm


def sparse_mixing(n: int = 3000, d_a: int = 15, d_b: int = 8, noise: float = 0.3, seed: int = 0):
    """Each B unit is a combination of 1-3 A units plus noise. Returns (a, b, weights (d_a, d_b))."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d_a)) + 0.2 * rng.normal(size=(n, 1))
    weights = np.zeros((d_a, d_b))
    for j in range(d_b):
        k = 1 + j % 3
        idx = rng.choice(d_a, k, replace=False)
        weights[idx, j] = rng.choice([-1, 1], k) * rng.uniform(1.0, 2.0, k)
    b = a @ weights + noise * rng.normal(size=(n, d_b)) + rng.normal(size=d_b)
    return a, b, weights


def shared_subspaces(
    n: int = 6000, blocks: int = 4, size: int = 16, noise: float = 0.3, seed: int = 0
):
    """Both nets span the same ``blocks`` subspaces of ``size`` latent factors each, in different
    bases: each net's units in block k are a random rotation of block k's factors, plus noise.
    Returns (a, b, block_labels) with labels per unit of A then B."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, blocks, size))
    # correlate factors within a block so each block is a tight group of units
    latent = latent + 0.3 * rng.normal(size=(n, blocks, 1))
    parts_a, parts_b = [], []
    for k in range(blocks):
        qa = ortho_group.rvs(size, random_state=rng.integers(1 << 31))
        qb = ortho_group.rvs(size, random_state=rng.integers(1 << 31))
        parts_a.append(latent[:, k] @ qa)
        parts_b.append(latent[:, k] @ qb)
    a = np.concatenate(parts_a, axis=1) + noise * rng.normal(size=(n, blocks * size))
    b = np.concatenate(parts_b, axis=1) + noise * rng.normal(size=(n, blocks * size))
    labels = np.concatenate([np.repeat(np.arange(blocks), size)] * 2)
    return a, b, labels


def joint_moments(*parts: np.ndarray) -> Moments:
    """Exact joint moments of the concatenated parts, with unit ranges in the metadata."""
    joint = np.concatenate(parts, axis=1)
    m = Moments(joint.shape[1], exact=True).update(joint)
    start, ranges = 0, {}
    for i, p in enumerate(parts):
        ranges[f"net{i}"] = [start, start + p.shape[1]]
        start += p.shape[1]
    m.metadata["unit_ranges"] = ranges
    return m


class FakeLayer:
    """A LayerStatistics stand-in (name, moments, unit_ranges) for pure analysis tests."""

    def __init__(self, name: str, moments: Moments):
        self.name = name
        self.moments = moments
        self.unit_ranges = {k: tuple(v) for k, v in moments.metadata["unit_ranges"].items()}


class ArrayMoments:
    """Stand-in for ``convergent.stats.Moments`` built from an array in one two-pass computation.

    Same read-outs: ``dim``, ``count``, ``mean``, ``comoment``, ``var``, ``std``, ``cov``, ``corr``,
    ``dead_units``, ``subset``, ``metadata``. Dead units: variance 0 or std <= 1e-12 |mean|.
    """

    def __init__(self, count: int, mean: np.ndarray, comoment: np.ndarray) -> None:
        self.count = int(count)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.comoment = np.asarray(comoment, dtype=np.float64)
        self.dim = len(self.mean)
        self.metadata: dict[str, Any] = {}

    @classmethod
    def from_array(cls, x: np.ndarray) -> ArrayMoments:
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    def cov(self, ddof: int = 1) -> np.ndarray:
        return self.comoment / (self.count - ddof)

    def var(self, ddof: int = 0) -> np.ndarray:
        return np.diag(self.cov(ddof)).copy()

    def std(self, ddof: int = 0) -> np.ndarray:
        return np.sqrt(np.clip(self.var(ddof), 0.0, None))

    def dead_units(self) -> np.ndarray:
        std = self.std(0)
        return np.flatnonzero((std == 0) | (std <= 1e-12 * np.abs(self.mean)))

    def corr(self) -> np.ndarray:
        std = self.std(0)
        alive = np.ones(self.dim, dtype=bool)
        alive[self.dead_units()] = False
        inv = np.where(alive, 1.0 / np.where(alive, std, 1.0), 0.0)
        out = np.clip(self.cov(0) * np.outer(inv, inv), -1.0, 1.0)
        np.fill_diagonal(out, 1.0)
        return out

    def subset(self, index: Any) -> ArrayMoments:
        idx = np.atleast_1d(np.arange(self.dim)[index])
        return ArrayMoments(self.count, self.mean[idx], self.comoment[np.ix_(idx, idx)])
