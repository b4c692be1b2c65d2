"""`convergent collect` as one library function: nets from a zoo (or user checkpoints) + a dataset
split -> a statistics directory. Resumable: an existing directory with the same inputs is reused."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from convergent._errors import ConvergentError
from convergent._io import read_json, sha256_file
from convergent.collect._loop import collect
from convergent.stats._directory import MANIFEST, Statistics

SPLITS = ("train", "test")


def _init_distributed(device: str) -> bool:
    """Join the process group torchrun describes in the environment (if any). True if joined here."""
    import torch.distributed as dist

    if (
        int(os.environ.get("WORLD_SIZE", "1")) <= 1
        or not dist.is_available()
        or dist.is_initialized()
    ):
        return False
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def collect_run(
    out: str | os.PathLike,
    *,
    zoo: str | os.PathLike | None = None,
    arch: str | None = None,
    checkpoints: Sequence[str | os.PathLike] = (),
    model_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    layers: Sequence[str] | None = None,
    spatial: str = "positions",
    batch_size: int = 256,
    topk: int | None = 9,
    exact: bool = False,
    device: str = "cpu",
    max_inputs: int | None = None,
    kernel_sums: bool = True,
    pooled: bool = True,
    progress: bool | None = None,
) -> Statistics:
    """Collect statistics of a zoo's nets (or of ``arch`` + ``checkpoints``) and write them to ``out``.

    Under ``torchrun`` the process group is initialised from the environment, every rank collects a
    shard, and rank 0 writes the directory. If ``out`` already holds statistics made from the same
    nets, data and settings they are loaded instead of recomputed.

    ``kernel_sums`` keeps each layer's moments as a ``KernelMoments`` (debiased CKA); ``pooled``
    also keeps one ``KernelMoments`` over every collected layer's spatially averaged units of all
    nets (layer x layer CKA; ``Statistics.pooled``). Neither is supported under distributed
    collection yet: there they are left off and the manifest's ``settings`` say why. An existing
    directory is reused whatever its extras (older ones have neither).
    """
    from convergent.data import load_dataset
    from convergent.zoo import load_weights, load_zoo

    if split not in SPLITS:
        raise ValueError(f"The 'split' parameter must be one of {SPLITS}. Got {split!r} instead.")
    if (zoo is None) == (arch is None):
        raise ValueError("Give either a zoo directory or an architecture with --checkpoint files.")
    if zoo is not None:
        zoo_obj = load_zoo(zoo)
        dataset = dataset or zoo_obj.manifest["settings"]["dataset"]
        source = {
            "zoo": str(Path(zoo).resolve()),
            "checkpoints": {n.name: n.sha256 for n in zoo_obj.nets},
        }
    else:
        if not checkpoints:
            raise ValueError("An architecture needs at least one --checkpoint file.")
        source = {
            "arch": arch,
            "model_kwargs": dict(model_kwargs or {}),
            "checkpoints": {Path(p).stem: sha256_file(p) for p in checkpoints},
        }
        if len(source["checkpoints"]) != len(checkpoints):
            raise ValueError("Checkpoint file names must differ (their stems name the nets).")
    ds = load_dataset(dataset or "digits", data_dir)
    images, _ = ds.split(split)
    if max_inputs is not None:
        images = images[:max_inputs]
    settings = {
        "spatial": spatial,
        "batch_size": int(batch_size),
        "topk": topk,
        "exact": bool(exact),
        "kernel_sums": bool(kernel_sums),
        "pooled": bool(pooled),
    }
    info = {"source": source, "dataset": ds.describe(), "split": split, "num_inputs": len(images)}

    out = Path(out)
    if (out / MANIFEST).is_file():
        old = read_json(out / MANIFEST)
        # kernel sums and pooled moments are extras: a directory without them is still reused
        core = ("spatial", "batch_size", "topk", "exact")
        same_settings = all(old.get("settings", {}).get(k) == settings[k] for k in core)
        wanted = layers or list(old.get("layers", {}))
        if (
            old.get("info", {}).get("source") == source
            and same_settings
            and old.get("info", {}).get("num_inputs") == len(images)
            and set(wanted) <= set(old.get("layers", {}))
        ):
            return Statistics.load(out)
        raise ConvergentError(
            f"{out} already holds statistics from other nets, data or settings. Choose another "
            "output directory (--out); nothing was overwritten."
        )

    if zoo is not None:
        models = zoo_obj.models()
    else:
        from convergent.models import build_model

        c, h, w = ds.input_shape
        models = {}
        for path in checkpoints:
            model = build_model(
                arch,
                in_channels=c,
                input_size=(h, w),
                num_classes=ds.num_classes,
                **dict(model_kwargs or {}),
            )
            models[Path(path).stem] = load_weights(model, path).eval()

    joined = _init_distributed(device)
    try:
        import torch.distributed as dist

        notes = []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for key in ("kernel_sums", "pooled"):
                if settings[key]:
                    notes.append(
                        f"{key} left off: not supported under distributed collection yet "
                        "(collect in one process for debiased / layer x layer CKA)"
                    )
            kernel_sums = pooled = False
        observer = None
        if pooled:
            from convergent.collect._observers import PooledLayerMoments

            observer = PooledLayerMoments(exact=exact)
        stats = collect(
            models,
            images,
            layers,
            spatial=spatial,
            batch_size=batch_size,
            topk=topk,
            exact=exact,
            device=device,
            progress=progress,
            info=info,
            kernel_sums=kernel_sums,
            observers=[observer] if observer is not None else None,
        )
        # the requested settings (so a re-run with the same ones reuses the directory)
        stats.settings.update({k: settings[k] for k in ("kernel_sums", "pooled")})
        if notes:
            stats.settings["notes"] = notes
        if observer is not None and observer.moments is not None:
            stats.pooled, stats.pooled_layers = observer.moments, list(observer.layers)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            stats.save(out)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    return stats


def stats_summary(stats: Statistics) -> list[dict[str, Any]]:
    """One row per layer: units per net, samples, samples per input, dead units."""
    rows = []
    for name, ls in stats.layers.items():
        widths = sorted({ls.width(n) for n in ls.nets})
        rows.append(
            {
                "layer": name,
                "units/net": "/".join(map(str, widths)),
                "samples": ls.samples,
                "map": "x".join(map(str, ls.map_shape)) or "-",
                "dead units": len(ls.moments.dead_units()),
            }
        )
    return rows
