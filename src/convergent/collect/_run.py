"""`convergent collect` as one library function: nets (a zoo, or checkpoints) + a dataset split ->
a statistics directory, with everything later stages need (moments, top-k and the patches behind
it, pooled all-layer moments, mutual-information histograms, each net's score on these inputs).

Resumable: an output folder made from the same nets (by checksum), data and settings is reused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent._manifest import relative_ref, reuse_or_refuse
from convergent.collect._loop import collect
from convergent.collect._observers import (
    MutualInformationObserver,
    PooledLayerMoments,
    ScoresObserver,
)
from convergent.collect._patches import token_windows, topk_patches
from convergent.collect._samples import is_channels_first
from convergent.data import describe_preprocessing, load_dataset, load_tokens, preprocessed
from convergent.stats import FIT_DIR, STATS_FORMAT, Statistics
from convergent.stats._directory import STATS_VERSION
from convergent.zoo import checkpoint_metadata, dataset_of_zoo, load_net, load_zoo

SPLITS = ("train", "test")
MI_PAIRS = ("none", "first", "all")


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


def _dataset_identity(ds: Any) -> dict[str, Any]:
    """What decides a dataset's inputs (not where its files are)."""
    d = ds.describe()
    return {
        k: d[k] for k in ("name", "train_size", "test_size", "input_shape", "mean", "std", "subset")
    }


def _nets_from_zoo(
    zoo_dir: Path, out: Path
) -> tuple[dict[str, nn.Module], list[dict], tuple[str, int | None]]:
    zoo = load_zoo(zoo_dir)
    models = zoo.models()
    nets = []
    for rec in zoo.nets:
        nets.append(
            {
                "name": rec.name,
                "arch": rec.arch,
                "kwargs": dict(rec.kwargs),
                "seeds": dict(rec.seeds),
                "source": {
                    "kind": "zoo",
                    "zoo": relative_ref(zoo_dir, out),
                    "checkpoint": relative_ref(zoo_dir / rec.checkpoint, out),
                    "sha256": rec.sha256,
                },
                "trained": {
                    "dataset": rec.dataset,
                    "epochs": rec.epochs,
                    "train_accuracy": rec.train_accuracy,
                    "test_accuracy": rec.test_accuracy,
                },
            }
        )
    return models, nets, dataset_of_zoo(zoo)


def _subset_of(checkpoints: Sequence[str | os.PathLike], dataset: str) -> int | None:
    """The training subset recorded in checkpoints made by convergent for ``dataset`` (their
    inputs were normalised with its statistics), when they all agree; else None."""
    found = set()
    for path in checkpoints:
        meta = checkpoint_metadata(Path(path))
        found.add(meta.get("subset") if meta.get("dataset") == dataset else None)
    return found.pop() if len(found) == 1 else None


def _nets_from_checkpoints(
    arch: str,
    checkpoints: Sequence[str | os.PathLike],
    model_kwargs: Mapping[str, Any],
    ds: Any,
    out: Path,
) -> tuple[dict[str, nn.Module], list[dict]]:
    stems = [Path(p).stem for p in checkpoints]
    if len(set(stems)) != len(stems):
        raise ValueError("Checkpoint file names must differ (their stems name the nets).")
    models, nets = {}, []
    for path in map(Path, checkpoints):
        net = load_net((None, path.stem, path), ds, arch=arch, model_kwargs=model_kwargs)
        models[net.name] = net.model
        nets.append(
            {
                "name": net.name,
                "arch": net.arch,
                "kwargs": dict(net.kwargs),
                "source": {
                    "kind": "checkpoint",
                    "path": relative_ref(path, out),
                    "sha256": net.sha256,
                },
            }
        )
    return models, nets


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
    exact: bool = True,
    device: str = "cpu",
    max_inputs: int | None = None,
    kernel_sums: bool = True,
    pooled: bool = True,
    mi: str | bool = "none",
    mi_bins: int = 10,
    mi_inputs: int | None = 500,
    patches: bool = True,
    preprocessing: str | None = None,
    fit_split: str | None = None,
    fit_inputs: int | None = 10000,
    inputs: str | os.PathLike | None = None,
    vocab: str | os.PathLike | None = None,
    nets: tuple[Mapping[str, nn.Module], Sequence[Mapping[str, Any]]] | None = None,
    subset: int | None = None,
    progress: bool | None = None,
) -> Statistics:
    """Collect statistics of a zoo's nets (or of ``arch`` + ``checkpoints``) and write them to ``out``.

    Under ``torchrun`` the process group is initialised from the environment, every rank collects a
    shard, every statistic is merged exactly, and rank 0 writes the directory. If ``out`` already
    holds statistics made from the same nets (by SHA-256), data and settings, they are loaded
    instead of recomputed (a folder collected without the optional extras -- kernel sums, pooled
    moments, mutual information, patches -- is reused as it is).

    Parameters
    ----------
    zoo : path, optional
        A zoo directory (from ``convergent train``); or ``arch`` and ``checkpoints``; or ``nets``.
    dataset, data_dir : the data (default: the zoo's dataset).
    subset : int, optional
        The training subset the nets' inputs are normalised with (a zoo records its own).
    split : {'train', 'test'}
    layers : sequence of str, optional
        Dotted layer names (default: the model's default layers, in forward order).
    exact : bool
        Per-batch products in float64 (default); ``False``: float32 after centring (see
        :func:`collect`).
    max_inputs : int, optional
        Only the first ``max_inputs`` inputs of the split.
    kernel_sums, pooled : bool
        Keep each layer's moments as ``KernelMoments`` (exact debiased CKA); keep one
        ``KernelMoments`` over every layer's spatially averaged units of all nets (layer x layer
        CKA).
    mi : {'none', 'first', 'all'}
        Mutual-information histograms for no pair, the first pair, or every pair of nets
        (``mi_bins`` bins per unit, over the first ``mi_inputs`` inputs).
    patches : bool
        Keep the input patch behind every top-k entry (image inputs only), for the report.
    preprocessing : str, optional
        What the nets see: ``dataset`` (default), ``none`` or ``package.module:function`` (see
        :mod:`convergent.data`).
    inputs : path, optional
        Token inputs for text models instead of a dataset: a ``.npz`` file (or a directory of
        ``.npy`` files) of named arrays (``input_ids``, ``attention_mask``, ...; ``labels``
        optional), passed to the models as keyword arguments; padding is masked by
        ``attention_mask``. Goes with ``arch`` and ``checkpoints``.
    vocab : path, optional
        With ``inputs``: a vocabulary (one token per line) so the report shows the tokens that
        drive units.
    nets : (models, records), optional
        Nets already loaded: ``{name: module}`` and one record per net (``name``, ``arch``,
        ``kwargs``, ``source`` with a ``sha256`` identifying its weights; e.g. from
        ``convergent compare``). Goes with ``dataset`` (or ``inputs``).
    fit_split : {'train', 'test'}, optional
        Also collect the joint moments of this other split (at most ``fit_inputs`` inputs) into
        ``out/fit``: ``convergent analyze`` then fits one-to-many prediction there and scores it
        on ``split`` (held-out errors, as the paper reports).
    """
    if split not in SPLITS:
        raise ValueError(f"The 'split' parameter must be one of {SPLITS}. Got {split!r} instead.")
    if nets is not None:
        if zoo is not None or arch is not None or checkpoints:
            raise ValueError("Give either loaded nets or a zoo / checkpoint files, not both.")
    elif (zoo is None) == (arch is None):
        raise ValueError("Give either a zoo directory or an architecture with --checkpoint files.")
    elif zoo is None and not checkpoints:
        raise ValueError("An architecture needs at least one --checkpoint file.")
    mi = {True: "first", False: "none"}.get(mi, mi) if isinstance(mi, bool) else mi
    if mi not in MI_PAIRS:
        raise ValueError(f"The 'mi' parameter must be one of {MI_PAIRS}. Got {mi!r} instead.")
    out = Path(out)
    joined = _init_distributed(device)
    try:
        return _collect_run(
            out,
            zoo=zoo,
            arch=arch,
            checkpoints=checkpoints,
            model_kwargs=model_kwargs,
            dataset=dataset,
            data_dir=data_dir,
            split=split,
            layers=layers,
            spatial=spatial,
            batch_size=batch_size,
            topk=topk,
            exact=exact,
            device=device,
            max_inputs=max_inputs,
            kernel_sums=kernel_sums,
            pooled=pooled,
            mi=mi,
            mi_bins=mi_bins,
            mi_inputs=mi_inputs,
            patches=patches,
            preprocessing=preprocessing,
            fit_split=fit_split,
            fit_inputs=fit_inputs,
            inputs=inputs,
            vocab=vocab,
            nets=nets,
            subset=subset,
            progress=progress,
        )
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()


def _collect_run(out: Path, **kw: Any) -> Statistics:
    """The body of :func:`collect_run`, inside an initialised process group when there is one."""
    zoo, arch, checkpoints, split = kw["zoo"], kw["arch"], kw["checkpoints"], kw["split"]
    model_kwargs, dataset, data_dir = kw["model_kwargs"], kw["dataset"], kw["data_dir"]
    subset = kw["subset"]
    layers, spatial, batch_size, topk = kw["layers"], kw["spatial"], kw["batch_size"], kw["topk"]
    exact, device, max_inputs = kw["exact"], kw["device"], kw["max_inputs"]
    kernel_sums, pooled, mi, mi_bins = kw["kernel_sums"], kw["pooled"], kw["mi"], kw["mi_bins"]
    mi_inputs, patches, preprocessing = kw["mi_inputs"], kw["patches"], kw["preprocessing"]
    fit_split, fit_inputs, progress = kw["fit_split"], kw["fit_inputs"], kw["progress"]
    token_file, vocab, loaded = kw["inputs"], kw["vocab"], kw["nets"]
    if fit_split is not None:
        if fit_split not in SPLITS or fit_split == split:
            raise ValueError(
                f"The 'fit_split' parameter must be the other split than {split!r} (one of "
                f"{SPLITS}). Got {fit_split!r} instead."
            )
    tokens = None
    if token_file is not None:
        if zoo is not None or dataset is not None or fit_split is not None:
            raise ValueError(
                "Token inputs (--inputs) go with --arch and --checkpoint files, without a zoo, a "
                "dataset or a fit split."
            )
        tokens = load_tokens(token_file, vocab=vocab)
        ds = None
        models, nets = _nets_from_checkpoints(
            arch, checkpoints, dict(model_kwargs or {}), None, out
        )
        images: Any = tokens.tensors(max_inputs)
        labels = torch.from_numpy(tokens.labels[:max_inputs]) if tokens.labels is not None else None
        data_identity = {"name": "tokens", "sha256": tokens.sha256}
        data_info = {**tokens.describe(), "source": relative_ref(token_file, out)}
    else:
        if loaded is not None:
            ds = load_dataset(dataset or "digits", data_dir, subset=subset)
            models, nets = dict(loaded[0]), [dict(n) for n in loaded[1]]
        elif zoo is not None:
            models, nets, (zoo_dataset, zoo_subset) = _nets_from_zoo(Path(zoo), out)
            # the nets were normalised with the statistics of the training subset they saw
            same = dataset is None or dataset == zoo_dataset
            ds = load_dataset(
                dataset or zoo_dataset, data_dir, subset=zoo_subset if same else subset
            )
        else:
            dataset = dataset or "digits"
            if subset is None:  # the training subset the checkpoints say they were normalised with
                subset = _subset_of(checkpoints, dataset)
            ds = load_dataset(dataset, data_dir, subset=subset)
            models, nets = _nets_from_checkpoints(
                arch, checkpoints, dict(model_kwargs or {}), ds, out
            )
        images = preprocessed(ds, split, preprocessing)
        labels = ds.split(split)[1]
        if max_inputs is not None:
            images, labels = images[:max_inputs], labels[:max_inputs]
        data_identity, data_info = _dataset_identity(ds), ds.describe()
    settings = {
        "spatial": spatial,
        "batch_size": int(batch_size),
        "topk": topk,
        "exact": bool(exact),
        "kernel_sums": bool(kernel_sums),
        "pooled": bool(pooled),
        "mi": mi,
        "mi_bins": int(mi_bins),
        "mi_inputs": mi_inputs,
        "patches": bool(patches),
    }
    identity = {
        "nets": {n["name"]: n["source"]["sha256"] for n in nets},
        "dataset": data_identity,
        "split": split,
        "num_inputs": len(images),
        "preprocessing": preprocessing or "dataset",
        **{k: settings[k] for k in ("spatial", "batch_size", "topk", "exact")},
        "fit_split": fit_split,
        "fit_inputs": fit_inputs if fit_split is not None else None,
    }
    existing = reuse_or_refuse(
        out, STATS_FORMAT, identity, what="statistics", version=STATS_VERSION
    )
    if existing is not None:
        have = [entry["name"] for entry in existing["layers"]]
        wanted = list(layers or have)
        if set(wanted) <= set(have):
            return Statistics.load(out, layers=wanted if layers else None)
        raise ConvergentError(
            f"{out} already holds statistics of these nets and data, but of layers {have}, not "
            f"{[w for w in wanted if w not in have]}. Choose another output directory (--out); "
            "nothing was overwritten."
        )
    if fit_split is not None:
        _collect_run(
            out / FIT_DIR,
            zoo=zoo,
            arch=arch,
            checkpoints=[Path(p).resolve() for p in checkpoints],
            model_kwargs=model_kwargs,
            dataset=dataset,
            data_dir=data_dir,
            split=fit_split,
            layers=layers,
            spatial=spatial,
            batch_size=batch_size,
            topk=None,
            exact=exact,
            device=device,
            max_inputs=fit_inputs,
            kernel_sums=False,
            pooled=False,
            patches=False,
            mi="none",
            mi_bins=mi_bins,
            mi_inputs=mi_inputs,
            preprocessing=preprocessing,
            fit_split=None,
            fit_inputs=None,
            inputs=None,
            vocab=None,
            nets=kw["nets"],
            subset=subset,
            progress=progress,
        )
    info = {
        "source": {
            "kind": "zoo" if zoo is not None else ("checkpoints" if loaded is None else "nets"),
            **({"zoo": relative_ref(zoo, out)} if zoo is not None else {"arch": arch}),
            "checkpoints": {n["name"]: n["source"]["sha256"] for n in nets},
        },
        "dataset": data_info,
        "split": split if tokens is None else None,
        "num_inputs": len(images),
        "preprocessing": {
            "name": preprocessing or "dataset",
            "description": describe_preprocessing(preprocessing),
        },
        "nets": nets,
    }

    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    observers: list[Any] = [ScoresObserver()]
    if pooled:
        observers.append(PooledLayerMoments(exact=exact))
    names = [n["name"] for n in nets]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    mi_observer = None
    if mi != "none" and len(names) > 1:
        mi_observer = MutualInformationObserver(
            pairs[:1] if mi == "first" else pairs,
            bins=mi_bins,
            max_inputs=mi_inputs,
        )
        observers.append(mi_observer)
    stats = collect(
        models,
        (images, labels) if labels is not None else images,
        layers,
        spatial=spatial,
        batch_size=batch_size,
        topk=topk,
        exact=exact,
        device=device,
        progress=progress,
        info=info,
        kernel_sums=kernel_sums,
        observers=observers,
    )
    stats.settings.update(settings)
    scores_observer = observers[0]
    stats.scores = dict(scores_observer.scores)
    for net in nets:
        if net["name"] in stats.scores:
            net["scores"] = {"split": split, **stats.scores[net["name"]].to_dict()}
    if pooled and observers[1].moments is not None:
        stats.pooled, stats.pooled_layers = observers[1].moments, list(observers[1].layers)
    if mi_observer is not None:
        for name, ls in stats.layers.items():
            ls.mi = mi_observer.for_layer(name)
    rank0 = not distributed or dist.get_rank() == 0
    if rank0 and patches and topk and tokens is not None and "input_ids" in images:
        ids = images["input_ids"]
        mask = images.get("attention_mask")
        used: set[int] = set()
        for ls in stats.layers.values():
            if ls.map_shape and ls.map_shape[0] == ids.shape[1]:  # a token layer
                ls.patches = token_windows(ids, ls.topk.index, ls.topk.position, mask=mask)
                used |= set(np.unique(ls.patches["tokens"]).tolist())
        if tokens.vocab is not None:
            stats.info["vocab"] = {
                str(i): tokens.vocab[i] for i in sorted(used) if 0 <= i < len(tokens.vocab)
            }
    if rank0 and patches and topk and isinstance(images, torch.Tensor) and images.ndim == 4:
        first = models[names[0]]
        for name, ls in stats.layers.items():
            ls.patches = topk_patches(
                {n: m.to("cpu") for n, m in models.items()},
                name,
                images,
                ls.topk.index,
                ls.topk.position,
                ls.unit_ranges,
                channels_first=is_channels_first(dict(first.named_modules())[name]),
                map_shape=ls.map_shape,
            )
    if rank0:
        stats.save(out, identity=identity)
    if distributed:
        dist.barrier()
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
