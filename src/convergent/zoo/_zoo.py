"""The zoo directory: one safetensors checkpoint per net and a ``manifest.json`` that says how each
was made (architecture, seeds, data, optimiser, accuracy, checksum). This module owns reading it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import dumps_json, read_json, write_json
from convergent.models import build_for
from convergent.zoo._checkpoint import load_weights, verify_checkpoint

MANIFEST = "manifest.json"
ZOO_FORMAT = "convergent-zoo"
#: Key of the manifest's checksum of its own net records.
SEAL = "nets_sha256"


def nets_sha256(nets: list[Mapping[str, Any]]) -> str:
    """SHA-256 of a manifest's net records (canonical JSON), stored in the manifest itself so that a
    hand-edited record (a changed checksum) can be told from a changed checkpoint file."""
    return hashlib.sha256(dumps_json(list(nets)).encode()).hexdigest()


def manifest_edited(manifest: Mapping[str, Any]) -> bool | None:
    """Whether the manifest's net records differ from its own checksum (None: it has none)."""
    seal = manifest.get(SEAL)
    if seal is None:
        return None
    return seal != nets_sha256(manifest.get("nets", []))


def write_zoo_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write a zoo manifest atomically, with the checksum of its net records updated."""
    manifest[SEAL] = nets_sha256(manifest["nets"])
    write_json(path, manifest)


@dataclass
class NetRecord:
    """What the manifest says about one trained net."""

    name: str
    arch: str
    kwargs: dict[str, Any]
    seeds: dict[str, int]
    dataset: str
    epochs: int
    optimizer: dict[str, Any]
    checkpoint: str
    sha256: str
    train_accuracy: float
    train_loss: float
    test_accuracy: float
    test_loss: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Zoo:
    """A trained zoo read from disk: its manifest and the nets' records.

    Use :meth:`model` / :meth:`models` to get the networks with their weights (checksums verified).
    """

    path: Path
    manifest: dict[str, Any]
    nets: list[NetRecord]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nets]

    def record(self, name: str) -> NetRecord:
        for net in self.nets:
            if net.name == name:
                return net
        raise ValueError(f"No net named {name!r} in the zoo at {self.path}. Nets: {self.names}.")

    def build(self, name: str) -> nn.Module:
        """The untrained architecture of net ``name`` (same kwargs and data shape)."""
        rec = self.record(name)
        return build_for(rec.arch, rec.kwargs, self.manifest["dataset"])

    def model(self, name: str, *, verify: bool = True) -> nn.Module:
        """Net ``name`` with its trained weights, in eval mode; the checksum is verified first."""
        rec = self.record(name)
        path = self.path / rec.checkpoint
        if verify:
            verify_checkpoint(
                path, rec.sha256, net=name, manifest_edited=manifest_edited(self.manifest)
            )
        model = self.build(name)
        load_weights(model, path)
        return model.eval()

    def models(
        self, names: Iterable[str] | None = None, *, verify: bool = True
    ) -> dict[str, nn.Module]:
        """``{name: model}`` for the given nets (default: all, in manifest order)."""
        return {n: self.model(n, verify=verify) for n in (names or self.names)}


def load_zoo(path: str | os.PathLike, *, verify: bool = True) -> Zoo:
    """Read a zoo directory. With ``verify``, every checkpoint's SHA-256 is checked against the
    manifest and a missing, truncated or altered one raises :class:`CorruptFileError`, whose
    message says whether the file or the manifest is the side that changed."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ConvergentError(
            f"{path} is not a zoo: {manifest_path} does not exist. Create one with `convergent train "
            f"--out {path}`."
        )
    manifest = read_json(manifest_path)
    if manifest.get("format") != ZOO_FORMAT:
        raise ConvergentError(f"{manifest_path} is not a convergent zoo manifest.")
    try:
        nets = [NetRecord(**rec) for rec in manifest["nets"]]
    except (TypeError, KeyError) as exc:
        raise CorruptFileError(f"{manifest_path} has a malformed net record ({exc}).") from exc
    if verify:
        edited = manifest_edited(manifest)
        for rec in nets:
            verify_checkpoint(
                path / rec.checkpoint, rec.sha256, net=rec.name, manifest_edited=edited
            )
    return Zoo(path=path, manifest=manifest, nets=nets)


def zoo_summary(zoo: Zoo) -> list[dict[str, Any]]:
    """One row per net: name, seeds, accuracies, seconds (for tables)."""
    return [
        {
            "net": r.name,
            "init seed": r.seeds["init"],
            "order seed": r.seeds["order"],
            "train acc": round(r.train_accuracy, 4),
            "test acc": round(r.test_accuracy, 4),
            "test loss": round(r.test_loss, 4),
            "seconds": round(r.seconds, 1),
        }
        for r in zoo.nets
    ]
