"""A plain multi-layer perceptron with layers named ``fc1``..``fcN``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convergent.models._check import check_count, check_size


class MLP(nn.Module):
    """``depth`` fully connected layers: ``fc1``..``fc{depth-1}`` are Linear + ReLU blocks (their output
    is the post-ReLU activation), ``fc{depth}`` is the classifier.

    Parameters
    ----------
    in_channels, input_size : int
        Shape of the input images; they are flattened.
    num_classes : int
        Outputs of the last layer.
    width : int
        Units of every hidden layer.
    depth : int
        Number of linear layers (>= 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | tuple[int, int] = 28,
        num_classes: int = 10,
        width: int = 128,
        depth: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("width", width),
            ("depth", depth),
        ):
            check_count("MLP", name, value)
        h, w = check_size("MLP", input_size)
        width, depth = int(width), int(depth)
        self.flatten = nn.Flatten()
        prev = int(in_channels) * h * w
        for i in range(1, depth):
            self.add_module(
                f"fc{i}",
                nn.Sequential(OrderedDict(linear=nn.Linear(prev, width), relu=nn.ReLU())),
            )
            prev = width
        self.add_module(f"fc{depth}", nn.Linear(prev, int(num_classes)))
        self.analysis_layers = tuple(f"fc{i}" for i in range(1, depth + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x
