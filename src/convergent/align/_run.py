"""`convergent align` and `convergent interpolate` as library functions: nets named on the command
line (see :mod:`convergent.zoo._refs`) + their dataset -> files on disk and small result objects."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convergent._device import resolve_device
from convergent._io import sha256_file, write_json
from convergent._version import __version__
from convergent.align._activations import activation_matching
from convergent.align._groups import (
    PermutationSpec,
    find_permutation_groups,
)
from convergent.align._interpolate import (
    BARRIER_DEFINITIONS,
    REPAIRS,
    BarrierResult,
    check_renormalisation,
    interpolation_curve,
)
from convergent.align._match import SIMILARITIES, Alignment, weight_matching
from convergent.align._merge import merge_models, permuted
from convergent.align._permfile import permutation_file, save_permutation
from convergent.align._plot import plot_interpolation
from convergent.data import load_dataset
from convergent.results import save_interpolation, save_merge
from convergent.stats import Statistics
from convergent.zoo import evaluate, load_zoo
from convergent.zoo._refs import (
    Net,
    dataset_of_zoo,
    load_pair,
    net_metadata,
    save_model,
)

ALIGN_METHODS = ("activation", "weight")
INTERPOLATE_ALIGN = ("none", "activation", "weight")


def align_pair(
    net_a: Net,
    net_b: Net,
    spec: PermutationSpec,
    method: str,
    *,
    images: torch.Tensor,
    similarity: str = "correlation",
    stats: str | os.PathLike | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> Alignment:
    """Permutations mapping ``net_b`` onto ``net_a`` (``stats``: a statistics directory of both)."""
    if method not in ALIGN_METHODS:
        raise ValueError(
            f"The 'method' parameter must be one of {ALIGN_METHODS}. Got {method!r} instead."
        )
    if similarity not in SIMILARITIES:
        raise ValueError(
            f"The 'similarity' parameter must be one of {SIMILARITIES}. Got {similarity!r} instead."
        )
    if method == "weight":
        return weight_matching(spec, net_a.model.state_dict(), net_b.model.state_dict(), seed=seed)
    loaded = None
    if stats is not None:
        loaded = Statistics.load(stats)
    return activation_matching(
        net_a.model,
        net_b.model,
        spec,
        images,
        kind=similarity,
        batch_size=batch_size,
        stats=loaded,
        nets=(net_a.name, net_b.name),
        progress=progress,
    )


@dataclass
class AlignRun:
    """What `convergent align A B` wrote and found."""

    alignment: Alignment
    model_path: Path
    permutation_path: Path
    manifest: dict[str, Any] = field(default_factory=dict)


def align_run(
    a: str | os.PathLike,
    b: str | os.PathLike,
    out: str | os.PathLike,
    *,
    method: str = "activation",
    similarity: str = "correlation",
    stats: str | os.PathLike | None = None,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    train_inputs: int | None = 10000,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> AlignRun:
    """Align net ``b`` to net ``a``; write ``out/aligned.safetensors`` (B permuted),
    ``out/permutation.safetensors`` (the portable permutation) and ``out/manifest.json``.

    ``device``: where the nets run (``cpu``, ``cuda``, ``cuda:1``, ``mps``); the data stays on the
    CPU and moves there batch by batch; statistics are float64 either way."""
    dev = resolve_device(device)
    net_a, net_b, ds = load_pair(
        a, b, arch=arch, model_kwargs=model_kwargs, dataset=dataset, data_dir=data_dir
    )
    net_a.model.to(dev)
    net_b.model.to(dev)
    images = ds.train_images[:train_inputs]
    spec = find_permutation_groups(net_a.model, images[:2])
    alignment = align_pair(
        net_a,
        net_b,
        spec,
        method,
        images=images,
        similarity=similarity,
        stats=stats,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    aligned = permuted(net_b.model, spec, alignment.perms)
    model_path = save_model(
        out / "aligned.safetensors",
        aligned,
        net_metadata(net_b, ds, f"{net_b.name}-aligned", aligned_to=net_a.name),
    )
    info = {
        "method": method,
        "similarity": similarity if method == "activation" else None,
        "reference": net_a.describe(),
        "permuted": net_b.describe(),
        "scores": alignment.scores,
        "iterations": alignment.iterations,
        "seconds": alignment.seconds,
    }
    perm_path = save_permutation(
        out / "permutation.safetensors",
        permutation_file(alignment.perms, spec, net_b.model.state_dict(), info),
    )
    manifest = {
        "format": "convergent-align",
        "format_version": 1,
        "convergent_version": __version__,
        "torch_version": torch.__version__,
        **info,
        "statistics": str(stats) if stats is not None else None,
        "train_inputs": int(len(images)),
        "dataset": ds.describe(),
        "files": {p.name: sha256_file(p) for p in (model_path, perm_path)},
    }
    write_json(out / "manifest.json", manifest)
    return AlignRun(alignment, model_path, perm_path, manifest)


# ------------------------------------------------------------------------------------------------
# interpolation


def _label(align: str, repair: str) -> str:
    label = "naive" if align == "none" else f"aligned ({align})"
    return label if repair == "none" else f"{label} + {repair}"


@dataclass
class InterpolateRun:
    """Every curve `convergent interpolate` computed, by label, and the endpoints' own evaluation."""

    curves: dict[str, BarrierResult]
    endpoints: dict[str, dict[str, dict[str, float]]]
    matching_seconds: dict[str, float]
    paths: dict[str, Path]


def interpolate_run(
    a: str | os.PathLike,
    b: str | os.PathLike,
    out: str | os.PathLike,
    *,
    align: str = "weight",
    repair_mode: str = "none",
    points: int = 25,
    similarity: str = "correlation",
    stats: str | os.PathLike | None = None,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    train_inputs: int | None = 10000,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> InterpolateRun:
    """Loss and accuracy on train and test at ``points`` alphas between A and B: the naive path, the
    path to B aligned to A (unless ``align="none"``) and, with ``repair_mode``, the repaired one.

    Writes ``interpolation.json`` (curves, barriers, their definitions, settings), ``.csv`` (one row
    per curve, split and alpha) and ``.png`` (:func:`plot_interpolation`) under ``out``.
    """
    if align not in INTERPOLATE_ALIGN:
        raise ValueError(
            f"The 'align' parameter must be one of {INTERPOLATE_ALIGN}. Got {align!r} instead."
        )
    if repair_mode not in REPAIRS:
        raise ValueError(
            f"The 'repair' parameter must be one of {REPAIRS}. Got {repair_mode!r} instead."
        )
    dev = resolve_device(device)
    net_a, net_b, ds = load_pair(
        a, b, arch=arch, model_kwargs=model_kwargs, dataset=dataset, data_dir=data_dir
    )
    net_a.model.to(dev)
    net_b.model.to(dev)
    images = ds.train_images[:train_inputs]
    check_renormalisation(net_a.model, repair_mode, images)
    splits = {"train": (images, ds.train_labels[:train_inputs]), "test": ds.split("test")}
    endpoints = {
        net.name: {
            split: dict(zip(("loss", "accuracy"), evaluate(net.model, x, y, device=dev)))
            for split, (x, y) in splits.items()
        }
        for net in (net_a, net_b)
    }
    targets = {"none": net_b.model}
    seconds = {"none": 0.0}
    if align != "none":
        spec = find_permutation_groups(net_a.model, images[:2])
        alignment = align_pair(
            net_a,
            net_b,
            spec,
            align,
            images=images,
            similarity=similarity,
            stats=stats,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        targets[align] = permuted(net_b.model, spec, alignment.perms)
        seconds[align] = alignment.seconds
    configs = [("none", "none")]
    if align != "none":
        configs.append((align, "none"))
    if repair_mode != "none":
        configs.append((align, repair_mode))
    curves = {}
    for which, mode in configs:
        curves[_label(which, mode)] = interpolation_curve(
            net_a.model,
            targets[which],
            splits,
            points=points,
            repair_mode=mode,
            align=which,
            calibration=images,
            progress=progress,
        )
    document = {
        "convergent_version": __version__,
        "torch_version": torch.__version__,
        "definitions": BARRIER_DEFINITIONS,
        "nets": {"A": net_a.describe(), "B": net_b.describe()},
        "endpoints": endpoints,
        "settings": {
            "points": int(points),
            "align": align,
            "repair": repair_mode,
            "similarity": similarity if align == "activation" else None,
            "statistics": str(stats) if stats is not None else None,
            "train_inputs": int(len(images)),
            "dataset": ds.describe(),
        },
        "order": list(curves),
        "curves": {
            label: {**c.to_dict(), "matching_seconds": seconds[c.align]}
            for label, c in curves.items()
        },
    }
    paths = save_interpolation(out, document)
    paths["png"] = Path(out) / "interpolation.png"
    plot_interpolation(
        curves, paths["png"], title=f"Linear interpolation: {net_a.name} (0) to {net_b.name} (1)"
    )
    return InterpolateRun(
        curves, endpoints, {_label(k, "none"): v for k, v in seconds.items()}, paths
    )


def interpolation_summary(run: InterpolateRun) -> list[dict[str, Any]]:
    """One row per curve and split: barriers, midpoint and endpoint accuracy (for tables)."""
    rows = []
    for label, c in run.curves.items():
        mid = int(np.argmin(np.abs(c.alphas - 0.5)))
        for split, values in c.curves.items():
            rows.append(
                {
                    "curve": label,
                    "split": split,
                    "loss barrier": round(c.barriers[split]["loss"], 4),
                    "acc barrier (pts)": round(100 * c.barriers[split]["accuracy"], 2),
                    "acc A": round(100 * values["accuracy"][0], 2),
                    f"acc @{c.alphas[mid]:.2f}": round(100 * values["accuracy"][mid], 2),
                    "acc B": round(100 * values["accuracy"][-1], 2),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------------
# merging and the self-test


def merge_run(
    zoo: str | os.PathLike,
    out: str | os.PathLike,
    *,
    method: str = "weight",
    reference: str | None = None,
    similarity: str = "correlation",
    repair_mode: str = "none",
    nets: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    train_inputs: int | None = 10000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> Any:
    """Align every net of ``zoo`` (or the named ``nets``), average, renormalise and evaluate; write
    the merged model to ``out`` (safetensors) and its evaluation next to it (``.json``)."""
    zoo_obj = load_zoo(zoo)
    name, subset = dataset_of_zoo(zoo_obj)
    ds = load_dataset(name, data_dir, subset=subset)
    dev = resolve_device(device)
    models = {n: m.to(dev) for n, m in zoo_obj.models(nets).items()}
    images = ds.train_images[:train_inputs]
    splits = {"train": (images, ds.train_labels[:train_inputs]), "test": ds.split("test")}
    first = next(iter(models.values()))
    spec = find_permutation_groups(first, images[:2])
    result = merge_models(
        models,
        spec,
        method=method,
        reference=reference,
        similarity=similarity,
        repair_mode=repair_mode,
        images=images,
        splits=splits,
        seed=seed,
        progress=progress,
    )
    out = Path(out)
    rec = zoo_obj.record(next(iter(models)))
    model_path = save_model(
        out,
        result.model,
        {
            "name": out.stem,
            "arch": rec.arch,
            "kwargs": rec.kwargs,
            "dataset": name,
            "subset": subset,
            "merged_from": list(models),
        },
    )
    save_merge(
        out.with_suffix(".json"),
        {
            "convergent_version": __version__,
            "zoo": str(Path(zoo).resolve()),
            "checkpoints": {n: zoo_obj.record(n).sha256 for n in models},
            "model": {"file": model_path.name, "sha256": sha256_file(model_path)},
            "train_inputs": int(len(images)),
            **result.to_dict(),
        },
    )
    return result


def merge_summary(result: Any) -> list[dict[str, Any]]:
    """Rows: every net, the naive average, the merged net and the ensemble of the nets, with loss
    and accuracy per split."""

    def row(label: str, ev: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {"net": label}
        for split, m in ev.items():
            out[f"{split} loss"] = round(m["loss"], 4)
            out[f"{split} acc"] = round(100 * m["accuracy"], 2)
        return out

    rows = [row(n, ev) for n, ev in result.members.items()]
    if result.naive:
        rows.append(row(f"naive average (+{result.repair})", result.naive))
    rows.append(
        row(f"merged: {result.method} -> {result.reference} (+{result.repair})", result.evaluation)
    )
    if result.ensemble:
        rows.append(
            row(f"ensemble of the {len(result.members)} nets (mean logits)", result.ensemble)
        )
    return rows
