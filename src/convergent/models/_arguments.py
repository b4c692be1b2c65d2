"""Architecture arguments checked against a factory's signature: the kinds of value each parameter
admits, read from its annotation or, without one, from its default."""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any

_KIND_TEXT = {
    "integer": "an integer",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "none": "null (None)",
}


def parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
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


def expected(param: inspect.Parameter) -> tuple[set[str] | None, tuple[Any, ...] | None]:
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


def check_value(
    arch: str, factory: Callable[..., Any], param: inspect.Parameter, value: Any
) -> None:
    """Raise ``TypeError`` for a value of a kind the parameter does not admit, ``ValueError`` for a
    non-integer number where an integer is needed, a non-finite number, or a value outside a
    ``Literal``; parameters whose admitted kinds cannot be told are not checked."""
    kinds, choices = expected(param)
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
        wanted = " or ".join(_KIND_TEXT[k] for k in sorted(kinds, key=list(_KIND_TEXT).index))
        raise TypeError(f"{head} {wanted}{default}. Got {value!r} instead.")
    if kind == "number" and not math.isfinite(value):
        raise ValueError(f"{head} a finite number{default}. Got {value!r} instead.")
