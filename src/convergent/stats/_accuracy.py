"""``ClassifierScores``: a classifier's summed cross-entropy and correct predictions, streaming.

Collected in the same pass as the activation statistics (from each net's output logits), so every
statistics directory says how well each net does on exactly the inputs it was measured on, with the
preprocessing it was given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from convergent.stats._state import StateField, Statistic


class ClassifierScores(Statistic):
    """Count, correct predictions and summed cross-entropy of one net (sums; merge adds)."""

    kind = "convergent.ClassifierScores"
    noun = "classifier scores"
    state_fields = (
        StateField("count", "int64", "sum", "(1,) labelled inputs seen"),
        StateField("correct", "int64", "sum", "(1,) inputs whose arg-max output is the label"),
        StateField("loss_sum", "float64", "sum", "(1,) summed cross-entropy, in nats"),
    )

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self._count = np.zeros(1, dtype=np.int64)
        self._correct = np.zeros(1, dtype=np.int64)
        self._loss_sum = np.zeros(1)

    def config(self) -> dict[str, Any]:
        return {}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {"count": (1,), "correct": (1,), "loss_sum": (1,)}

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> ClassifierScores:
        """Add a batch: ``logits`` (B, classes) and integer ``labels`` (B,)."""
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(
                "ClassifierScores.update expects logits (B, classes) and labels (B,). Got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)} instead."
            )
        logits, labels = logits.detach().double(), labels.to(logits.device).long()
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        self._count += int(labels.shape[0])
        self._correct += int((logits.argmax(1) == labels).sum())
        self._loss_sum += float(loss)
        return self

    @property
    def count(self) -> int:
        return int(self._count[0])

    @property
    def accuracy(self) -> float | None:
        """Share of inputs classified correctly (None before any input)."""
        return float(self._correct[0]) / self.count if self.count else None

    @property
    def loss(self) -> float | None:
        """Mean cross-entropy in nats (None before any input)."""
        return float(self._loss_sum[0]) / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.count, "accuracy": self.accuracy, "loss": self.loss}
