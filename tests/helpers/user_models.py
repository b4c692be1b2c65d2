"""A user-defined model living outside the package, named as ``tests.helpers.user_models:tiny``."""

from __future__ import annotations

from torch import nn


def tiny(
    in_channels: int = 1, input_size=(8, 8), num_classes: int = 10, hidden: int = 8
) -> nn.Module:
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(hidden * h * w, num_classes),
    )


def fixed_shape(hidden: int = 4) -> nn.Module:
    """A factory that takes no data arguments at all."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def not_a_module() -> str:
    return "nope"


NOT_CALLABLE = 3
