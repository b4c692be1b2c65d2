"""Permutation groups found by tracing: outputs unchanged under random permutations of every group,
and unsupported operations named with their source line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convergent.align import (
    UnsupportedOperationError,
    apply_permutation,
    check_permutation_invariance,
    find_permutation_groups,
)
from convergent.models import build_model


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so a missed axis shows."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model


@pytest.mark.parametrize(
    ("arch", "kwargs", "shape"),
    [
        ("convnet", {}, (1, 8, 8)),
        ("convnet", {"width": 0.5}, (3, 32, 32)),
        ("mlp", {"depth": 4, "width": 32}, (1, 8, 8)),
        ("resnet", {"blocks": 2}, (1, 8, 8)),
        ("resnet", {"width": 0.5}, (3, 16, 16)),
        ("tests.helpers.user_models:tiny", {}, (1, 8, 8)),
    ],
)
def test_every_builtin_architecture_is_permutation_invariant(arch, kwargs, shape):
    torch.manual_seed(0)
    c, h, w = shape
    model = _randomise_norms(
        build_model(arch, in_channels=c, input_size=(h, w), num_classes=10, **kwargs)
    )
    x = torch.randn(5, c, h, w)
    for seed in range(3):
        assert check_permutation_invariance(model, x, seed=seed) <= 1e-5


def test_groups_of_the_convnet_follow_the_paper_layers():
    model = build_model("convnet", in_channels=1, input_size=28, num_classes=10)
    spec = find_permutation_groups(model, torch.randn(2, 1, 28, 28))
    assert list(spec.groups) == [
        "conv1.conv",
        "conv2.conv",
        "conv3.conv",
        "conv4.conv",
        "conv5.conv",
        "fc6.linear",
        "fc7.linear",
    ]
    conv5 = spec.groups["conv5.conv"]
    # conv5's 64 channels feed fc6 through a flattened 3x3 map: blocks of 9 inputs per channel
    assert ("fc6.linear.weight", 1, 0, 9) in conv5.axes
    assert "conv5.relu" in conv5.layers
    # the classifier's outputs and the input channels are never permuted
    assert "fc8.bias" in spec.fixed_parameters


def test_residual_additions_merge_groups_and_batchnorm_statistics_follow():
    model = build_model("resnet", in_channels=1, input_size=8, num_classes=10)
    spec = find_permutation_groups(model, torch.randn(2, 1, 8, 8))
    stem = spec.groups["stem.conv"]
    params = {a[0] for a in stem.axes}
    # the stem's channels flow through the identity shortcut of layer1.0: one group
    assert {
        "stem.bn.running_mean",
        "stem.bn.running_var",
        "layer1.0.bn2.weight",
        "layer1.0.conv2.weight",
        "layer2.0.shortcut.conv.weight",
    } <= params


class LayerNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.bn = nn.BatchNorm2d(7)
        self.fc = nn.Linear(7 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
        y = self.bn(y)
        return self.fc(torch.flatten(y, 1))


class MeanPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "shape"),
    [(LayerNormMLP(), (4, 6)), (Concat(), (3, 2, 4, 4)), (MeanPool(), (3, 1, 6, 6))],
)
def test_layernorm_concatenation_and_pooling(model, shape):
    model = _randomise_norms(model)
    x = torch.randn(*shape)
    assert check_permutation_invariance(model, x) <= 1e-5
    spec = find_permutation_groups(model, x)
    assert spec.groups  # something was permuted


def test_concatenation_keeps_segments():
    spec = find_permutation_groups(Concat(), torch.randn(2, 2, 4, 4))
    # the BatchNorm over the concatenation is split between the two groups, at offsets 0 and 3
    assert ("bn.weight", 0, 0, 1) in spec.groups["a"].axes
    assert ("bn.weight", 0, 3, 1) in spec.groups["b"].axes
    assert ("fc.weight", 1, 3 * 16, 16) in spec.groups["b"].axes


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        h = torch.cumsum(h, dim=-1)  # order-dependent: cannot be permuted
        return self.out(h)


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x).transpose(0, 1)


class Direct(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return x @ self.w


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.conv(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


@pytest.mark.parametrize(
    ("model", "shape", "match"),
    [
        (Unsupported(), (2, 4), r"node 'cumsum'.*cumsum.*test_groups.py"),
        (Transposed(), (2, 4), r"tensor method 'transpose' is not supported"),
        (Direct(), (2, 4), r"reads a parameter or buffer directly"),
        (Grouped(), (1, 4, 5, 5), r"grouped/depthwise convolution"),
        (Branchy(), (2, 4), r"torch.fx could not trace Branchy"),
    ],
)
def test_unsupported_operations_name_the_node_and_source_line(model, shape, match):
    with pytest.raises(UnsupportedOperationError, match=match):
        find_permutation_groups(model, torch.randn(*shape))


def test_apply_permutation_errors_and_identity():
    model = build_model("mlp", in_channels=1, input_size=4, num_classes=3, width=5, depth=2)
    spec = find_permutation_groups(model, torch.randn(2, 1, 4, 4))
    same = apply_permutation(model.state_dict(), spec, spec.identity())
    for k, v in model.state_dict().items():
        assert torch.equal(same[k], v)
    with pytest.raises(ValueError, match="No permutation given for groups"):
        apply_permutation(model.state_dict(), spec, {})
    with pytest.raises(ValueError, match="is not a permutation of 5"):
        apply_permutation(model.state_dict(), spec, {"fc1.linear": np.array([0, 0, 1, 2, 3])})
    perm = np.array([4, 3, 2, 1, 0])
    permuted = apply_permutation(model.state_dict(), spec, {"fc1.linear": perm})
    assert torch.equal(permuted["fc1.linear.weight"][0], model.state_dict()["fc1.linear.weight"][4])
    assert torch.equal(permuted["fc2.weight"][:, 0], model.state_dict()["fc2.weight"][:, 4])
