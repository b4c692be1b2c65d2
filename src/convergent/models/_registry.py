"""Architecture registry: built-in names, user ``package.module:factory`` models, their arguments
(checked against the factory's signature before anything is built), and layer listing."""

from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent.models._convnet import ConvNet
from convergent.models._mlp import MLP
from convergent.models._resnet import ResNet
from convergent.models._trace import WEIGHTED, choose_default_layers, trace

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "mlp": MLP,
    "resnet": ResNet,
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


# ----------------------------------------------------------------------------------------------
# user factories: importing ``package.module``


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says that ``module_name`` itself (or a package above it) is not found, rather
    than that the module was found and one of its own imports failed."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def _on_path(directory: str) -> bool:
    real = os.path.realpath(directory)
    return any(os.path.realpath(entry or os.curdir) == real for entry in sys.path)


def _import_failed(module_name: str, arch: str, exc: BaseException) -> ConvergentError:
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import
        spec = None
    where = spec.origin if spec is not None and spec.origin else f"module {module_name!r}"
    return ConvergentError(
        f"Module {module_name!r} of architecture {arch!r} was found but importing it failed "
        f"({type(exc).__name__}: {exc}). Fix the error in {where} (or install what it imports)."
    )


def _import_user_module(module_name: str, arch: str) -> types.ModuleType:
    """Import ``module_name`` as ``python -m`` would find it: from ``sys.path`` and, failing that,
    from the working directory.

    The working directory is appended to ``sys.path`` (after every installed package, so it can
    shadow nothing) only when the module is found nowhere else, and it stays there when that import
    succeeds: the module may import its neighbours lazily, and worker processes started with
    ``spawn`` copy ``sys.path`` to import it again, as they would under ``python -m``. A failed
    attempt leaves ``sys.path`` as it was.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):
            raise _import_failed(module_name, arch, exc) from exc
        error: ModuleNotFoundError = exc
    except Exception as exc:  # noqa: BLE001 - a user module may raise anything on import
        raise _import_failed(module_name, arch, exc) from exc
    cwd = os.getcwd()
    if not _on_path(cwd):
        sys.path.append(cwd)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - a user module may raise anything on import
            if not isinstance(exc, ModuleNotFoundError) or not _is_missing(exc, module_name):
                failure = _import_failed(module_name, arch, exc)
                sys.path.remove(cwd)
                raise failure from exc
            sys.path.remove(cwd)
            error = exc
    relative = module_name.replace(".", os.sep)
    searched = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    others = ", ".join(dict.fromkeys(p for p in searched if p != cwd)) or "none"
    raise ConvergentError(
        f"Could not import module {module_name!r} for architecture {arch!r} ({error}). Python "
        f"looked for {relative}.py (or a package {relative}{os.sep}) in the working directory "
        f"{cwd} and in the other directories on its path: {others}. Run "
        f"convergent from the directory that holds {relative}.py, add that directory to "
        "PYTHONPATH (PYTHONPATH=/path/to/dir convergent ...), or install your package "
        "(pip install -e /path/to/project)."
    ) from error


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
    module = _import_user_module(module_name, arch)
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

_KIND_TEXT = {
    "integer": "an integer",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "none": "null (None)",
}


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The factory's parameters with evaluated annotations where possible (None: no signature)."""
    try:
        return dict(inspect.signature(factory, eval_str=True).parameters)
    except Exception:  # noqa: BLE001 - an annotation that cannot be evaluated: use the raw ones
        pass
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return None


def _kinds_of_annotation(annotation: Any) -> set[str] | None:
    """Kinds of value an annotation admits, or None where convergent cannot tell."""
    if annotation is None or annotation is type(None):
        return {"none"}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_kinds_of_annotation(arg) for arg in typing.get_args(annotation)]
        return None if any(p is None for p in parts) else set().union(*parts)  # type: ignore[arg-type]
    if annotation is bool:
        return {"bool"}
    if annotation is int:
        return {"integer"}
    if annotation is float:
        return {"number"}
    if annotation is str:
        return {"str"}
    if annotation in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        return {"list"}
    return None


def _expected(param: inspect.Parameter) -> tuple[set[str] | None, tuple[Any, ...] | None]:
    """(kinds, literal choices) a parameter admits, from its annotation, else from its default."""
    annotation = param.annotation
    if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
        if typing.get_origin(annotation) is typing.Literal:
            return None, typing.get_args(annotation)
        return _kinds_of_annotation(annotation), None
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return None, None
    if isinstance(default, bool):
        return {"bool"}, None
    if isinstance(default, (int, float)):
        return {"number"}, None
    if isinstance(default, str):
        return {"str"}, None
    if isinstance(default, (list, tuple)):
        return {"list"}, None
    return None, None


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "list"
    return "other"


def _owner(factory: Callable[..., Any]) -> str:
    return getattr(factory, "__qualname__", None) or getattr(factory, "__name__", repr(factory))


def _check_value(
    arch: str, factory: Callable[..., Any], param: inspect.Parameter, value: Any
) -> None:
    kinds, choices = _expected(param)
    default = (
        "" if param.default is inspect.Parameter.empty else f" (its default is {param.default!r})"
    )
    head = f"The {param.name!r} parameter of {_owner(factory)} (architecture {arch!r}) must be"
    if choices is not None:
        if value not in choices:
            raise ValueError(
                f"{head} one of {', '.join(map(repr, choices))}{default}. Got {value!r} instead."
            )
        return
    if kinds is None:
        return
    kind = _kind_of_value(value)
    if kind == "number" and "integer" in kinds and "number" not in kinds:
        # a float for an int parameter is a number of the wrong value, as MLP(width=2.5)
        whole = math.isfinite(value) and value == int(value)
        hint = f" (write {int(value)})" if whole else ""
        raise ValueError(f"{head} an integer{default}. Got {value!r} instead{hint}.")
    if not (kind in kinds or (kind == "integer" and "number" in kinds)):
        expected = " or ".join(_KIND_TEXT[k] for k in sorted(kinds, key=list(_KIND_TEXT).index))
        raise TypeError(f"{head} {expected}{default}. Got {value!r} instead.")
    if kind == "number" and not math.isfinite(value):
        raise ValueError(f"{head} a finite number{default}. Got {value!r} instead.")


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
    params = _parameters(factory)
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
            _check_value(arch, factory, params[key], value)
    return kwargs


def parse_model_kwargs(pairs: Sequence[str] | None, arch: str | None = None) -> dict[str, Any]:
    """``["width=0.5", "depth=4"]`` (``--set`` options) -> ``{"width": 0.5, "depth": 4}``.

    Values are read as JSON (numbers, true/false, null, lists) and otherwise kept as text; for an
    ``arch`` whose parameter takes only strings the text is kept as it is (``--set act=1e-3`` stays
    ``'1e-3'``). The values are then checked with :func:`validate_model_kwargs` when ``arch`` is
    given.
    """
    params = _parameters(resolve_factory(arch)) if arch is not None else None
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
        if param is not None and _expected(param)[0] == {"str"}:
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
        A built-in name (``convnet``, ``mlp``, ``resnet``) or ``package.module:factory``.
    in_channels, input_size, num_classes : optional
        The data's shape; passed on to factories that accept them (all built-ins do). The model's
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
    data_args = {"in_channels": in_channels, "input_size": input_size, "num_classes": num_classes}
    params = _parameters(factory)
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
