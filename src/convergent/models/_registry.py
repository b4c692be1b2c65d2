"""Architecture registry: built-in names, user ``package.module:factory`` models, their arguments
(checked against the factory's signature before anything is built), and layer listing."""

from __future__ import annotations

import inspect
import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent._imports import import_user_module
from convergent.models._arguments import check_value, expected, parameters
from convergent.models._convnet import ConvNet
from convergent.models._mlp import MLP
from convergent.models._resnet import ResNet
from convergent.models._trace import WEIGHTED, choose_default_layers, trace
from convergent.models._vit import ViT

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "mlp": MLP,
    "resnet": ResNet,
    "vit": ViT,
}

#: Arguments that describe the data rather than the architecture; the trainer fills them in.
DATA_ARGUMENTS = ("in_channels", "input_size", "num_classes")

#: Input shape (C, H, W) of the models built by :func:`build_model`, so that their layers can be
#: traced in forward order without an example input (weak: it never keeps a model alive).
_INPUT_SHAPES: weakref.WeakKeyDictionary[nn.Module, tuple[int, int, int]] = (
    weakref.WeakKeyDictionary()
)


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
    """The callable behind an architecture name: a built-in name or ``package.module:factory``.

    ``package.module`` is imported from ``sys.path`` or, failing that, from the working directory
    (as ``python -m`` does), so ``--model mymodels:make`` works from the directory that holds
    ``mymodels.py``.
    """
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
    module = import_user_module(module_name, arch)
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


# ----------------------------------------------------------------------------------------------
# architecture arguments, checked against the factory's signature


def validate_model_kwargs(arch: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Check architecture arguments against the factory's signature before anything is built.

    A name the factory does not take raises ``ValueError`` listing the ones it takes; a value of the
    wrong kind for the parameter's annotation (or, without one, its default) raises ``TypeError``:
    ``--set width=abc`` for ``convnet`` says "The 'width' parameter of ConvNet (architecture
    'convnet') must be a number (its default is 1.0). Got 'abc' instead.". Range checks are the
    factory's own.

    Returns
    -------
    dict
        ``kwargs`` as a new dict.
    """
    factory = resolve_factory(arch)
    params = parameters(factory)
    kwargs = dict(kwargs)
    if params is None:
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = []
    else:
        unknown = [k for k in kwargs if k not in params]
    if unknown:
        takes = [p for p in params if p not in DATA_ARGUMENTS]
        raise ValueError(
            f"Architecture {arch!r} does not take {', '.join(map(repr, unknown))}. "
            f"It takes: {', '.join(takes) or 'no arguments'}."
        )
    for key, value in kwargs.items():
        if key in params:
            check_value(arch, factory, params[key], value)
    return kwargs


def parse_model_kwargs(pairs: Sequence[str] | None, arch: str | None = None) -> dict[str, Any]:
    """``["width=0.5", "depth=4"]`` (``--set`` options) -> ``{"width": 0.5, "depth": 4}``.

    Values are read as JSON (numbers, true/false, null, lists) and otherwise kept as text; for an
    ``arch`` whose parameter takes only strings the text is kept as it is (``--set act=1e-3`` stays
    ``'1e-3'``). The values are then checked with :func:`validate_model_kwargs` when ``arch`` is
    given.
    """
    params = parameters(resolve_factory(arch)) if arch is not None else None
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(
                f"--set expects KEY=VALUE (e.g. --set width=0.5). Got {pair!r} instead."
            )
        if key in out:
            raise ValueError(
                f"--set {key} is given twice; give each architecture argument once. Got {pair!r} "
                "after an earlier value."
            )
        param = (params or {}).get(key)
        if param is not None and expected(param)[0] == {"str"}:
            out[key] = text
            continue
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return validate_model_kwargs(arch, out) if arch is not None else out


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
        The data's shape; passed on to factories that accept them (all built-ins do);
        ``input_size`` reaches a factory as an int for square images, else as ``(H, W)``. The model's
        layers can then be listed in forward order without an example input.
    **kwargs
        Architecture parameters (``width``, ``depth``, ...), checked with
        :func:`validate_model_kwargs` and passed to the factory.

    Returns
    -------
    torch.nn.Module
    """
    factory = resolve_factory(arch)
    validate_model_kwargs(arch, kwargs)
    if isinstance(input_size, (tuple, list)) and len(input_size) == 2:
        # an int for square images (what a user's factory most likely expects), else (H, W)
        h, w = (int(v) for v in input_size)
        input_size = h if h == w else (h, w)
    data_args = {"in_channels": in_channels, "input_size": input_size, "num_classes": num_classes}
    params = parameters(factory)
    accepts_any = params is None or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    call = dict(kwargs)
    for key, value in data_args.items():
        if value is not None and key not in call and (accepts_any or key in (params or {})):
            call[key] = value
    model = factory(**call)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The factory of architecture {arch!r} returned a {type(model).__name__}, "
            "not a torch.nn.Module."
        )
    if in_channels is not None and input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        _INPUT_SHAPES[model] = (int(in_channels), int(h), int(w))
    return model


# ----------------------------------------------------------------------------------------------
# layers


def build_for(arch: str, kwargs: Mapping[str, Any] | None, data: Any = None) -> nn.Module:
    """Build an architecture for a dataset: the one place data shapes meet architectures.

    Parameters
    ----------
    arch : str
        Built-in name or ``package.module:factory``.
    kwargs : mapping, optional
        Architecture arguments.
    data : Dataset, mapping or None
        Anything with ``input_shape`` (C, H, W) and ``num_classes`` (a ``Dataset``, or a manifest's
        dataset record); None for inputs that are not images (token files): then no data
        argument is passed. Factories that take ``input_size`` get an int for square images and
        ``(H, W)`` otherwise.
    """
    kwargs = dict(kwargs or {})
    if data is None:
        return build_model(arch, **kwargs)
    get = data.get if isinstance(data, Mapping) else lambda key: getattr(data, key)
    c, h, w = get("input_shape")
    return build_model(
        arch,
        in_channels=int(c),
        input_size=(int(h), int(w)),
        num_classes=int(get("num_classes")),
        **kwargs,
    )


def layer_names(model: nn.Module) -> list[str]:
    """Every layer of ``model`` by its dotted ``named_modules()`` path (the root excluded), in order."""
    return [name for name, _ in model.named_modules() if name]


def example_input(
    model: nn.Module, input_shape: Sequence[int] | None = None
) -> torch.Tensor | None:
    """A batch of two zero inputs of shape ``input_shape`` (C, H, W), or of the shape the model was
    built for by :func:`build_model`, on the model's device and dtype; None if neither is known."""
    shape = tuple(input_shape) if input_shape is not None else _INPUT_SHAPES.get(model)
    if shape is None:
        return None
    tensor = next(
        (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None
    )
    dtype = tensor.dtype if tensor is not None else torch.get_default_dtype()
    device = tensor.device if tensor is not None else torch.device("cpu")
    return torch.zeros((2, *shape), dtype=dtype, device=device)


def default_layers(model: nn.Module, example: Any = None) -> list[str]:
    """The layers convergent analyses when none are named, in the order the forward pass runs them.

    Built-in models declare them (``model.analysis_layers``: the paper's conv1..conv5, fc6..fc8,
    whose outputs are post-ReLU). For other models one forward pass on ``example`` (default: zeros
    of the shape the model was built for by :func:`build_model`) picks the outputs of activation
    functions, where the model has activation modules, and the layer whose output is the model's
    output (the logits); see :func:`convergent.models._trace.choose_default_layers` for reused and
    functional activations.

    Without an example and without a known input shape the forward order cannot be seen: then
    every Conv/Linear layer is returned in ``named_modules()`` order (pre-activation outputs); pass
    an example batch to get the layers above.

    Parameters
    ----------
    model : torch.nn.Module
    example : torch.Tensor or tuple, optional
        A batch the model accepts, shape (B, C, H, W) for image models.

    Returns
    -------
    list of str
        Dotted module names in forward order.
    """
    declared = getattr(model, "analysis_layers", None)
    if declared:
        return list(declared)
    explicit = example is not None
    x = example if explicit else example_input(model)
    if x is not None:
        try:
            layers = choose_default_layers(trace(model, x))
        except ConvergentError:
            if explicit:
                raise
            layers = None  # the recorded shape does not fit this model: fall back below
        if layers is not None:
            if not layers:
                raise ConvergentError(
                    f"convergent found no layer to analyse by default in {type(model).__name__}: "
                    "it has no activation module, Conv or Linear layer whose output is a tensor. "
                    "Name the layers yourself (--layers; `convergent layers --all` lists them)."
                )
            return layers
    return [name for name, m in model.named_modules() if name and isinstance(m, WEIGHTED)]


def describe_layers(model: nn.Module, example: Any = None) -> list[dict[str, Any]]:
    """One record per module, in forward order when the model can be run on an example.

    Parameters
    ----------
    model : torch.nn.Module
    example : torch.Tensor or tuple, optional
        A batch the model accepts (default: zeros of the shape the model was built for by
        :func:`build_model`). Without one, modules come in ``named_modules()`` order and the
        shape fields are None.

    Returns
    -------
    list of dict
        ``name`` (dotted path), ``type``, ``calls`` (times run in one forward pass; more than one
        means a module object reused in ``forward``, which cannot be analysed as one layer),
        ``output_shape`` (per input, batch dimension left out), ``layout`` ("vector",
        "channels_first" for (C, H, W) maps and Conv1d (C, L) outputs, "tokens" for (T, C)),
        ``units`` (channels of a map, features of a vector, last dimension of tokens),
        ``samples_per_input`` (spatial positions or tokens each input contributes), ``parameters``
        (the module's own, not its children's) and ``default`` (whether it is analysed by default).
    """
    x = example if example is not None else example_input(model)
    traced = trace(model, x) if x is not None else None
    defaults = set(default_layers(model, example))
    rows = []
    order = (
        [(t.name, t.module, t) for t in traced]
        if traced is not None
        else [(n, m, None) for n, m in model.named_modules() if n]
    )
    for name, module, info in order:
        rows.append(
            {
                "name": name,
                "type": type(module).__name__,
                "calls": info.calls if info is not None else None,
                "output_shape": list(info.shape[1:]) if info and info.shape else None,
                "layout": info.layout if info is not None else None,
                "units": info.units if info is not None else None,
                "samples_per_input": info.samples_per_input if info is not None else None,
                "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
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
