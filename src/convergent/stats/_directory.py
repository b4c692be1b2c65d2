"""What collection produces: one joint :class:`~convergent.stats.Moments` per layer over the units of
all nets, the unit range of each net, and the per-unit top-k inputs; saved as a statistics directory.

Directory layout::

    manifest.json                 nets, layers, unit ranges, samples, data, settings, checksums
    <layer>.moments.safetensors   count, mean, comoment of the joint units (float64)
    <layer>.topk.safetensors      value / index / position of each unit's top-k samples
    pooled.moments.safetensors    optional: one KernelMoments over every net's every layer,
                                  spatially averaged (blocks ``net/layer``): layer x layer CKA

A layer's moments file that holds kernel sums (``collect(kernel_sums=True)``) loads as a
:class:`~convergent.stats.KernelMoments` (debiased CKA), any other as a plain ``Moments``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import load_arrays, read_json, save_arrays, sha256_file, write_json
from convergent._version import __version__
from convergent.stats._kernel import KernelMoments
from convergent.stats._moments import Moments
from convergent.stats._topk import TopK

STATS_FORMAT = "convergent-stats"
MANIFEST = "manifest.json"
POOLED_FILE = "pooled.moments.safetensors"


def block_name(net: str, layer: str) -> str:
    """The name of a net's layer among the blocks of an all-layers accumulator: ``net/layer``."""
    return f"{net}/{layer}"


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
    """

    name: str
    moments: Moments
    unit_ranges: dict[str, tuple[int, int]]
    map_shape: tuple[int, ...] = ()
    topk: TopK | None = None

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
    """Collected statistics of several nets on one dataset split: a :class:`LayerStatistics` per layer."""

    layers: dict[str, LayerStatistics]
    nets: list[str]
    num_inputs: int
    settings: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: one ``KernelMoments`` over every net's every layer, spatially averaged (blocks
    #: ``net/layer``, see :func:`block_name`); None when not collected
    pooled: Moments | None = None
    #: the layers in ``pooled``, in order
    pooled_layers: list[str] = field(default_factory=list)

    def __getitem__(self, layer: str) -> LayerStatistics:
        if layer not in self.layers:
            raise ValueError(f"No statistics for layer {layer!r}. Layers: {list(self.layers)}.")
        return self.layers[layer]

    def manifest(self) -> dict[str, Any]:
        return {
            "format": STATS_FORMAT,
            "format_version": 1,
            "convergent_version": __version__,
            "nets": list(self.nets),
            "num_inputs": int(self.num_inputs),
            "settings": self.settings,
            "info": self.info,
            "layers": {
                name: {
                    "units": {net: list(r) for net, r in ls.unit_ranges.items()},
                    "samples": int(ls.samples),
                    "map_shape": list(ls.map_shape),
                    "samples_per_input": int(np.prod(ls.map_shape)) if ls.map_shape else 1,
                    "dead_units": [int(i) for i in ls.moments.dead_units()],
                }
                for name, ls in self.layers.items()
            },
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the statistics directory (files first, the manifest with their checksums last)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        for name, ls in self.layers.items():
            entry = manifest["layers"][name]
            moments_file = directory / f"{name}.moments.safetensors"
            ls.moments.save(moments_file)
            entry["moments_file"] = moments_file.name
            entry["moments_sha256"] = sha256_file(moments_file)
            if ls.topk is not None:
                topk_file = directory / f"{name}.topk.safetensors"
                save_arrays(topk_file, ls.topk.arrays(), {"layer": name, "k": ls.topk.k})
                entry["topk_file"] = topk_file.name
                entry["topk_sha256"] = sha256_file(topk_file)
        if self.pooled is not None:
            pooled_file = directory / POOLED_FILE
            self.pooled.save(pooled_file)
            manifest["pooled"] = {
                "file": pooled_file.name,
                "sha256": sha256_file(pooled_file),
                "layers": list(self.pooled_layers),
                "samples": int(self.pooled.count),
            }
        write_json(directory / MANIFEST, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, layers: list[str] | None = None) -> Statistics:
        """Read a statistics directory, verifying every file's checksum."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise ConvergentError(
                f"{directory} is not a statistics directory: {path} does not exist. Create one with "
                "`convergent collect`."
            )
        manifest = read_json(path)
        if manifest.get("format") != STATS_FORMAT:
            raise ConvergentError(f"{path} is not a convergent statistics manifest.")
        out: dict[str, LayerStatistics] = {}
        for name, entry in manifest["layers"].items():
            if layers is not None and name not in layers:
                continue
            moments_file = directory / entry["moments_file"]
            _verify(moments_file, entry["moments_sha256"])
            moments = _load_moments(moments_file)
            topk = None
            if "topk_file" in entry:
                topk_file = directory / entry["topk_file"]
                _verify(topk_file, entry["topk_sha256"])
                arrays, _ = load_arrays(topk_file)
                topk = TopK.from_arrays(arrays)
            ranges = {net: (int(r[0]), int(r[1])) for net, r in entry["units"].items()}
            if moments.dim != max(stop for _, stop in ranges.values()):
                raise CorruptFileError(
                    f"{moments_file} holds {moments.dim} variables but the manifest's unit ranges "
                    f"cover {max(stop for _, stop in ranges.values())}."
                )
            out[name] = LayerStatistics(name, moments, ranges, tuple(entry["map_shape"]), topk)
        if layers is not None:
            missing = [name for name in layers if name not in out]
            if missing:
                raise ValueError(
                    f"No statistics for layers {missing} in {directory}. Layers: "
                    f"{list(manifest['layers'])}."
                )
        pooled, pooled_layers = None, []
        if "pooled" in manifest:
            entry = manifest["pooled"]
            pooled_file = directory / entry["file"]
            _verify(pooled_file, entry["sha256"])
            pooled = KernelMoments.load(pooled_file)
            pooled_layers = list(entry["layers"])
        return cls(
            out,
            list(manifest["nets"]),
            int(manifest["num_inputs"]),
            dict(manifest.get("settings", {})),
            dict(manifest.get("info", {})),
            pooled,
            pooled_layers,
        )


def _load_moments(path: Path) -> Moments:
    """A ``KernelMoments`` if the file holds kernel sums, else a plain ``Moments``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            kernel = "kernel.norm_products" in fh.keys()
    except Exception:  # a damaged file: Moments.load names the problem
        kernel = False
    return KernelMoments.load(path) if kernel else Moments.load(path)


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise CorruptFileError(
            f"{path} listed in the statistics manifest is missing. Re-run `convergent collect`."
        )
    actual = sha256_file(path)
    if actual != expected:
        raise CorruptFileError(
            f"{path} does not match the statistics manifest (SHA-256 {actual} instead of "
            f"{expected}); it was changed or truncated. Re-run `convergent collect`."
        )
