"""The results folder (``results/``): the typed :class:`Results` of ``convergent analyze`` and the
only code that reads and writes it.

Layout (format 2)::

    manifest.json                  what produced it: the statistics it was made from (paths relative
                                   to this folder, with checksums), the settings, every file's SHA-256
    results.json                   the JSON part of :class:`Results` (every scalar, per layer and pair)
    arrays/<layer>.safetensors     the array part of that layer (curves, permutations, coefficients,
                                   cluster labels, the joint correlation matrix, unit means, patches)
    summary.csv                    one row per layer: the summary columns (``convergent.results.columns``)
    partial/                       while analysing: finished layers (an interrupted run resumes)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergent._errors import CorruptFileError
from convergent._io import atomic_write_bytes, load_arrays, read_json, save_arrays, write_json
from convergent._manifest import (
    MANIFEST,
    file_entry,
    header,
    read_manifest,
    verify_entry,
)
from convergent.analysis import LayerAnalysis
from convergent.results._codec import decode, encode
from convergent.stats import file_stem

RESULTS_FORMAT = "convergent-results"
RESULTS_VERSION = 2
RESULTS_FILE = "results.json"
_FIX = "Re-run `convergent analyze` (into a new --out, or after deleting this one)."


@dataclass
class Results:
    """What ``convergent analyze`` found, for every layer and pair of nets.

    Attributes
    ----------
    nets, pairs : list of str
        The nets (in order) and the analysed pairs (``a~b``).
    layers : dict of str to LayerAnalysis
        In the model's forward order.
    settings : dict
        The analysis settings (``AnalysisSettings.to_dict()``) and the whole-layer metrics'.
    run : dict
        What was measured: dataset, split, inputs, preprocessing, the nets (architecture, source,
        seeds, accuracy), collection settings; ``fit``: where one-to-many prediction was fitted and
        scored.
    layer_by_layer : dict, optional
        Layer x layer CKA of the first two nets (from the pooled all-layer moments).
    seconds : float
        Time the analysis took.
    """

    nets: list[str]
    pairs: list[str]
    layers: dict[str, LayerAnalysis]
    settings: dict[str, Any]
    run: dict[str, Any]
    layer_by_layer: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerAnalysis:
        if name not in self.layers:
            raise ValueError(f"No results for layer {name!r}. Layers: {list(self.layers)}.")
        return self.layers[name]


def save_layer(directory: Path, layer: LayerAnalysis) -> tuple[Any, dict[str, str]]:
    """Write one layer's arrays file; return its JSON part and the file's entry."""
    data, arrays = encode(layer)
    path = directory / "arrays" / f"{file_stem(layer.name)}.safetensors"
    save_arrays(path, arrays, {"layer": layer.name})
    return data, {"file": f"arrays/{path.name}", "sha256": file_entry(path)["sha256"]}


def load_layer(directory: Path, data: Any, entry: dict[str, str]) -> LayerAnalysis:
    """One layer back from its JSON part and its (checksum-verified) arrays file."""
    arrays, _ = load_arrays(verify_entry(directory, entry, _FIX))
    try:
        return decode(LayerAnalysis, data, arrays)
    except (KeyError, TypeError) as exc:
        raise CorruptFileError(
            f"{directory / entry['file']} does not hold the arrays results.json expects ({exc}). {_FIX}"
        ) from exc


def save_results(
    directory: str | os.PathLike,
    results: Results,
    *,
    identity: dict[str, Any],
    inputs: dict[str, Any],
    summary_csv: bytes,
) -> Path:
    """Write the results folder: the arrays, ``results.json``, ``summary.csv``, then the manifest
    with every file's checksum (a folder with a manifest is complete)."""
    directory = Path(directory)
    layers_json, files = {}, {}
    for name, layer in results.layers.items():
        layers_json[name], files[name] = save_layer(directory, layer)
    body = {
        **header(RESULTS_FORMAT, RESULTS_VERSION),
        "nets": results.nets,
        "pairs": results.pairs,
        "settings": results.settings,
        "run": results.run,
        "layer_order": list(results.layers),
        "layers": layers_json,
        "layer_by_layer": results.layer_by_layer,
        "seconds": results.seconds,
        "notes": results.notes,
    }
    write_json(directory / RESULTS_FILE, body)
    atomic_write_bytes(directory / "summary.csv", summary_csv)
    write_json(
        directory / MANIFEST,
        {
            **header(RESULTS_FORMAT, RESULTS_VERSION),
            "identity": identity,
            "inputs": inputs,
            "files": {
                "results": file_entry(directory / RESULTS_FILE),
                "summary": file_entry(directory / "summary.csv"),
                "layers": files,
            },
        },
    )
    return directory


def load_results(directory: str | os.PathLike) -> Results:
    """Read a results folder, verifying every file's checksum."""
    directory = Path(directory)
    manifest = read_manifest(
        directory,
        RESULTS_FORMAT,
        what="results directory",
        noun="results",
        fix="Create one with `convergent analyze STATS --out DIR`.",
        version=RESULTS_VERSION,
        rerun=_FIX,
    )
    files = manifest["files"]
    body = read_json(verify_entry(directory, files["results"], _FIX))
    layers = {
        name: load_layer(directory, body["layers"][name], files["layers"][name])
        for name in body["layer_order"]
    }
    return Results(
        nets=list(body["nets"]),
        pairs=list(body["pairs"]),
        layers=layers,
        settings=dict(body["settings"]),
        run=dict(body["run"]),
        layer_by_layer=body.get("layer_by_layer"),
        seconds=float(body.get("seconds", 0.0)),
        notes=list(body.get("notes", [])),
    )


def read_inputs(directory: str | os.PathLike) -> dict[str, Any]:
    """The inputs a results folder names (relative paths, checksums), from its manifest."""
    manifest = read_json(Path(directory) / MANIFEST)
    return dict(manifest.get("inputs", {}))
