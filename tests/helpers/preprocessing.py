"""User preprocessings named as ``tests.helpers.preprocessing:NAME`` in the collect tests."""

from __future__ import annotations

import torch


def centred(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] shifted to [-0.5, 0.5]."""
    return pixels - 0.5


def one_row(pixels: torch.Tensor) -> torch.Tensor:
    """A broken preprocessing: one row for the whole batch."""
    return pixels[:1]


NOT_A_FUNCTION = 3
