"""Evaluation of a classifier on a split: mean cross-entropy and accuracy."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on a split, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            out = model(x)
            total_loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = max(1, len(labels))
    return total_loss / n, correct / n
