"""A small residual net with BatchNorm (He et al. 2016, CIFAR style), so alignment has a residual case."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convergent.models._check import check_count, check_number, check_size

BASE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (identity, or 1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_ch),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """``stem`` (conv-BN-ReLU), three stages ``layer1``..``layer3`` of ``blocks`` BasicBlocks each
    (the second and third downsample by 2 where the map is large enough), global average pooling and
    the classifier ``fc``. Hook ``"layer2.0"`` for a block's output.

    Parameters
    ----------
    in_channels, input_size, num_classes : int
        Input channels, input height/width, and classes.
    width : float
        Multiplier of the stage widths (16, 32, 64).
    blocks : int
        Residual blocks per stage.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | tuple[int, int] = 28,
        num_classes: int = 10,
        width: float = 1.0,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        check_count("ResNet", "in_channels", in_channels)
        check_count("ResNet", "num_classes", num_classes)
        h = min(check_size("ResNet", input_size))
        check_number("ResNet", "width", width)
        if width <= 0:
            raise ValueError(f"The 'width' parameter of ResNet must be > 0. Got {width!r} instead.")
        check_count("ResNet", "blocks", blocks)
        channels = [max(1, int(round(c * width))) for c in BASE_CHANNELS]
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(int(in_channels), channels[0], 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(channels[0]),
                relu=nn.ReLU(),
            )
        )
        prev = channels[0]
        names = ["stem"]
        for stage, ch in enumerate(channels, start=1):
            stride = 2 if stage > 1 and h >= 4 else 1
            if stride == 2:
                h = (h + 1) // 2
            layers = []
            for b in range(int(blocks)):
                layers.append(BasicBlock(prev, ch, stride if b == 0 else 1))
                prev = ch
                names.append(f"layer{stage}.{b}")
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(prev, int(num_classes))
        self.analysis_layers = (*names, "fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.fc(self.flatten(self.pool(x)))
