"""Nets named on the command line: ``ZOO/NET`` or checkpoint files, with the data they were trained on.

A net is named as ``ZOO/NET`` (net ``NET`` of the zoo directory ``ZOO``, checksum verified), as a zoo
checkpoint file ``ZOO/NET.safetensors``, or as any checkpoint file (safetensors, or a ``.pt`` state
dict read with ``weights_only=True``) whose architecture comes from ``arch`` or from the checkpoint's
own metadata (checkpoints convergent writes carry it, aligned and merged ones included).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from convergent._errors import ConvergentError
from convergent._io import read_json, sha256_file
from convergent.data import load_dataset
from convergent.models import build_for
from convergent.zoo._checkpoint import load_weights, save_checkpoint
from convergent.zoo._zoo import MANIFEST, ZOO_FORMAT, load_zoo


@dataclass
class Net:
    """A net named on the command line, loaded with its weights (eval mode)."""

    name: str
    model: nn.Module
    arch: str
    kwargs: dict[str, Any]
    path: Path
    sha256: str
    dataset: str | None = None
    subset: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "kwargs": self.kwargs,
            "checkpoint": str(self.path),
            "sha256": self.sha256,
        }


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The ``convergent`` JSON metadata of a safetensors checkpoint ({} if none or unreadable)."""
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {}).get("convergent", "{}"))
    except Exception:  # noqa: BLE001 - load_weights reports an unreadable file clearly
        return {}


def _zoo_of(path: Path) -> Any:
    """The zoo (unverified) whose directory is ``path``, or None."""
    manifest = path / MANIFEST
    if manifest.is_file() and read_json(manifest).get("format") == ZOO_FORMAT:
        return load_zoo(path, verify=False)
    return None


def dataset_of_zoo(zoo: Any) -> tuple[str, int | None]:
    return zoo.manifest["settings"]["dataset"], zoo.manifest["dataset"].get("subset")


def locate_net(ref: str | os.PathLike) -> tuple[Any, str, Path]:
    """(zoo or None, net name, checkpoint path) of a net reference (see the module docstring)."""
    path = Path(ref)
    if path.is_dir():
        zoo = _zoo_of(path)
        if zoo is not None:
            raise ValueError(
                f"{path} is a zoo; name one of its nets as ZOO/NET, e.g. {path / zoo.names[0]} "
                f"(nets: {', '.join(zoo.names)})."
            )
        raise FileNotFoundError(f"{path} is a directory, not a checkpoint file or ZOO/NET.")
    zoo = _zoo_of(path.parent)
    if zoo is not None:
        stem = path.name[: -len(".safetensors")] if path.suffix == ".safetensors" else path.name
        if stem in zoo.names:
            return zoo, stem, path.parent / zoo.record(stem).checkpoint
        if not path.is_file():
            raise ValueError(
                f"The zoo at {path.parent} has no net named {stem!r}. Nets: {', '.join(zoo.names)}."
            )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is neither a checkpoint file nor ZOO/NET (a net of a zoo directory)."
        )
    return None, path.stem, path


def load_dataset_for(
    nets: Sequence[tuple[Any, str, Path]], dataset: str | None, data_dir: str | os.PathLike | None
) -> Any:
    """The dataset the nets were trained on (their zoo's or checkpoint's), unless ``dataset`` is given."""
    subset = None
    if dataset is None:
        for zoo, _, path in nets:
            if zoo is not None:
                dataset, subset = dataset_of_zoo(zoo)
                break
            meta = checkpoint_metadata(path)
            if meta.get("dataset"):
                dataset, subset = meta["dataset"], meta.get("subset")
                break
    if dataset is None:
        raise ValueError(
            "Which dataset were these nets trained on? Neither a zoo manifest nor the checkpoints "
            "say; give it with --dataset (and --data-dir)."
        )
    return load_dataset(dataset, data_dir, subset=subset)


def load_net(
    located: tuple[Any, str, Path],
    ds: Any,
    *,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Net:
    """Build and load a located net (a zoo's checksums are verified)."""
    zoo, name, path = located
    if zoo is not None:
        rec = zoo.record(name)
        dataset, subset = dataset_of_zoo(zoo)
        return Net(
            name, zoo.model(name), rec.arch, dict(rec.kwargs), path, rec.sha256, dataset, subset
        )
    meta = checkpoint_metadata(path)
    arch = arch or meta.get("arch")
    if arch is None:
        raise ValueError(
            f"The architecture of {path} is unknown: name it with --model ARCH (a built-in name or "
            "package.module:factory) and its arguments with --set."
        )
    kwargs = dict(model_kwargs) if model_kwargs else dict(meta.get("kwargs", {}))
    model = build_for(arch, kwargs, ds)
    load_weights(model, path)
    subset = getattr(ds, "subset", None)
    return Net(
        name, model.eval(), arch, kwargs, path, sha256_file(path), meta.get("dataset"), subset
    )


def load_pair(
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    arch: str | None,
    model_kwargs: Mapping[str, Any] | None,
    dataset: str | None,
    data_dir: str | os.PathLike | None,
) -> tuple[Net, Net, Any]:
    located = [locate_net(a), locate_net(b)]
    ds = load_dataset_for(located, dataset, data_dir)
    net_a, net_b = (load_net(loc, ds, arch=arch, model_kwargs=model_kwargs) for loc in located)
    if net_a.name == net_b.name:
        net_b.name = f"{net_b.name}'"
    shapes_a = {k: tuple(v.shape) for k, v in net_a.model.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in net_b.model.state_dict().items()}
    if shapes_a != shapes_b:
        raise ConvergentError(
            f"Nets {net_a.name!r} and {net_b.name!r} have different architectures (their parameters "
            "differ in names or shapes); only nets of one architecture can be aligned."
        )
    return net_a, net_b, ds


def save_model(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write a model's state dict as safetensors with convergent's metadata (arch, kwargs, ...) and
    the checksum of its tensors."""
    path = Path(path)
    save_checkpoint(path, model, meta)
    return path


def net_metadata(net: Net, ds: Any, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "arch": net.arch,
        "kwargs": net.kwargs,
        "dataset": ds.name,
        "subset": ds.subset,
        **extra,
    }
