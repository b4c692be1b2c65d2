"""Architecture registry: built-in names, user ``package.module:factory`` models, and layer listing."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from convergent._errors import ConvergentError
from convergent.models._convnet import ConvNet
from convergent.models._mlp import MLP
from convergent.models._resnet import ResNet
from convergent.models._vit import ViT

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "mlp": MLP,
    "resnet": ResNet,
    "vit": ViT,
}

#: Arguments that describe the data rather than the architecture; the trainer fills them in.
DATA_ARGUMENTS = ("in_channels", "input_size", "num_classes")


def available_architectures() -> list[str]:
    """Names of the built-in architectures."""
    return sorted(_REGISTRY)


def register_architecture(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a factory to the registry under ``name`` (it must not shadow a built-in name)."""
    if name in _REGISTRY:
        raise ValueError(f"An architecture named {name!r} is already registered.")
    if ":" in name:
        raise ValueError(f"Architecture names may not contain ':'. Got {name!r} instead.")
    _REGISTRY[name] = factory


def resolve_factory(arch: str) -> Callable[..., nn.Module]:
    """The callable behind an architecture name: a built-in name or ``package.module:factory``."""
    if not isinstance(arch, str):
        raise TypeError(f"An architecture is named by a string. Got {type(arch).__name__} instead.")
    if arch in _REGISTRY:
        return _REGISTRY[arch]
    if ":" not in arch:
        raise ValueError(
            f"Unknown architecture {arch!r}. Built-in architectures: "
            f"{', '.join(available_architectures())}; or name your own as 'package.module:factory'."
        )
    module_name, _, attr = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConvergentError(
            f"Could not import module {module_name!r} for architecture {arch!r} ({exc}). Check that "
            "the package is installed or on PYTHONPATH."
        ) from exc
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ConvergentError(
                f"Module {module_name!r} has no attribute {attr!r} (architecture {arch!r})."
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise TypeError(f"{arch!r} names a {type(factory).__name__}, not a callable factory.")
    return factory


def build_model(
    arch: str,
    *,
    in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build an architecture by name.

    Parameters
    ----------
    arch : str
        A built-in name (``convnet``, ``mlp``, ``resnet``, ``vit``) or ``package.module:factory``.
    in_channels, input_size, num_classes : optional
        The data's shape; passed on to factories that accept them (all built-ins do).
    **kwargs
        Architecture parameters (``width``, ``depth``, ...), passed to the factory.

    Returns
    -------
    torch.nn.Module
    """
    factory = resolve_factory(arch)
    data_args = {"in_channels": in_channels, "input_size": input_size, "num_classes": num_classes}
    try:
        params = inspect.signature(factory).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = set(params)
    except (TypeError, ValueError):  # builtins without a signature
        accepts_any, accepted = True, set()
    call = dict(kwargs)
    for key, value in data_args.items():
        if value is not None and key not in call and (accepts_any or key in accepted):
            call[key] = value
    unknown = [k for k in kwargs if not accepts_any and k not in accepted]
    if unknown:
        raise ValueError(
            f"Architecture {arch!r} does not take {', '.join(map(repr, unknown))}. "
            f"It takes: {', '.join(p for p in accepted if p not in DATA_ARGUMENTS) or 'no arguments'}."
        )
    model = factory(**call)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The factory of architecture {arch!r} returned a {type(model).__name__}, "
            "not a torch.nn.Module."
        )
    return model


def layer_names(model: nn.Module) -> list[str]:
    """Every layer of ``model`` by its dotted ``named_modules()`` path (the root excluded), in order."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module) -> list[str]:
    """The layers convergent analyses when none are named.

    Built-in models declare them (``model.analysis_layers``: the paper's conv1..conv5, fc6..fc8, whose
    outputs are post-ReLU); for other models, every ``Conv*d`` and ``Linear`` layer.
    """
    declared = getattr(model, "analysis_layers", None)
    if declared:
        return list(declared)
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [name for name, m in model.named_modules() if name and isinstance(m, kinds)]


def describe_layers(model: nn.Module) -> list[dict[str, Any]]:
    """One record per layer: name, module type, own parameter count, whether it is a default layer."""
    defaults = set(default_layers(model))
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(
            {
                "name": name,
                "type": type(module).__name__,
                "parameters": own,
                "default": name in defaults,
            }
        )
    return rows


def check_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate that model keyword arguments are JSON-able scalars/lists (they go into manifests)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(value, (int, float, str, bool, list, tuple, type(None))):
            raise TypeError(
                f"Model argument {key!r} must be a number, string, bool or list to be recorded in "
                f"the manifest. Got {type(value).__name__} instead."
            )
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
