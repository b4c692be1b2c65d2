"""``SampleBuffer``: a bounded, deterministic subset of per-input feature vectors.

Sample-based metrics (RSA, mutual nearest neighbours) need the features of the same inputs in both
nets, which moments do not keep. The buffer keeps at most ``capacity`` inputs: those whose input
index has the smallest value under a fixed 64-bit mixing hash (splitmix64's finaliser, offset by the
seed). Which inputs are kept depends only on the set of input indices seen and the seed, not on
batch order, batch size or sharding, and two shards merge exactly (keep the smallest keys of the
union) -- a "bottom-k" sample, uniformly random over inputs for a given seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def priority(index: np.ndarray, seed: int = 0) -> np.ndarray:
    """The fixed pseudo-random key of each input index (uint64; smaller is kept first)."""
    z = np.asarray(index, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z += (np.uint64(seed) + np.uint64(1)) * _GOLDEN
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


class SampleBuffer:
    """Up to ``capacity`` per-input feature vectors (float64), the same inputs however fed.

    Parameters
    ----------
    capacity : int
        Most inputs kept (M).
    dim : int
        Features per input (all nets' units concatenated, for a joint buffer).
    seed : int
        Chooses which inputs (a different fixed subset per seed).
    unit_ranges : mapping of str to (int, int), optional
        Each net's (start, stop) among the features (for :func:`rsa`, :func:`mutual_knn`).

    Attributes
    ----------
    features : ndarray, shape (m, dim)
        The kept inputs' features, in increasing input index.
    index : ndarray of int64, shape (m,)
        Their input indices.
    """

    def __init__(
        self,
        capacity: int,
        dim: int,
        *,
        seed: int = 0,
        unit_ranges: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("capacity", capacity), ("dim", dim)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"The '{name}' parameter of SampleBuffer must be an integer >= 1. Got "
                    f"{value!r} instead."
                )
        self.capacity, self.dim, self.seed = int(capacity), int(dim), int(seed)
        self.unit_ranges = {k: (int(v[0]), int(v[1])) for k, v in (unit_ranges or {}).items()}
        self.seen = 0
        self._index = np.zeros(0, dtype=np.int64)
        self._features = np.zeros((0, self.dim))

    @property
    def index(self) -> np.ndarray:
        order = np.argsort(self._index)
        return self._index[order]

    @property
    def features(self) -> np.ndarray:
        order = np.argsort(self._index)
        return self._features[order]

    def __len__(self) -> int:
        return int(self._index.size)

    def update(self, x: Any, input_index: Any) -> SampleBuffer:
        """Offer a batch: (B, dim) features of the inputs ``input_index`` (B,) (distinct, >= 0)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float64)
        idx = np.asarray(input_index)
        if x.ndim != 2 or x.shape[1] != self.dim or idx.shape != (x.shape[0],):
            raise ValueError(
                f"SampleBuffer.update expects features (B, {self.dim}) and input indices (B,). "
                f"Got {x.shape} and {idx.shape} instead."
            )
        if not np.issubdtype(idx.dtype, np.integer) or (idx < 0).any():
            raise ValueError("SampleBuffer.update expects non-negative integer input indices.")
        index = np.concatenate([self._index, idx.astype(np.int64)])
        self._keep(index, np.concatenate([self._features, x]))
        self.seen += int(idx.size)
        return self

    def merge(self, other: SampleBuffer) -> SampleBuffer:
        """Fold in another shard's buffer (same capacity, dim and seed); returns ``self``."""
        if not isinstance(other, SampleBuffer):
            raise TypeError(
                f"SampleBuffer.merge expects a SampleBuffer. Got {type(other).__name__}."
            )
        if (other.capacity, other.dim, other.seed) != (self.capacity, self.dim, self.seed):
            raise ValueError(
                "Cannot merge SampleBuffers with different (capacity, dim, seed): "
                f"{(other.capacity, other.dim, other.seed)} vs {(self.capacity, self.dim, self.seed)}."
            )
        index = np.concatenate([self._index, other._index])
        self._keep(index, np.concatenate([self._features, other._features]))
        self.seen += other.seen
        return self

    def _keep(self, index: np.ndarray, features: np.ndarray) -> SampleBuffer:
        if np.unique(index).size != index.size:
            raise ValueError(
                "SampleBuffer saw an input index twice; each input must be offered once (shards "
                "must not overlap). Nothing was added."
            )
        keys = priority(index, self.seed)
        order = np.argsort(keys, kind="stable")[: self.capacity]
        self._index, self._features = index[order], features[order]
        return self

    def __repr__(self) -> str:
        return f"SampleBuffer({len(self)}/{self.capacity} inputs, dim={self.dim}, seed={self.seed})"
