"""Interpolation results (``interpolation/``, written by ``convergent interpolate``): their reader,
so that the report reads them like any other results.

``interpolation.json`` holds, for the naive path between two nets and the aligned (and repaired)
ones, the loss and accuracy at every alpha on the train and test inputs, the barriers and their
definitions, the endpoints' own evaluation, the settings, and (when a zoo was merged) the merged
net next to its members, their naive average and their ensemble.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import read_json

INTERPOLATION_FORMAT = "convergent-interpolation"
INTERPOLATION_FILE = "interpolation.json"


@dataclass
class Interpolation:
    """The contents of an ``interpolation.json``.

    Attributes
    ----------
    endpoints : dict
        ``{net: {split: {"loss", "accuracy"}}}`` of the two nets (A first).
    order : list of str
        The curves in the order they were made (naive first).
    curves : dict
        Per curve: ``alphas``, ``curves`` (``{split: {"loss": [...], "accuracy": [...]}}``),
        ``barriers`` (``{split: {"loss", "accuracy"}}``), ``matching_seconds``, ``align``,
        ``repair``.
    definitions : dict
        How each barrier is defined.
    settings : dict
    nets : dict
        ``{"A": ..., "B": ...}``: name, architecture, source.
    merge : dict, optional
        A merged zoo: each member's, the naive average's, the merged net's and the ensemble's
        accuracy (see ``convergent align --merge``).
    """

    endpoints: dict[str, Any]
    order: list[str]
    curves: dict[str, Any]
    definitions: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    nets: dict[str, Any] = field(default_factory=dict)
    merge: dict[str, Any] | None = None


def load_interpolation(directory: str | os.PathLike) -> Interpolation:
    """Read ``interpolation.json`` from an ``interpolate`` output directory."""
    path = Path(directory) / INTERPOLATION_FILE
    if not path.is_file():
        raise ConvergentError(
            f"{directory} holds no {INTERPOLATION_FILE}; run `convergent interpolate A B --out "
            f"{directory}` first."
        )
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != INTERPOLATION_FORMAT:
        raise CorruptFileError(f"{path} is not a convergent interpolation file.")
    try:
        curves = data["curves"]
        return Interpolation(
            endpoints=dict(data["endpoints"]),
            order=list(data.get("order", list(curves))),
            curves=dict(curves),
            definitions=dict(data.get("definitions", {})),
            settings=dict(data.get("settings", {})),
            nets=dict(data.get("nets", {})),
            merge=data.get("merge"),
        )
    except (KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} lacks {exc}; re-run `convergent interpolate`.") from exc
