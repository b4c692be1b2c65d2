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

from convergent.stats._state import StateField, Statistic

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


class SampleBuffer(Statistic):
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

    kind = "convergent.SampleBuffer"
    noun = "buffered features"
    state_fields = (
        StateField("index", "int64", "custom", "(m,) input indices kept (m <= capacity)"),
        StateField("features", "float64", "custom", "(m, dim) their features"),
        StateField("seen", "int64", "sum", "(1,) inputs offered"),
    )

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
        self.metadata: dict[str, Any] = {}
        self.seen = 0
        self._index = np.zeros(0, dtype=np.int64)
        self._features = np.zeros((0, self.dim))

    def config(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "dim": self.dim,
            "seed": self.seed,
            "unit_ranges": {k: list(v) for k, v in self.unit_ranges.items()},
        }

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {"index": (-1,), "features": (-1, self.dim), "seen": (1,)}

    def state(self) -> dict[str, np.ndarray]:
        return {
            "index": self._index,
            "features": self._features,
            "seen": np.array([self.seen], dtype=np.int64),
        }

    def _set_state(self, arrays: Any) -> None:
        self._index = np.array(arrays["index"], dtype=np.int64)
        self._features = np.array(arrays["features"], dtype=np.float64).reshape(-1, self.dim)
        self.seen = int(np.asarray(arrays["seen"]).reshape(-1)[0])

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

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, SampleBuffer):
            raise TypeError(
                f"SampleBuffer.merge expects a SampleBuffer. Got {type(other).__name__}."
            )
        if (other.capacity, other.dim, other.seed) != (self.capacity, self.dim, self.seed):
            raise ValueError(
                "Cannot merge SampleBuffers with different (capacity, dim, seed): "
                f"{(other.capacity, other.dim, other.seed)} vs {(self.capacity, self.dim, self.seed)}."
            )

    def _merge_custom(self, other: SampleBuffer) -> None:
        index = np.concatenate([self._index, other._index])
        self._keep(index, np.concatenate([self._features, other._features]))

    def merge(self, other: SampleBuffer) -> SampleBuffer:
        """Fold in another shard's buffer (same capacity, dim and seed); returns ``self``."""
        return super().merge(other)

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
