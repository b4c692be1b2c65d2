"""Architectures: a registry of built-in models, user ``module:factory`` models, layer listing."""

from convergent.models._convnet import ConvNet
from convergent.models._mlp import MLP
from convergent.models._registry import (
    available_architectures,
    build_for,
    build_model,
    check_kwargs,
    default_layers,
    describe_layers,
    example_input,
    layer_names,
    parse_model_kwargs,
    register_architecture,
    resolve_factory,
    validate_model_kwargs,
)
from convergent.models._resnet import ResNet
from convergent.models._vit import ViT

__all__ = [
    "MLP",
    "ConvNet",
    "ResNet",
    "ViT",
    "available_architectures",
    "build_for",
    "build_model",
    "check_kwargs",
    "default_layers",
    "describe_layers",
    "example_input",
    "layer_names",
    "parse_model_kwargs",
    "register_architecture",
    "resolve_factory",
    "validate_model_kwargs",
]
