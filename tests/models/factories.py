"""User factories with annotated and defaulted arguments, named as ``tests.models.factories:NAME``."""

from __future__ import annotations

from typing import Literal

from torch import nn


def annotated(
    in_channels: int = 1,
    input_size: int | tuple[int, int] = 8,
    num_classes: int = 10,
    hidden: int = 4,
    scale: float = 1.0,
    act: Literal["relu", "gelu"] = "relu",
    bias: bool = True,
    name: str = "net",
    sizes: list[int] | None = None,
    extra: int | None = None,
) -> nn.Module:
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * h * w, hidden, bias=bias),
        nn.ReLU() if act == "relu" else nn.GELU(),
        nn.Linear(hidden, num_classes),
    )


def unannotated(hidden=4, rate=0, tag="x", dims=(2, 3), anything=None, free=object()):  # noqa: B008
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def open_ended(hidden: int = 4, **options):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def unresolvable(hidden: NotDefinedAnywhere = 4):  # noqa: F821 - the annotation cannot be evaluated
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
