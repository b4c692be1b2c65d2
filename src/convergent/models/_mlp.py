"""A plain multi-layer perceptron with layers named ``fc1``..``fcN``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


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
        if int(depth) != depth or depth < 1:
            raise ValueError(
                f"The 'depth' parameter of MLP must be an integer >= 1. Got {depth!r} instead."
            )
        if int(width) != width or width < 1:
            raise ValueError(
                f"The 'width' parameter of MLP must be an integer >= 1. Got {width!r} instead."
            )
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.flatten = nn.Flatten()
        prev = in_channels * h * w
        for i in range(1, depth):
            self.add_module(
                f"fc{i}",
                nn.Sequential(OrderedDict(linear=nn.Linear(prev, int(width)), relu=nn.ReLU())),
            )
            prev = int(width)
        self.add_module(f"fc{depth}", nn.Linear(prev, num_classes))
        self.analysis_layers = tuple(f"fc{i}" for i in range(1, depth + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x
