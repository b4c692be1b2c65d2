"""The paper-like convolutional net: five conv layers, then three fully connected ones.

Li et al. (2016) compare AlexNet-style nets (conv1..conv5, fc6..fc8). ``ConvNet`` keeps that layer
structure and naming at a size that trains on a CPU, and adapts to any input size and channel count.
Each ``convK`` / ``fc6`` / ``fc7`` is a block whose output is the post-ReLU activation (as the blobs
of the paper's Caffe nets, where ReLU ran in place), so hooking ``"conv3"`` records what the paper calls
conv3. The parts are reachable as ``convK.conv`` / ``convK.relu`` and ``fcK.linear`` / ``fcK.relu``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convergent.models._check import check_count, check_number, check_size

#: Channels of conv1..conv5 and units of fc6/fc7 at ``width=1`` (AlexNet's 96-256-384-384-256 / 4096,
#: scaled down by about 3 and 16 so that four nets train in seconds on two CPU cores).
BASE_CHANNELS = (32, 64, 96, 96, 64)
BASE_FC = 256
#: AlexNet pools after conv1, conv2 and conv5.
POOL_AFTER = (1, 2, 5)


def _scaled(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class ConvNet(nn.Module):
    """AlexNet-shaped net: ``conv1``..``conv5`` (ReLU; max-pooling after 1, 2 and 5), ``fc6``, ``fc7``
    (ReLU, optional dropout) and the classifier ``fc8``.

    Parameters
    ----------
    in_channels : int
        Channels of the input images (1 for grey scale, 3 for colour).
    input_size : int or (int, int)
        Height and width of the inputs. Pooling is skipped where the map is already 1 pixel high or
        wide, so 8x8 digits and 32x32 CIFAR images both work.
    num_classes : int
        Outputs of ``fc8``.
    width : float
        Multiplier of every layer's width (``BASE_CHANNELS``, ``BASE_FC``).
    dropout : float
        Dropout probability before ``fc6`` and ``fc7`` (AlexNet used 0.5; default 0).
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | tuple[int, int] = 28,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_count("ConvNet", "in_channels", in_channels)
        check_count("ConvNet", "num_classes", num_classes)
        h, w = check_size("ConvNet", input_size)
        check_number("ConvNet", "width", width)
        check_number("ConvNet", "dropout", dropout)
        if width <= 0:
            raise ValueError(
                f"The 'width' parameter of ConvNet must be > 0. Got {width!r} instead."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"The 'dropout' parameter of ConvNet must be in [0, 1). Got {dropout!r} instead."
            )
        channels = [_scaled(c, width) for c in BASE_CHANNELS]
        fc = _scaled(BASE_FC, width)
        prev = int(in_channels)
        for i, ch in enumerate(channels, start=1):
            kernel = 5 if i == 1 else 3
            block = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(prev, ch, kernel_size=kernel, padding=kernel // 2),
                    relu=nn.ReLU(),
                )
            )
            self.add_module(f"conv{i}", block)
            if i in POOL_AFTER and min(h, w) >= 2:
                self.add_module(f"pool{i}", nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            prev = ch
        self.flatten = nn.Flatten()
        flat = prev * h * w
        self.fc6 = nn.Sequential(
            OrderedDict(drop=nn.Dropout(dropout), linear=nn.Linear(flat, fc), relu=nn.ReLU())
        )
        self.fc7 = nn.Sequential(
            OrderedDict(drop=nn.Dropout(dropout), linear=nn.Linear(fc, fc), relu=nn.ReLU())
        )
        self.fc8 = nn.Linear(fc, int(num_classes))
        self.analysis_layers = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation of every ReLU layer and zero biases, so that the deep
        plain (un-normalised) stack trains reliably from any seed; the classifier gets a small init."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if name == "fc8":
                    nn.init.normal_(module.weight, std=0.01)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x
