"""Default layers and layer listing in forward order: activations rather than pre-activations,
reused and functional activations, the logits, shapes and unit counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent import ConvergentError
from convergent.models import build_model, default_layers, describe_layers, example_input
from convergent.models._trace import trace


class OutOfOrder(nn.Module):
    """Registers its layers in another order than ``forward`` runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.act2 = nn.GELU()
        self.fc = nn.Linear(4 * 4, 8)
        self.act1 = nn.ReLU()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv(x)).mean(dim=(2, 3), keepdim=True)  # (B, 4, 1, 1)
        x = x.expand(-1, -1, 2, 2).flatten(1)  # (B, 16)
        return self.head(self.act2(self.fc(x)))


class ReusedReLU(nn.Module):
    """One nn.ReLU object applied after every layer: hooking it would see three outputs per pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 6 * 6, 16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 12)
        self.out = nn.Linear(12, 10)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.relu(self.drop(self.fc1(x.flatten(1))))
        x = self.relu(self.fc2(x))
        return self.out(x)


class Functional(nn.Module):
    """No activation modules (F.relu) and an output that is not a module's (log-softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc2 = nn.Linear(16, 10)
        self.fc1 = nn.Linear(36, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_builtins_keep_their_declared_layers_in_forward_order():
    convnet = build_model("convnet", in_channels=1, input_size=8, num_classes=10)
    assert default_layers(convnet) == [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    resnet = build_model("resnet", in_channels=3, input_size=16, num_classes=10, blocks=2)
    rows = describe_layers(resnet, torch.zeros(2, 3, 16, 16))
    ran = [r["name"] for r in rows if r["calls"]]
    assert ran[0] == "stem" and ran[-1] == "fc"
    assert [r["name"] for r in rows if r["default"]] == default_layers(resnet)
    # every module ran once, and BasicBlock's children come in the order forward runs them
    assert all(r["calls"] == 1 for r in rows)
    block = [n[len("layer2.0.") :] for n in ran if n.startswith("layer2.0.")]
    assert block[:6] == ["conv1", "bn1", "relu1", "conv2", "bn2", "shortcut"]


def test_shapes_units_and_samples_per_input():
    model = build_model("convnet", in_channels=1, input_size=8, num_classes=10, width=0.25)
    rows = {r["name"]: r for r in describe_layers(model, torch.zeros(3, 1, 8, 8))}
    conv1 = rows["conv1"]
    assert conv1["output_shape"] == [8, 8, 8] and conv1["layout"] == "channels_first"
    assert conv1["units"] == 8 and conv1["samples_per_input"] == 64
    assert rows["pool1"]["output_shape"] == [8, 4, 4] and rows["pool1"]["samples_per_input"] == 16
    assert rows["fc6"]["output_shape"] == [64] and rows["fc6"]["units"] == 64
    assert rows["fc6"]["samples_per_input"] == 1 and rows["fc6"]["layout"] == "vector"
    assert rows["fc8"]["units"] == 10 and rows["fc8"]["default"]
    assert (
        rows["conv1.conv"]["parameters"] == 8 * 1 * 5 * 5 + 8 and not rows["conv1.conv"]["default"]
    )


def test_token_and_conv1d_layouts():
    tokens = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.LayerNorm(5))
    rows = {r["name"]: r for r in describe_layers(tokens, torch.zeros(2, 7, 6))}
    assert rows["1"]["layout"] == "tokens" and rows["1"]["units"] == 5
    assert rows["1"]["samples_per_input"] == 7 and rows["2"]["layout"] == "tokens"
    conv1d = nn.Sequential(nn.Conv1d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(40, 2))
    rows = {r["name"]: r for r in describe_layers(conv1d, torch.zeros(2, 3, 10))}
    # the ReLU of a Conv1d map is still (C, L): 5 units at 8 positions, not 8 units at 5 tokens
    assert rows["1"]["layout"] == "channels_first"
    assert (rows["1"]["units"], rows["1"]["samples_per_input"]) == (5, 8)
    assert default_layers(conv1d, torch.zeros(2, 3, 10)) == ["1", "3"]


def test_user_model_activations_in_forward_order_not_registration_order():
    model = OutOfOrder()
    x = torch.zeros(2, 1, 4, 4)
    assert [n for n, _ in model.named_modules() if n][:3] == ["head", "act2", "fc"]
    assert default_layers(model, x) == ["act1", "act2", "head"]
    rows = describe_layers(model, x)
    assert [r["name"] for r in rows] == ["conv", "act1", "fc", "act2", "head", "unused"]
    assert rows[-1]["calls"] == 0 and rows[-1]["output_shape"] is None


def test_reused_activation_is_not_a_default_layer():
    model = ReusedReLU()
    x = torch.zeros(2, 1, 6, 6)
    rows = {r["name"]: r for r in describe_layers(model, x)}
    assert rows["relu"]["calls"] == 3 and not rows["relu"]["default"]
    # each use of the shared ReLU is represented by the layer that feeds it (through BN/dropout)
    assert default_layers(model, x) == ["conv", "fc1", "fc2", "out"]


def test_mixed_reused_and_single_activations():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
            self.shared, self.last = nn.Tanh(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.shared(self.fc1(x))
            x = self.shared(x + 1)  # a second use fed by no layer: nothing stands in for it
            return self.fc3(self.last(self.fc2(x)))

    assert default_layers(Mixed(), torch.zeros(2, 4)) == ["fc1", "last", "fc3"]


def test_functional_activations_fall_back_to_weighted_layers_and_the_last_one():
    model = Functional()
    assert default_layers(model, torch.zeros(2, 1, 6, 6)) == ["fc1", "fc2"]
    with torch.no_grad():
        assert trace(model, torch.zeros(2, 1, 6, 6)).output_module is None


def test_inplace_activation_after_the_last_layer_is_the_output():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3), nn.Sigmoid())
    assert default_layers(model, torch.zeros(2, 6)) == ["1", "3"]
    inplace_end = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True))
    assert trace(inplace_end, torch.zeros(2, 6)).output_module == "1"


def test_built_models_are_traced_without_an_example():
    model = build_model("tests.helpers.user_models:tiny", in_channels=1, input_size=8)
    assert example_input(model).shape == (2, 1, 8, 8)
    assert default_layers(model) == ["1", "3"]
    assert describe_layers(model)[0]["output_shape"] == [8, 8, 8]
    # a model convergent did not build, without an example: Conv/Linear by registration order
    plain = OutOfOrder()
    assert example_input(plain) is None
    assert default_layers(plain) == ["head", "fc", "conv", "unused"]
    assert describe_layers(plain)[0]["output_shape"] is None
    assert example_input(plain, (1, 4, 4)).shape == (2, 1, 4, 4)


def test_built_model_whose_recorded_shape_does_not_fit_falls_back():
    model = build_model("tests.helpers.user_models:fixed_shape", in_channels=3, input_size=5)
    # fixed_shape ignores the data arguments (it expects 64 inputs): no trace, no error
    assert default_layers(model) == ["1", "3"]


def test_trace_leaves_no_hook_modes_or_random_state_behind():
    model = ReusedReLU()
    model.train()
    model.bn.eval()  # a mixed state must come back as it was
    x = torch.randn(4, 1, 6, 6)
    state = torch.get_rng_state()
    running = model.bn.running_mean.clone()
    default_layers(model, x)
    assert _hook_count(model) == 0
    assert model.training and model.fc1.training and not model.bn.training
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(model.bn.running_mean, running)
    with pytest.raises(ConvergentError, match=r"failed on an example input of shape \(2, 3\)"):
        describe_layers(model, torch.zeros(2, 3))
    assert _hook_count(model) == 0 and model.training


def test_model_without_any_default_layer_is_refused():
    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.flat = nn.Flatten()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.flat(x) * self.scale

    with pytest.raises(ConvergentError, match="found no layer to analyse by default in Bare"):
        default_layers(Bare(), torch.zeros(2, 3, 2))
