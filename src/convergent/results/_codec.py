"""One codec for every typed result: a dataclass <-> (JSON-able dict, named arrays).

Fields marked as arrays (``metadata={"array": True}``, see ``convergent.analysis.array_field``)
go to the arrays, under the path of the field (``pairs/seed0~seed1/one_to_one/semi_sorted``);
nested dataclasses, lists and dicts of them are followed; everything else is JSON. Decoding needs
only the target class: nested classes come from the field annotations. So writers and readers of
results agree on one typed object, not on hand-written keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _is_array_field(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("array"))


def encode(obj: Any, prefix: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """``(json_part, arrays)`` of a dataclass instance (or a list / dict of them)."""
    arrays: dict[str, np.ndarray] = {}
    return _encode(obj, prefix, arrays), arrays


def _encode(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            path = f"{prefix}{f.name}"
            if _is_array_field(f):
                if isinstance(value, Mapping):
                    for k, v in value.items():
                        arrays[f"{path}/{k}"] = np.ascontiguousarray(v)
                    out[f.name] = {"arrays": list(value)}
                elif value is not None:
                    arrays[path] = np.ascontiguousarray(value)
                continue
            out[f.name] = _encode(value, f"{path}/", arrays)
        return out
    if isinstance(obj, Mapping):
        return {str(k): _encode(v, f"{prefix}{k}/", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{prefix}{i}/", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def decode(cls: type[T], data: Any, arrays: Mapping[str, np.ndarray], prefix: str = "") -> T:
    """The instance of ``cls`` that :func:`encode` turned into ``(data, arrays)``."""
    return _decode(cls, data, arrays, prefix)


def _decode(tp: Any, data: Any, arrays: Mapping[str, np.ndarray], prefix: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], data, arrays, prefix) if len(inner) == 1 else data
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            path = f"{prefix}{f.name}"
            if _is_array_field(f):
                if isinstance(data.get(f.name), Mapping) and "arrays" in data[f.name]:
                    kwargs[f.name] = {k: arrays[f"{path}/{k}"] for k in data[f.name]["arrays"]}
                elif path in arrays:
                    kwargs[f.name] = arrays[path]
                else:
                    kwargs[f.name] = None
                continue
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name], arrays, f"{path}/")
        return tp(**kwargs)
    if origin in (list, tuple) and args and data is not None:
        return [_decode(args[0], v, arrays, f"{prefix}{i}/") for i, v in enumerate(data)]
    if origin is dict and len(args) == 2 and data is not None:
        return {k: _decode(args[1], v, arrays, f"{prefix}{k}/") for k, v in data.items()}
    return data
