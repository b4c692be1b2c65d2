"""A permutation as a portable file: safetensors (one int64 array per group) + JSON metadata.

The metadata names every group with its size, the ``(parameter, axis, offset, repeat)`` entries it
permutes and the layers where its units can be read, plus the shape of every parameter involved, so
a file can be checked against a model before it is applied and is readable without convergent::

    format: "convergent-permutation", format_version: 1
    convention: "new unit i is old unit perm[i]"
    order: the group names in the order the forward pass creates them
    groups: {name: {size, axes: [[param, axis, offset, repeat], ...], layers: [...], heads, tie}}
            (heads > 1: attention units permuted head by head; groups with one tie share the head
            permutation)
    shapes: {param: [dims]}
    info: free description (method, similarity, the nets and their checksums, scores)

Nothing is unpickled: arrays are safetensors, the rest is JSON.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import load_arrays, save_arrays
from convergent.align._groups import (
    PermutationGroup,
    PermutationSpec,
    apply_permutation,
    find_permutation_groups,
)

PERMUTATION_FORMAT = "convergent-permutation"
CONVENTION = "new unit i is old unit perm[i]"


class PermutationMismatchError(ConvergentError):
    """A permutation file does not fit the model it is applied to."""


@dataclass
class PermutationFile:
    """A permutation read from (or to be written to) a file.

    Attributes
    ----------
    perms : dict of str to np.ndarray
        One int64 permutation per group name.
    spec : PermutationSpec
        The groups (sizes, permuted axes, layers) the permutations apply to.
    shapes : dict of str to tuple of int
        Shape of every parameter or buffer the groups touch, in the model the file was made for.
    info : dict
        Free JSON-able description (method, similarity, nets, scores).
    """

    perms: dict[str, np.ndarray]
    spec: PermutationSpec
    shapes: dict[str, tuple[int, ...]]
    info: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": PERMUTATION_FORMAT,
            "format_version": 1,
            "convention": CONVENTION,
            "order": list(self.spec.groups),
            "groups": {
                name: {
                    "size": g.size,
                    "axes": [list(a) for a in g.axes],
                    "layers": list(g.layers),
                    "heads": g.heads,
                    "tie": g.tie,
                }
                for name, g in self.spec.groups.items()
            },
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "info": self.info,
        }


def permutation_file(
    perms: Mapping[str, np.ndarray],
    spec: PermutationSpec,
    state: Mapping[str, torch.Tensor],
    info: Mapping[str, Any] | None = None,
) -> PermutationFile:
    """Bundle permutations with their groups and the shapes of the parameters they touch in ``state``."""
    touched = sorted({a[0] for g in spec.groups.values() for a in g.axes})
    shapes = {k: tuple(int(d) for d in state[k].shape) for k in touched}
    arrays = {name: np.asarray(perms[name], dtype=np.int64) for name in spec.groups}
    return PermutationFile(arrays, spec, shapes, dict(info or {}))


def save_permutation(path: str | os.PathLike, perm_file: PermutationFile) -> Path:
    """Write ``perm_file`` atomically as safetensors + JSON metadata; returns the path."""
    path = Path(path)
    save_arrays(path, perm_file.perms, perm_file.metadata())
    return path


def load_permutation(path: str | os.PathLike) -> PermutationFile:
    """Read a permutation file written by :func:`save_permutation`.

    Raises
    ------
    CorruptFileError
        The file is not a convergent permutation, or its arrays are not permutations of the sizes
        its metadata states.
    """
    arrays, meta = load_arrays(path)
    if meta.get("format") != PERMUTATION_FORMAT:
        raise CorruptFileError(
            f"{path} is not a convergent permutation file (format {meta.get('format')!r}, expected "
            f"{PERMUTATION_FORMAT!r}). Create one with `convergent align A B --out DIR`."
        )
    groups: dict[str, PermutationGroup] = {}
    perms: dict[str, np.ndarray] = {}
    entries = meta.get("groups", {})
    for name in meta.get("order", list(entries)):  # the order of the forward pass
        entry = entries[name]
        size = int(entry["size"])
        perm = arrays.get(name)
        if perm is None or perm.ndim != 1 or sorted(perm.tolist()) != list(range(size)):
            raise CorruptFileError(
                f"{path}: the array of group {name!r} is missing or not a permutation of {size}. "
                "The file is damaged: re-run `convergent align`."
            )
        axes = [(str(p), int(ax), int(off), int(rep)) for p, ax, off, rep in entry["axes"]]
        heads, tie = int(entry.get("heads", 1)), entry.get("tie")
        if heads < 1 or size % heads:
            raise CorruptFileError(
                f"{path}: group {name!r} of {size} units cannot be split into {heads} heads. The "
                "file is damaged: re-run `convergent align`."
            )
        groups[name] = PermutationGroup(
            name,
            size,
            axes,
            list(entry.get("layers", [])),
            heads,
            None if tie is None else str(tie),
        )
        perms[name] = perm.astype(np.int64)
    shapes = {k: tuple(int(d) for d in v) for k, v in meta.get("shapes", {}).items()}
    spec = PermutationSpec(groups, [])
    try:
        spec.check(perms)
    except ValueError as exc:
        raise CorruptFileError(
            f"{path}: {exc} The file is damaged: re-run `convergent align`."
        ) from exc
    return PermutationFile(perms, spec, shapes, dict(meta.get("info", {})))


def check_fits(
    perm_file: PermutationFile, model: nn.Module, example: torch.Tensor | None = None
) -> None:
    """Refuse a permutation file that does not fit ``model``.

    Every parameter the file permutes must exist in the model with the shape the file records. With
    ``example`` inputs, the model is also traced and its permutation groups must be exactly the
    file's (same names, sizes and axes), so a file made for a differently wired model with the same
    parameter names is refused too.

    Raises
    ------
    PermutationMismatchError
        Naming the first parameter or group that differs.
    """
    state = model.state_dict()
    what = type(model).__name__
    for param in perm_file.shapes:
        if param not in state:
            raise PermutationMismatchError(
                f"The permutation file does not fit the model: it permutes {param!r}, which the "
                f"{what} does not have. Was the file made for another architecture?"
            )
    for param in (k for k in state if k in perm_file.shapes):  # in the model's order
        shape = perm_file.shapes[param]
        if tuple(state[param].shape) != shape:
            raise PermutationMismatchError(
                f"The permutation file does not fit the model: {param!r} has shape "
                f"{tuple(state[param].shape)} in the {what}, the file expects {shape}. Check the "
                "architecture's width/depth arguments."
            )
    if example is None:
        return
    spec = find_permutation_groups(model, example)
    mine, theirs = set(spec.groups), set(perm_file.spec.groups)
    if mine != theirs:
        raise PermutationMismatchError(
            f"The permutation file does not fit the model: the {what} has groups "
            f"{sorted(mine - theirs)} that the file lacks and the file has groups "
            f"{sorted(theirs - mine)} that the model lacks."
        )
    for name, group in spec.groups.items():
        other = perm_file.spec.groups[name]
        if group.size != other.size or sorted(group.axes) != sorted(other.axes):
            raise PermutationMismatchError(
                f"The permutation file does not fit the model: group {name!r} permutes "
                f"{other.size} units over {len(other.axes)} axes in the file but {group.size} units "
                f"over {len(group.axes)} axes in the {what}."
            )


def apply_permutation_file(
    model: nn.Module,
    perm_file: PermutationFile | str | os.PathLike,
    example: torch.Tensor | None = None,
) -> nn.Module:
    """A copy of ``model`` with the file's permutation applied, after :func:`check_fits`."""
    if not isinstance(perm_file, PermutationFile):
        perm_file = load_permutation(perm_file)
    check_fits(perm_file, model, example)
    out = copy.deepcopy(model)
    out.load_state_dict(apply_permutation(model.state_dict(), perm_file.spec, perm_file.perms))
    return out
