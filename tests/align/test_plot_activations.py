"""The interpolation figure, and activation matching through the layers that show each group."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent.align import (
    activation_matching,
    apply_permutation,
    find_permutation_groups,
    interpolation_curve,
    matching_layers,
    plot_interpolation,
)
from convergent.align._activations import observed_groups
from convergent.models import build_model
from convergent.record import collect

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_takes_results_or_their_dicts_and_writes_a_png(tmp_path):
    torch.manual_seed(0)
    a = build_model("mlp", in_channels=1, input_size=4, num_classes=3, width=8)
    b = build_model("mlp", in_channels=1, input_size=4, num_classes=3, width=8)
    x, y = torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))
    result = interpolation_curve(a, b, {"train": (x, y), "test": (x, y)}, points=3, progress=False)
    path = plot_interpolation(
        {"naive": result, "as dict": result.to_dict()}, tmp_path / "figs" / "curve.png"
    )
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="holds no curve to draw"):
        plot_interpolation({}, tmp_path / "empty.png")
    with pytest.raises(TypeError, match="must be a BarrierResult or its to_dict.*Got list"):
        plot_interpolation({"bad": [1, 2]}, tmp_path / "bad.png")


class Concat(nn.Module):
    """Two groups side by side: the BatchNorm over the concatenation shows neither alone."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.bn = nn.BatchNorm2d(7)
        self.fc = nn.Linear(7 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
        return self.fc(torch.flatten(self.bn(y), 1))


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (
            build_model("mlp", in_channels=1, input_size=8, num_classes=10, width=16, depth=4),
            (1, 8, 8),
        ),
        (build_model("tests.helpers.user_models:tiny", in_channels=1, input_size=8), (1, 8, 8)),
        (build_model("resnet", in_channels=1, input_size=8, num_classes=10, width=0.5), (1, 8, 8)),
        (Concat(), (2, 4, 4)),
    ],
)
def test_activation_matching_recovers_a_planted_permutation_through_the_matching_layers(
    model, shape
):
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():  # positive biases: no unit of the untrained net is dead on every input
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.5)
    x = torch.randn(128, *shape)
    spec = find_permutation_groups(model, x[:2])
    planted = spec.random_permutations(seed=4)
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(model.state_dict(), spec, planted))
    alignment = activation_matching(model, other, spec, x, progress=False)
    back = apply_permutation(other.state_dict(), spec, alignment.perms)
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value), key
    layers = matching_layers(model, spec)
    assert all(layers.values())


def test_statistics_layers_are_mapped_to_the_groups_they_show():
    torch.manual_seed(0)
    model = build_model("resnet", in_channels=1, input_size=8, num_classes=10, width=0.5).eval()
    x = torch.randn(64, 1, 8, 8)
    spec = find_permutation_groups(model, x[:2])
    found = observed_groups(model, spec, ["stem", "layer1.0", "layer2.0", "fc"], x[:4])
    # a residual block's output is its ReLU's output; the classifier shows no group
    assert found == {"stem": "stem.conv", "layer1.0": "stem.conv", "layer2.0": "layer2.0.conv2"}
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(model.state_dict(), spec, spec.random_permutations(2)))
    stats = collect({"p": model, "q": other}, x, model.analysis_layers, exact=True, topk=None)
    with pytest.raises(ConvergentError, match="No activation statistics for permutation group"):
        # the analysis layers show the stage outputs only, not every block's inner conv
        activation_matching(model, other, spec, x, stats=stats, nets=("p", "q"))
    assert np.all(np.isfinite(stats["stem"].moments.corr()))
