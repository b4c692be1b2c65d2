"""Interpolation and merge results (``interpolation/``, made by ``convergent interpolate`` and
``convergent align --merge``): their one writer and their one reader, so that the report reads them
like any other results.

``interpolation.json`` holds, for the naive path between two nets and the aligned (and repaired)
ones, the loss and accuracy at every alpha on the train and test inputs, the barriers and their
definitions, the endpoints' own evaluation and the settings; ``interpolation.csv`` the same curves
as one row per curve, split and alpha. ``merged.json`` (when a zoo was merged into this directory)
holds the merged net next to its members, their naive average and their ensemble.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import atomic_write_bytes, read_json, write_json

INTERPOLATION_FORMAT = "convergent-interpolation"
INTERPOLATION_FILE = "interpolation.json"
INTERPOLATION_CSV = "interpolation.csv"
MERGE_FORMAT = "convergent-merge"
MERGE_FILE = "merged.json"


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
        ``merged.json`` of a zoo merged into the same directory (``convergent align ZOO --merge
        --out DIR/merged.safetensors``): ``members``, ``naive_average``, ``evaluation`` (the merged
        net) and ``ensemble``, each ``{split: {"loss", "accuracy"}}``; ``method``, ``reference``,
        ``repair``, ``notes``. See :func:`merge_rows`.
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
            merge=_load_merge(Path(directory) / MERGE_FILE),
        )
    except (KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} lacks {exc}; re-run `convergent interpolate`.") from exc


_MERGE_KEYS = ("members", "evaluation", "method", "reference", "repair")


def _load_merge(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != MERGE_FORMAT:
        raise CorruptFileError(f"{path} is not a convergent merge file.")
    for key in _MERGE_KEYS:
        if key not in data:
            raise CorruptFileError(f"{path} lacks {key!r}; re-run `convergent align --merge`.")
    return data


def merge_rows(merge: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows a merge is read as, in order: every member, the naive (unaligned) average, the
    merged net and the ensemble of the members (mean logits); ``name``, ``kind`` and, per split,
    ``{split}_loss`` and ``{split}_accuracy`` (a fraction)."""
    repair = merge.get("repair", "none")
    entries = [(name, "member", ev) for name, ev in merge["members"].items()]
    if merge.get("naive_average"):
        entries.append(
            ("naive average", f"unaligned weight average (+{repair})", merge["naive_average"])
        )
    entries.append(
        (
            "merged",
            f"{merge['method']} matching to {merge['reference']}, averaged (+{repair})",
            merge["evaluation"],
        )
    )
    if merge.get("ensemble"):
        entries.append(("ensemble", "mean logits of the members", merge["ensemble"]))
    rows = []
    for name, kind, ev in entries:
        row: dict[str, Any] = {"name": name, "kind": kind}
        for split, m in ev.items():
            row[f"{split}_loss"] = m["loss"]
            row[f"{split}_accuracy"] = m["accuracy"]
        rows.append(row)
    return rows


def _curves_csv(curves: Mapping[str, Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["curve", "align", "repair", "split", "alpha", "loss", "accuracy"])
    for label, c in curves.items():
        for split, values in c["curves"].items():
            for i, alpha in enumerate(c["alphas"]):
                writer.writerow(
                    [
                        label,
                        c["align"],
                        c["repair"],
                        split,
                        f"{alpha:.6g}",
                        f"{values['loss'][i]:.8g}",
                        f"{values['accuracy'][i]:.8g}",
                    ]
                )
    return buf.getvalue()


def save_interpolation(
    directory: str | os.PathLike, document: Mapping[str, Any]
) -> dict[str, Path]:
    """Write ``interpolation.json`` and ``interpolation.csv`` under ``directory``.

    ``document`` carries ``endpoints``, ``order``, ``curves`` (per curve ``alphas``, ``align``,
    ``repair``, ``curves`` and ``barriers``), ``definitions``, ``settings`` and ``nets``; the format
    header is added here. Returns ``{"json": path, "csv": path}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    missing = [k for k in ("endpoints", "order", "curves") if k not in document]
    if missing:
        raise ValueError(f"An interpolation document needs {missing}.")
    body = {"format": INTERPOLATION_FORMAT, "format_version": 1, **document}
    paths = {"json": directory / INTERPOLATION_FILE, "csv": directory / INTERPOLATION_CSV}
    write_json(paths["json"], body)
    atomic_write_bytes(paths["csv"], _curves_csv(document["curves"]).encode())
    return paths


def save_merge(path: str | os.PathLike, document: Mapping[str, Any]) -> Path:
    """Write a merge's evaluation (``convergent align --merge``) as JSON; named ``merged.json`` in
    an interpolation directory, the report shows it next to the interpolation."""
    missing = [k for k in _MERGE_KEYS if k not in document]
    if missing:
        raise ValueError(f"A merge document needs {missing}.")
    path = Path(path)
    write_json(path, {"format": MERGE_FORMAT, "format_version": 1, **document})
    return path
