"""What one collection pass produces, and the statistics directory (``stats/``) that holds it.

Directory layout (format 2)::

    manifest.json                  what produced it (nets and their sources as paths relative to
                                   this folder, with checksums; dataset, split, settings); the
                                   layers in the model's forward order, each with its unit ranges,
                                   samples, map shape, dead units and files (with SHA-256)
    <layer>.moments.safetensors    joint Moments (KernelMoments with kernel sums) over all nets
    <layer>.topk.safetensors       each unit's top-k (value, input index, position)
    <layer>.patches.safetensors    optional: the input patches behind each top-k entry (uint8) and
                                   their boxes in the input (top, bottom, left, right)
    <layer>.mi.safetensors         optional: one JointHistogram per pair of nets (``a~b/...``)
    pooled.moments.safetensors     optional: one KernelMoments over every net's every layer,
                                   spatially averaged (blocks ``net/layer``): layer x layer CKA
    scores.safetensors             optional: each net's loss and accuracy on these inputs
    fit/                           optional: a statistics directory of the other split (moments
                                   only), where one-to-many prediction is fitted

Every file is a statistic saved from its declared state (see ``convergent.stats._state``) or plain
arrays; nothing is pickled. This module is the only reader and writer of the folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import CorruptFileError
from convergent._io import load_arrays, save_arrays, write_json
from convergent._manifest import MANIFEST, file_entry, header, read_manifest, verify_entry
from convergent.stats._accuracy import ClassifierScores
from convergent.stats._histogram import JointHistogram
from convergent.stats._kernel import KernelMoments
from convergent.stats._moments import Moments
from convergent.stats._topk import TopK

STATS_FORMAT = "convergent-stats"
STATS_VERSION = 2
POOLED_FILE = "pooled.moments.safetensors"
#: Sub-folder holding the statistics of the split one-to-many prediction is fitted on.
FIT_DIR = "fit"
SCORES_FILE = "scores.safetensors"
_FIX = "Re-run `convergent collect` (into a new --out, or after deleting this one)."


def block_name(net: str, layer: str) -> str:
    """The name of a net's layer among the blocks of an all-layers accumulator: ``net/layer``."""
    return f"{net}/{layer}"


def pair_key(net_a: str, net_b: str) -> str:
    """How a pair of nets is named in files and tables: ``a~b``."""
    return f"{net_a}~{net_b}"


def file_stem(layer: str) -> str:
    """A layer's file name stem (its dotted name; path separators would leave the folder)."""
    if not layer or "/" in layer or "\\" in layer or layer in (".", ".."):
        raise ValueError(f"A layer name cannot be used as a file name: {layer!r}.")
    return layer


@dataclass
class LayerStatistics:
    """Joint statistics of one layer over every net.

    Attributes
    ----------
    name : str
        The layer's dotted module path.
    moments : Moments
        Over ``sum(d_net)`` variables: net ``a``'s units are ``moments`` variables
        ``unit_ranges[a][0]`` to ``unit_ranges[a][1] - 1``.
    unit_ranges : dict of str to (int, int)
        Start and stop of each net's units, in net order.
    map_shape : tuple of int
        Spatial (or token) shape of one input's map at this layer; ``()`` for vectors / averages.
    topk : TopK or None
        Per joint unit, the top-k activations with input index and flat position in ``map_shape``.
    patches : dict or None
        ``image``: (units, k, S, S[, 3]) uint8 crops of the inputs behind each top-k entry;
        ``box``: (units, k, 4) their (top, bottom, left, right) in the input.
    mi : dict of str to JointHistogram
        Joint histograms of unit pairs, by pair key ``a~b`` (mutual information).
    """

    name: str
    moments: Moments
    unit_ranges: dict[str, tuple[int, int]]
    map_shape: tuple[int, ...] = ()
    topk: TopK | None = None
    patches: dict[str, np.ndarray] | None = None
    mi: dict[str, JointHistogram] = field(default_factory=dict)

    @property
    def nets(self) -> list[str]:
        return list(self.unit_ranges)

    @property
    def samples(self) -> int:
        return self.moments.count

    def units(self, net: str) -> slice:
        """The slice of the joint variables that holds ``net``'s units."""
        if net not in self.unit_ranges:
            raise ValueError(f"Layer {self.name!r} has no net {net!r}. Nets: {self.nets}.")
        start, stop = self.unit_ranges[net]
        return slice(start, stop)

    def width(self, net: str) -> int:
        start, stop = self.unit_ranges[net]
        return stop - start

    def corr_block(self, net_a: str, net_b: str) -> np.ndarray:
        """Correlation between the units of ``net_a`` (rows) and ``net_b`` (columns)."""
        corr = self.moments.corr()
        return corr[self.units(net_a), self.units(net_b)]


@dataclass
class Statistics:
    """Collected statistics of several nets on one dataset split: a :class:`LayerStatistics` per
    layer (in the model's forward order), and what the pass also kept.

    Attributes
    ----------
    layers : dict of str to LayerStatistics
    nets : list of str
    num_inputs : int
    settings : dict
        How they were collected (spatial mode, batch size, top-k, precision, world size, ...).
    info : dict
        Where they came from: ``dataset``, ``split``, ``nets`` (per net: architecture, source with
        a path relative to the statistics directory and a SHA-256, seeds, ...), ``inputs``.
    pooled : Moments or None
        One ``KernelMoments`` over every net's every layer, spatially averaged (blocks
        ``net/layer``, see :func:`block_name`).
    pooled_layers : list of str
        The layers in ``pooled``, in order.
    scores : dict of str to ClassifierScores
        Each net's loss and accuracy on these inputs (when the data had labels).
    """

    layers: dict[str, LayerStatistics]
    nets: list[str]
    num_inputs: int
    settings: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    pooled: Moments | None = None
    pooled_layers: list[str] = field(default_factory=list)
    scores: dict[str, ClassifierScores] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> LayerStatistics:
        if layer not in self.layers:
            raise ValueError(f"No statistics for layer {layer!r}. Layers: {list(self.layers)}.")
        return self.layers[layer]

    def manifest(self) -> dict[str, Any]:
        """The manifest of these statistics (without the file entries ``save`` adds)."""
        return {
            **header(STATS_FORMAT, STATS_VERSION),
            "nets": list(self.nets),
            "num_inputs": int(self.num_inputs),
            "settings": self.settings,
            "info": self.info,
            "layers": [
                {
                    "name": name,
                    "units": {net: list(r) for net, r in ls.unit_ranges.items()},
                    "samples": int(ls.samples),
                    "map_shape": list(ls.map_shape),
                    "samples_per_input": int(np.prod(ls.map_shape)) if ls.map_shape else 1,
                    "dead_units": [int(i) for i in ls.moments.dead_units()],
                }
                for name, ls in self.layers.items()
            ],
        }

    def save(
        self, directory: str | os.PathLike, *, identity: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the statistics directory: every file first, then the manifest with their checksums
        (so a folder with a manifest is complete). ``identity`` (settings and input checksums) is
        what a later run compares to reuse the folder."""
        directory = Path(directory)
        manifest = self.manifest()
        if identity is not None:
            manifest["identity"] = dict(identity)
        for entry, ls in zip(manifest["layers"], self.layers.values()):
            stem = directory / file_stem(ls.name)
            files: dict[str, Any] = {}
            path = stem.with_name(f"{stem.name}.moments.safetensors")
            ls.moments.save(path)
            files["moments"] = file_entry(path)
            if ls.topk is not None:
                path = stem.with_name(f"{stem.name}.topk.safetensors")
                ls.topk.save(path)
                files["topk"] = file_entry(path)
            if ls.patches is not None:
                path = stem.with_name(f"{stem.name}.patches.safetensors")
                save_arrays(path, ls.patches, {"layer": ls.name})
                files["patches"] = file_entry(path)
            if ls.mi:
                path = stem.with_name(f"{stem.name}.mi.safetensors")
                arrays, meta = {}, {}
                for key, hist in ls.mi.items():
                    meta[key] = hist.config()
                    arrays.update({f"{key}/{k}": v for k, v in hist.state().items()})
                save_arrays(path, arrays, {"layer": ls.name, "pairs": meta})
                files["mi"] = file_entry(path)
            entry["files"] = files
        if self.pooled is not None:
            path = directory / POOLED_FILE
            self.pooled.save(path)
            manifest["pooled"] = {
                **file_entry(path),
                "layers": list(self.pooled_layers),
                "samples": int(self.pooled.count),
            }
        if self.scores:
            path = directory / SCORES_FILE
            arrays = {
                f"{net}/{k}": v for net, s in self.scores.items() for k, v in s.state().items()
            }
            save_arrays(path, arrays, {"nets": list(self.scores)})
            manifest["scores"] = file_entry(path)
        write_json(directory / MANIFEST, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, layers: list[str] | None = None) -> Statistics:
        """Read a statistics directory, verifying every file's checksum."""
        directory = Path(directory)
        manifest = read_manifest(
            directory,
            STATS_FORMAT,
            what="statistics directory",
            noun="statistics",
            fix="Create one with `convergent collect`.",
            version=STATS_VERSION,
            rerun=_FIX,
        )
        entries = {entry["name"]: entry for entry in manifest["layers"]}
        if layers is not None:
            missing = [name for name in layers if name not in entries]
            if missing:
                raise ValueError(
                    f"No statistics for layers {missing} in {directory}. Layers: {list(entries)}."
                )
        out: dict[str, LayerStatistics] = {}
        for name, entry in entries.items():
            if layers is not None and name not in layers:
                continue
            out[name] = _load_layer(directory, name, entry)
        pooled, pooled_layers = None, []
        if "pooled" in manifest:
            pooled = KernelMoments.load(verify_entry(directory, manifest["pooled"], _FIX))
            pooled_layers = list(manifest["pooled"]["layers"])
        scores = {}
        if "scores" in manifest:
            arrays, meta = load_arrays(verify_entry(directory, manifest["scores"], _FIX))
            for net in meta.get("nets", []):
                part = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{net}/")}
                scores[net] = ClassifierScores.from_state({}, part)
        if layers is not None:  # keep the caller's order
            out = {name: out[name] for name in layers}
        return cls(
            out,
            list(manifest["nets"]),
            int(manifest["num_inputs"]),
            dict(manifest.get("settings", {})),
            dict(manifest.get("info", {})),
            pooled,
            pooled_layers,
            scores,
        )


def _load_layer(directory: Path, name: str, entry: Mapping[str, Any]) -> LayerStatistics:
    files = entry.get("files", {})
    if "moments" not in files:
        raise CorruptFileError(f"{directory / MANIFEST} lists no moments file for layer {name!r}.")
    moments = Moments.load(verify_entry(directory, files["moments"], _FIX))
    ranges = {net: (int(r[0]), int(r[1])) for net, r in entry["units"].items()}
    if moments.dim != max(stop for _, stop in ranges.values()):
        raise CorruptFileError(
            f"{directory / files['moments']['file']} holds {moments.dim} variables but the "
            f"manifest's unit ranges cover {max(stop for _, stop in ranges.values())}."
        )
    topk = TopK.load(verify_entry(directory, files["topk"], _FIX)) if "topk" in files else None
    patches = None
    if "patches" in files:
        patches, _ = load_arrays(verify_entry(directory, files["patches"], _FIX))
    mi = {}
    if "mi" in files:
        arrays, meta = load_arrays(verify_entry(directory, files["mi"], _FIX))
        for key, config in meta.get("pairs", {}).items():
            part = {k[len(key) + 1 :]: v for k, v in arrays.items() if k.startswith(f"{key}/")}
            mi[key] = JointHistogram.from_state(config, part)
    return LayerStatistics(name, moments, ranges, tuple(entry["map_shape"]), topk, patches, mi)
