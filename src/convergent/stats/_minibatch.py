"""Minibatch CKA (Nguyen, Raghu and Kornblith 2021): an *estimate* for features too wide for moments.

For flattened conv maps (C*H*W features per input) a co-moment matrix is out of reach; instead each
minibatch of B >= 4 inputs gives, for every pair of blocks (a layer of a net), the unbiased HSIC of
their B x B Gram matrices (Song et al. 2012; shift-invariant, so no centring is needed), and::

    CKA_minibatch(A, B) = mean_t HSIC_1(K_t, L_t) / sqrt(mean_t HSIC_1(K_t, K_t) mean_t HSIC_1(L_t, L_t))

Each HSIC_1 is unbiased, so the averages are unbiased for the population HSIC whatever B; the ratio
is a consistent estimate, not the exact full-data value: results say ``estimate=True``. Batches with
fewer than 4 inputs are skipped (counted in ``skipped``). Sums merge exactly across shards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from convergent.stats._scores import ScoreMatrix
from convergent.stats._state import StateField, Statistic

ESTIMATE_NOTE = (
    "estimate: mean over minibatches of the unbiased HSIC of each minibatch's Gram matrices "
    "(Nguyen et al. 2021), not the exact full-data CKA"
)


def _as_f64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def unbiased_hsic_matrix(grams: np.ndarray) -> np.ndarray:
    """(M, M) unbiased HSIC (Song et al. 2012) between M kernels on the same B >= 4 samples.

    ``grams`` is (M, B, B); the diagonals are ignored (the estimator uses K with its diagonal 0).
    """
    m, b, _ = grams.shape
    k = grams.copy()
    k[:, np.arange(b), np.arange(b)] = 0.0
    flat = k.reshape(m, b * b)
    trace = flat @ flat.T  # tr(K~ L~) (symmetric kernels)
    rows = k.sum(axis=2)  # K~ 1
    total = rows.sum(axis=1)  # 1^T K~ 1
    return (
        trace + np.outer(total, total) / ((b - 1) * (b - 2)) - 2.0 / (b - 2) * rows @ rows.T
    ) / (b * (b - 3))


class MinibatchCKA(Statistic):
    """Per-minibatch unbiased HSIC sums between named blocks of features (pure data).

    Parameters
    ----------
    blocks : sequence of str, optional
        Block names in order (default: the keys of the first update).

    Examples
    --------
    >>> est = MinibatchCKA()
    >>> for xb, yb in batches:  # doctest: +SKIP
    ...     est.update({"a": xb, "b": yb})
    >>> est.matrix(["a"], ["b"]).values  # doctest: +SKIP
    """

    kind = "convergent.MinibatchCKA"
    noun = "HSIC sums"
    state_fields = (
        StateField("hsic", "float64", "sum", "(K, K) summed per-minibatch unbiased HSIC"),
        StateField("batches", "int64", "sum", "(1,) minibatches used"),
        StateField("skipped", "int64", "sum", "(1,) minibatches of fewer than 4 inputs"),
        StateField("samples", "int64", "sum", "(1,) inputs in the minibatches used"),
        StateField("batch_sizes", "int64", "custom", "(m,) the distinct minibatch sizes seen"),
    )

    def __init__(self, blocks: Sequence[str] | None = None) -> None:
        self.metadata: dict[str, Any] = {}
        self.blocks: list[str] | None = list(blocks) if blocks is not None else None
        self.batches = 0
        self.skipped = 0
        self.samples = 0
        self.batch_sizes: set[int] = set()
        self._hsic: np.ndarray | None = None

    def update(self, features: Mapping[str, Any]) -> MinibatchCKA:
        """Add one minibatch: block name -> (B, ...) features of the same B inputs."""
        if self.blocks is None:
            self.blocks = list(features)
        if set(features) != set(self.blocks):
            raise ValueError(
                f"MinibatchCKA.update expects features of blocks {self.blocks}. Got "
                f"{sorted(features)} instead."
            )
        mats = [_as_f64(features[name]) for name in self.blocks]
        sizes = {x.shape[0] for x in mats}
        if len(sizes) != 1:
            raise ValueError(f"All blocks must hold the same inputs. Got batch sizes {sizes}.")
        b = sizes.pop()
        if b < 4:
            self.skipped += 1
            return self
        grams = np.stack([x @ x.T for x in mats])
        hsic = unbiased_hsic_matrix(grams)
        self._hsic = hsic if self._hsic is None else self._hsic + hsic
        self.batches += 1
        self.samples += b
        self.batch_sizes.add(b)
        return self

    def config(self) -> dict[str, Any]:
        return {"blocks": list(self.blocks) if self.blocks is not None else None}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        k = len(self.blocks or [])
        return {
            "hsic": (k, k),
            "batches": (1,),
            "skipped": (1,),
            "samples": (1,),
            "batch_sizes": (-1,),
        }

    def state(self) -> dict[str, np.ndarray]:
        k = len(self.blocks or [])
        return {
            "hsic": self._hsic if self._hsic is not None else np.zeros((k, k)),
            "batches": np.array([self.batches], dtype=np.int64),
            "skipped": np.array([self.skipped], dtype=np.int64),
            "samples": np.array([self.samples], dtype=np.int64),
            "batch_sizes": np.array(sorted(self.batch_sizes), dtype=np.int64),
        }

    def _set_state(self, arrays: Any) -> None:
        self.batches = int(np.asarray(arrays["batches"]).reshape(-1)[0])
        self.skipped = int(np.asarray(arrays["skipped"]).reshape(-1)[0])
        self.samples = int(np.asarray(arrays["samples"]).reshape(-1)[0])
        self.batch_sizes = {int(v) for v in np.asarray(arrays["batch_sizes"]).reshape(-1)}
        self._hsic = np.array(arrays["hsic"], dtype=np.float64) if self.batches else None

    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """Add another shard's sums (same blocks); returns ``self``. A fresh estimator takes the
        blocks of the first shard merged into it."""
        if not isinstance(other, MinibatchCKA):
            raise TypeError(
                f"MinibatchCKA.merge expects a MinibatchCKA. Got {type(other).__name__}."
            )
        if other.batches == 0:
            self.skipped += other.skipped
            return self
        if self.blocks is not None and self._hsic is not None and other.blocks != self.blocks:
            raise ValueError(
                f"Cannot merge MinibatchCKA over blocks {other.blocks} into one over {self.blocks}."
            )
        self.blocks = list(other.blocks)
        self._hsic = other._hsic.copy() if self._hsic is None else self._hsic + other._hsic
        self.batches += other.batches
        self.skipped += other.skipped
        self.samples += other.samples
        self.batch_sizes |= other.batch_sizes
        return self

    def matrix(
        self,
        rows: Sequence[str],
        cols: Sequence[str],
        *,
        labels: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> ScoreMatrix:
        """The minibatch CKA estimate between blocks ``rows`` and ``cols`` (``estimate=True``)."""
        if self._hsic is None:
            raise ValueError("MinibatchCKA has no minibatch of at least 4 inputs; update it first.")
        missing = [r for r in [*rows, *cols] if r not in self.blocks]
        if missing:
            raise ValueError(f"No blocks {missing} in MinibatchCKA. Blocks: {self.blocks}.")
        mean = self._hsic / self.batches
        pos = {name: i for i, name in enumerate(self.blocks)}
        values = np.zeros((len(rows), len(cols)))
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                h_rr, h_cc = mean[pos[r], pos[r]], mean[pos[c], pos[c]]
                if h_rr > 0 and h_cc > 0:
                    values[i, j] = mean[pos[r], pos[c]] / np.sqrt(h_rr * h_cc)
        row_names, col_names = labels if labels is not None else (rows, cols)
        sizes = ", ".join(map(str, sorted(self.batch_sizes)))
        note = f"{ESTIMATE_NOTE}; {self.batches} minibatches of {sizes} inputs"
        return ScoreMatrix(
            "minibatch_cka", list(row_names), list(col_names), values, estimate=True, note=note
        )
