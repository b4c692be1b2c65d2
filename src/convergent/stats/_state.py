"""What every streaming statistic shares: its state declared once, and everything built on that.

A statistic (``Moments``, ``TopK``, ``JointHistogram``, ...) lists its state arrays in
``state_fields`` -- name, dtype, and how two shards of that array combine -- and its constructor
arguments in :meth:`Statistic.config`. From that one declaration this module provides:

- ``save`` / ``load``: one safetensors file (the arrays) with JSON metadata (kind, config, free
  metadata), every array checked for presence, dtype, shape and finiteness on the way in;
- ``copy`` and ``==``;
- ``merge``: the declared rules (``sum``, ``max``, ``same``) applied field by field, or the class's
  own exact combination (``custom``, e.g. Chan's parallel formula for moments);
- :func:`all_merge` (in :mod:`convergent.stats._distributed`): the one rank merge under
  ``torch.distributed``, which gathers every declared array from every rank and folds the shards
  with ``merge`` in rank order, so a statistic needs no distributed code of its own.

The registry of kinds lets :func:`load_statistic` read any statistic file without knowing its class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from convergent._errors import CorruptFileError
from convergent._io import load_arrays, save_arrays

#: How a state array of two shards combines.
MERGE_RULES = ("sum", "max", "same", "custom")
_REGISTRY: dict[str, type[Statistic]] = {}
S = TypeVar("S", bound="Statistic")


@dataclass(frozen=True)
class StateField:
    """One state array of a statistic.

    Attributes
    ----------
    name : str
        The array's key in files and rank exchanges; the statistic holds it in the attribute
        :attr:`attr`.
    dtype : str
        ``float64`` or ``int64`` (what files and rank exchanges carry).
    merge : str
        ``sum``: add the shards; ``max``: elementwise maximum; ``same``: must be equal (e.g. bin
        edges); ``custom``: combined by the class's ``_merge_custom`` (the fields that only make
        sense together, such as count, mean and co-moment).
    doc : str
        What the array holds (shape in terms of the config).
    """

    name: str
    dtype: str
    merge: str
    doc: str = ""
    #: how messages name a bad array of this field: "inconsistent <what>" (default: "<Class>
    #: arrays") and "non-finite <noun>" (default: the class's ``noun``)
    what: str = ""
    noun: str = ""

    @property
    def attr(self) -> str:
        """The attribute holding the array: ``_`` + the name (dots become underscores)."""
        return "_" + self.name.replace(".", "_")

    def __post_init__(self) -> None:
        if self.merge not in MERGE_RULES:
            raise ValueError(f"StateField merge must be one of {MERGE_RULES}. Got {self.merge!r}.")
        if self.dtype not in ("float64", "int64"):
            raise ValueError(f"StateField dtype must be float64 or int64. Got {self.dtype!r}.")


class Statistic:
    """Base of every streaming, exactly mergeable statistic (pure data: no model, hook or file
    besides its own save/load).

    Subclasses set ``kind`` (a stable name written to files), ``noun`` (for messages) and
    ``state_fields``; implement ``config()`` (JSON-able constructor arguments),
    ``_shapes()`` (the expected shape of every state array for this config), ``update`` and, for
    ``custom`` fields, ``_merge_custom(other)``. State arrays live as attributes named like the
    fields. ``metadata`` is a free JSON-able dict saved with the state.
    """

    kind: ClassVar[str] = ""
    noun: ClassVar[str] = "statistics"
    state_fields: ClassVar[tuple[StateField, ...]] = ()
    format_version: ClassVar[int] = 2
    metadata: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    # ------------------------------------------------------------------------------------------
    # the declaration's contract

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments: ``type(self)(**config)`` is an empty statistic of the
        same shape."""
        raise NotImplementedError

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of every state array (``-1`` for a free dimension)."""
        raise NotImplementedError

    def _merge_custom(self, other: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} declares custom fields but no merge.")

    @classmethod
    def _empty(cls: type[S], config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> S:
        """An empty statistic of ``config`` (before its state is set): ``cls(**config)`` unless
        the constructor takes part of the state (e.g. bin edges)."""
        return cls(**dict(config))

    # ------------------------------------------------------------------------------------------
    # generic behaviour

    def state(self) -> dict[str, np.ndarray]:
        """The declared state arrays, by name, in the declared dtypes."""
        return {f.name: np.asarray(getattr(self, f.attr), dtype=f.dtype) for f in self.state_fields}

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        for f in self.state_fields:
            setattr(self, f.attr, np.array(arrays[f.name], dtype=f.dtype))

    @classmethod
    def from_state(
        cls: type[S],
        config: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        metadata: Mapping[str, Any] | None = None,
    ) -> S:
        """A statistic of ``config`` holding ``arrays`` (copied, cast to the declared dtypes)."""
        out = cls._empty(config, arrays)
        out._set_state(arrays)
        out.metadata = dict(metadata or {})
        return out

    def copy(self: S) -> S:
        """An independent copy (state, config and metadata)."""
        return type(self).from_state(self.config(), self.state(), self.metadata)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        if self.config() != other.config():  # type: ignore[union-attr]
            return False
        mine, theirs = self.state(), other.state()  # type: ignore[union-attr]
        return all(np.array_equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]

    def _check_mergeable(self, other: Any) -> None:
        if type(other) is not type(self):
            raise TypeError(
                f"{type(self).__name__}.merge expects a {type(self).__name__}. Got "
                f"{type(other).__name__} instead."
            )
        if other.config() != self.config():
            raise ValueError(
                f"Cannot merge {type(self).__name__} of {other.config()} into "
                f"{type(self).__name__} of {self.config()}."
            )

    def merge(self: S, other: S) -> S:
        """Fold another shard of the same statistic into this one (exact); returns ``self``."""
        self._check_mergeable(other)
        if any(f.merge == "custom" for f in self.state_fields):
            self._merge_custom(other)
        simple = [f for f in self.state_fields if f.merge != "custom"]
        if simple:
            mine, theirs = self.state(), other.state()
            for f in simple:
                if f.merge == "sum":
                    mine[f.name] = mine[f.name] + theirs[f.name]
                elif f.merge == "max":
                    mine[f.name] = np.maximum(mine[f.name], theirs[f.name])
                elif not np.array_equal(mine[f.name], theirs[f.name]):  # "same"
                    raise ValueError(
                        f"Cannot merge {type(self).__name__} shards whose {f.name!r} differ; they "
                        "must be built from the same setup (e.g. the same bin edges)."
                    )
            self._set_state(mine)
        return self

    # ------------------------------------------------------------------------------------------
    # files

    def save(self, path: str | os.PathLike) -> None:
        """Write the state (safetensors) with kind, config and metadata (JSON header)."""
        save_arrays(
            path,
            {k: np.ascontiguousarray(v) for k, v in self.state().items()},
            {
                "kind": self.kind,
                "format_version": self.format_version,
                "config": self.config(),
                "metadata": self.metadata,
            },
        )

    @classmethod
    def load(cls: type[S], path: str | os.PathLike) -> S:
        """Read a file written by :meth:`save` (of this class or a subclass); refuses damaged,
        foreign or inconsistent files, naming the problem."""
        arrays, meta = load_arrays(path)
        kind = meta.get("kind")
        target = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if target is None or not issubclass(target, cls):
            cls._wrong_kind(path, kind)
        return target._from_file(path, arrays, meta)

    @classmethod
    def _wrong_kind(cls, path: Any, kind: Any) -> None:
        raise CorruptFileError(f"{path} is not a convergent {cls.__name__} file (kind {kind!r}).")

    @classmethod
    def _from_file(
        cls: type[S], path: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> S:
        config = cls._config_from_file(path, arrays, meta)
        missing = [f.name for f in cls.state_fields if f.name not in arrays]
        if missing:
            raise CorruptFileError(
                f"{path} lacks {missing[0]!r} and cannot be read as {cls.__name__}."
            )
        try:
            empty = cls._empty(config, arrays)
        except (TypeError, ValueError, KeyError) as exc:
            raise CorruptFileError(
                f"{path} has an unusable {cls.__name__} config ({exc})."
            ) from exc
        shapes = empty._shapes()
        for f in cls.state_fields:
            arr, want = arrays[f.name], shapes[f.name]
            what = f.what or f"{cls.__name__} arrays"
            if (
                len(arr.shape) != len(want)
                or any(w != -1 and w != s for w, s in zip(want, arr.shape))
                or np.dtype(arr.dtype).kind != np.dtype(f.dtype).kind
            ):
                raise CorruptFileError(
                    f"{path} has inconsistent {what}: {f.name!r} is {arr.dtype} of shape "
                    f"{arr.shape}, expected {f.dtype} of shape {want} for {config}."
                )
            if not np.isfinite(arr).all():
                raise CorruptFileError(
                    f"{path} holds non-finite {f.noun or cls.noun} ({f.name!r})."
                )
        return cls.from_state(config, arrays, meta.get("metadata", {}))

    @classmethod
    def _config_from_file(
        cls, path: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> dict[str, Any]:
        config = meta.get("config")
        if not isinstance(config, dict):
            raise CorruptFileError(f"{path} has no {cls.__name__} config in its header.")
        return config


def load_statistic(path: str | os.PathLike) -> Statistic:
    """Read any statistic file written by ``save``: the class comes from the file's kind."""
    return Statistic.load(path)
