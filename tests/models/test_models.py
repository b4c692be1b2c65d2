"""Model construction, layer naming and the registry, for every built-in architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convergent import ConvergentError
from convergent.models import (
    MLP,
    ConvNet,
    ResNet,
    available_architectures,
    build_model,
    check_kwargs,
    default_layers,
    describe_layers,
    layer_names,
    register_architecture,
)


@pytest.mark.parametrize("arch", ["convnet", "mlp", "resnet", "vit"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 5, 7)])
def test_every_architecture_adapts_to_input_shape(arch, shape):
    c, h, w = shape
    model = build_model(arch, in_channels=c, input_size=(h, w), num_classes=7)
    out = model(torch.randn(3, c, h, w))
    assert out.shape == (3, 7)
    names = layer_names(model)
    assert set(default_layers(model)) <= set(names)


def test_convnet_layer_names_read_like_the_paper():
    model = build_model("convnet", in_channels=1, input_size=28, num_classes=10)
    assert default_layers(model) == [
        "conv1",
        "conv2",
        "conv3",
        "conv4",
        "conv5",
        "fc6",
        "fc7",
        "fc8",
    ]
    names = layer_names(model)
    for i in range(1, 6):
        assert f"conv{i}.conv" in names and f"conv{i}.relu" in names
    assert isinstance(model.conv3.conv, nn.Conv2d)
    # the block output is post-ReLU, as the paper's (in-place ReLU) blobs
    acts = {}
    model.conv3.register_forward_hook(lambda m, i, o: acts.setdefault("c3", o))
    model(torch.randn(2, 1, 28, 28))
    assert acts["c3"].min() >= 0
    assert acts["c3"].shape[1] == 96


def test_convnet_width_multiplier_scales_every_layer():
    small = ConvNet(width=0.5)
    big = ConvNet(width=2.0)
    assert small.conv1.conv.out_channels == 16 and big.conv1.conv.out_channels == 64
    assert small.fc6.linear.out_features == 128 and big.fc7.linear.out_features == 512


def test_convnet_pools_only_while_the_map_is_large_enough():
    model = ConvNet(input_size=8)
    assert model.fc6.linear.in_features == 64 * 1 * 1
    model = ConvNet(input_size=2)
    model(torch.randn(1, 1, 2, 2))


def test_mlp_names_and_depth():
    model = MLP(input_size=8, width=16, depth=4)
    assert default_layers(model) == ["fc1", "fc2", "fc3", "fc4"]
    assert isinstance(model.fc4, nn.Linear) and model.fc4.in_features == 16
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    single = MLP(input_size=8, depth=1)
    assert default_layers(single) == ["fc1"]


def test_resnet_has_batchnorm_and_residual_blocks():
    model = ResNet(in_channels=3, input_size=32, blocks=2)
    names = layer_names(model)
    assert "layer2.0.shortcut.conv" in names and "layer1.1.bn2" in names
    assert default_layers(model) == [
        "stem",
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer2.1",
        "layer3.0",
        "layer3.1",
        "fc",
    ]
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_user_model_by_module_factory_name():
    model = build_model(
        "tests.helpers.user_models:tiny", in_channels=1, input_size=8, num_classes=10, hidden=5
    )
    assert model[0].out_channels == 5
    # no declared analysis layers: the ReLU's output (not the conv's pre-activation) and the logits
    assert default_layers(model) == ["1", "3"]
    # a factory that takes no data arguments gets none
    model = build_model(
        "tests.helpers.user_models:fixed_shape", in_channels=1, input_size=8, num_classes=10
    )
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_describe_layers_marks_defaults_and_counts_parameters():
    rows = describe_layers(MLP(input_size=8, width=4, depth=2))
    by_name = {r["name"]: r for r in rows}
    assert by_name["fc1"]["default"] and by_name["fc2"]["default"]
    assert by_name["fc1.linear"]["parameters"] == 64 * 4 + 4
    assert not by_name["flatten"]["default"]


def test_available_and_register():
    assert available_architectures() == ["convnet", "mlp", "resnet", "vit"]
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("mlp", MLP)
    with pytest.raises(ValueError, match="may not contain ':'"):
        register_architecture("a:b", MLP)


@pytest.mark.parametrize(
    ("arch", "kwargs", "error", "match"),
    [
        ("alexnet", {}, ValueError, "Unknown architecture 'alexnet'.*convnet, mlp, resnet"),
        (3, {}, TypeError, "named by a string"),
        ("no_such_module_xyz:make", {}, ConvergentError, "Could not import module"),
        ("tests.helpers.user_models:missing", {}, ConvergentError, "has no attribute 'missing'"),
        ("tests.helpers.user_models:NOT_CALLABLE", {}, TypeError, "not a callable factory"),
        ("tests.helpers.user_models:not_a_module", {}, TypeError, "not a torch.nn.Module"),
        ("mlp", {"widht": 3}, ValueError, "does not take 'widht'"),
        ("convnet", {"width": 0}, ValueError, "'width' parameter of ConvNet must be > 0"),
        ("convnet", {"dropout": 1.0}, ValueError, "'dropout' parameter of ConvNet"),
        ("mlp", {"depth": 0}, ValueError, "'depth' parameter of MLP"),
        ("mlp", {"width": 2.5}, ValueError, "'width' parameter of MLP"),
        ("resnet", {"width": -1}, ValueError, "'width' parameter of ResNet"),
        ("resnet", {"blocks": 0}, ValueError, "'blocks' parameter of ResNet"),
    ],
)
def test_bad_architectures_raise_clear_errors(arch, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_model(arch, in_channels=1, input_size=8, num_classes=10, **kwargs)


def test_check_kwargs_refuses_unrecordable_values():
    assert check_kwargs({"width": 0.5, "sizes": (1, 2)}) == {"width": 0.5, "sizes": [1, 2]}
    with pytest.raises(TypeError, match="must be a number, string, bool or list"):
        check_kwargs({"act": nn.ReLU})
