"""The collection loop: run every net on the same batches, one streaming pass, O(d^2) memory.

Activations are never stored: each batch's layer outputs are reshaped to (samples, units),
concatenated over the nets, and folded into that layer's joint :class:`~convergent.stats.Moments` and
:class:`~convergent.stats.TopK`. Under ``torchrun`` every rank takes a contiguous shard of the inputs
and the shards are merged exactly, in rank order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._errors import ConvergentError
from convergent._progress import bar
from convergent.collect._hooks import capture, resolve_layers
from convergent.collect._samples import is_channels_first, to_samples
from convergent.models import default_layers
from convergent.stats import KernelMoments, LayerStatistics, Moments, Statistics, TopK, all_merge


@dataclass(frozen=True)
class BatchView:
    """One batch as ``collect`` observers see it (``observers=[...]``, ``observer.observe(view)``).

    Attributes
    ----------
    nets, layers : list of str
    outputs : mapping of (net, layer) to tensor
        The raw layer outputs of this batch (do not keep them: they are freed after the batch).
    input_index : ndarray of int64
        The inputs of this batch (global indices into ``data``).
    spatial : str
        ``collect``'s sample mode.
    channels_first : mapping of layer to bool
    """

    nets: list[str]
    layers: list[str]
    outputs: Mapping[tuple[str, str], torch.Tensor]
    input_index: np.ndarray
    spatial: str
    channels_first: Mapping[str, bool]

    def samples(self, net: str, layer: str) -> torch.Tensor:
        """(samples, units) as collect folds them (positions or spatial means)."""
        out = self.outputs[(net, layer)]
        return to_samples(out, spatial=self.spatial, channels_first=self.channels_first[layer])[0]

    def pooled(self, net: str, layer: str) -> torch.Tensor:
        """(B, units): one spatially averaged feature vector per input."""
        out = self.outputs[(net, layer)]
        return to_samples(out, spatial="mean", channels_first=self.channels_first[layer])[0]

    def flat(self, net: str, layer: str) -> torch.Tensor:
        """(B, features): each input's whole map flattened."""
        out = self.outputs[(net, layer)]
        return out.reshape(out.shape[0], -1)


def _as_inputs(data: Any) -> Any:
    """Accept a tensor of inputs, an (inputs, labels) pair, or a torch Dataset of (x[, y])."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0]
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    raise TypeError(
        "The 'data' parameter of collect must be a tensor of inputs, an (inputs, labels) pair or "
        f"an indexable torch Dataset. Got {type(data).__name__} instead."
    )


def _batch(inputs: Any, start: int, stop: int) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:stop]
    items = [inputs[i] for i in range(start, stop)]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return torch.stack([torch.as_tensor(it) for it in items])


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def collect(
    models: Mapping[str, nn.Module],
    data: Any,
    layers: Sequence[str] | None = None,
    *,
    spatial: str = "positions",
    batch_size: int = 256,
    topk: int | None = 9,
    exact: bool = False,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    distributed: bool | None = None,
    info: Mapping[str, Any] | None = None,
    kernel_sums: bool = False,
    observers: Sequence[Any] | None = None,
) -> Statistics:
    """Collect joint activation statistics of several nets in one pass over ``data``.

    Parameters
    ----------
    models : mapping of str to nn.Module
        The nets, by name (e.g. ``zoo.models()``). Each is run in eval mode, its train/eval state
        restored afterwards; models are moved to ``device``.
    data : tensor (N, ...) or (inputs, labels) or indexable Dataset
        The inputs, all nets see the same batches in the same order.
    layers : sequence of str, optional
        Dotted layer names present in every net (default: the first net's default layers).
    spatial : {'positions', 'mean'}
        ``positions``: every spatial position (token) of every input is a sample (the paper);
        ``mean``: one sample per input, averaged over space.
    batch_size : int
        Inputs per forward pass.
    topk : int or None
        Keep each unit's ``topk`` strongest samples (input index, position); ``None`` to skip.
    exact : bool
        Per-batch products in float64 too (default: in the activations' precision after centering).
    device : str or torch.device
        Where the nets run and the per-batch products are computed.
    distributed : bool, optional
        Shard the inputs over the ranks of the initialised ``torch.distributed`` process group and
        merge the statistics (default: when a group with more than one rank is initialised). Every
        rank returns the same merged result.
    info : mapping, optional
        Free description (dataset, split, zoo) stored with the statistics.
    kernel_sums : bool
        Keep each layer's moments as a :class:`~convergent.stats.KernelMoments` (a
        ``Moments`` plus the per-sample sums that make debiased CKA exact; O(K D) more state,
        saved in the same file). Not yet with ``distributed``.
    observers : sequence, optional
        Extra accumulators called once per batch as ``observer.observe(view)`` with a
        :class:`BatchView` (e.g. ``convergent.collect.PooledLayerMoments``). They are not part
        of the returned statistics: keep a reference. Under ``distributed`` each rank's observers
        see only its shard (merge them yourself).

    Returns
    -------
    Statistics
    """
    if not models:
        raise ValueError("The 'models' parameter of collect must name at least one model.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be an integer >= 1. Got {batch_size!r}.")
    if topk is not None and (int(topk) != topk or topk < 1):
        raise ValueError(f"The 'topk' parameter must be None or an integer >= 1. Got {topk!r}.")
    inputs = _as_inputs(data)
    n_total = len(inputs)
    if n_total == 0:
        raise ValueError("The 'data' parameter of collect holds no inputs.")
    names = list(models)
    first = models[names[0]]
    layers = list(layers) if layers else default_layers(first)
    for name, model in models.items():
        resolve_layers(model, layers, name)
        model.to(device)

    rank, world = _world()
    use_dist = world > 1 if distributed is None else bool(distributed)
    if use_dist and world == 1:
        raise ConvergentError(
            "collect(distributed=True) needs an initialised torch.distributed process group; "
            "launch with `torchrun --nproc_per_node=N` (the CLI initialises the group itself)."
        )
    if not use_dist:
        rank, world = 0, 1
    if kernel_sums and use_dist:
        raise ConvergentError(
            "collect(kernel_sums=True) does not support distributed collection yet; run it in one "
            "process (or without kernel_sums)."
        )
    observers = list(observers or [])
    for obs in observers:
        if not callable(getattr(obs, "observe", None)):
            raise TypeError(
                "Each of collect's 'observers' must have an observe(view) method. Got "
                f"{type(obs).__name__} instead."
            )
    lo, hi = rank * n_total // world, (rank + 1) * n_total // world

    channels_first = {
        layer: is_channels_first(dict(first.named_modules())[layer]) for layer in layers
    }
    state: dict[str, dict[str, Any]] = {}
    with torch.inference_mode(), capture(models, layers) as store:
        # a probe forward on one input fixes every layer's widths (on every rank, even an empty one)
        _forward(models, _batch(inputs, 0, 1).to(device))
        for layer in layers:
            ranges, start = {}, 0
            for net in names:
                out = store.outputs[(net, layer)]
                s, shape = to_samples(out, spatial=spatial, channels_first=channels_first[layer])
                ranges[net] = (start, start + s.shape[1])
                start += s.shape[1]
            if kernel_sums:
                moments = KernelMoments(start, ranges, exact=exact)
            else:
                moments = Moments(start, exact=exact)
            moments.metadata.update(
                {"layer": layer, "unit_ranges": {k: list(v) for k, v in ranges.items()}}
            )
            state[layer] = {
                "ranges": ranges,
                "shape": shape,
                "moments": moments,
                "topk": TopK(start, topk) if topk else None,
            }
        store.clear()
        batches = range(lo, hi, batch_size)
        for batch_no, start in enumerate(
            bar(batches, progress=progress if rank == 0 else False, desc="collect", unit="batch")
        ):
            stop = min(start + batch_size, hi)
            _forward(models, _batch(inputs, start, stop).to(device))
            for layer in layers:
                _fold(
                    layer,
                    names,
                    store.outputs,
                    state[layer],
                    spatial,
                    channels_first[layer],
                    np.arange(start, stop),
                    batch_no,
                )
            if observers:
                view = BatchView(
                    names,
                    layers,
                    store.outputs,
                    np.arange(start, stop, dtype=np.int64),
                    spatial,
                    channels_first,
                )
                for obs in observers:
                    obs.observe(view)
            store.clear()

    if use_dist:
        _merge_ranks(state)
    result = {}
    for layer in layers:
        st = state[layer]
        result[layer] = LayerStatistics(
            layer, st["moments"], st["ranges"], tuple(st["shape"]), st["topk"]
        )
    settings = {
        "spatial": spatial,
        "batch_size": int(batch_size),
        "topk": topk,
        "exact": bool(exact),
        "world_size": int(world),
    }
    if kernel_sums:
        settings["kernel_sums"] = True
    return Statistics(result, names, n_total, settings, dict(info or {}))


def _forward(models: Mapping[str, nn.Module], x: torch.Tensor) -> None:
    for model in models.values():
        model(x)


def _fold(
    layer: str,
    names: Sequence[str],
    outputs: Mapping[tuple[str, str], torch.Tensor],
    st: dict[str, Any],
    spatial: str,
    channels_first: bool,
    input_index: np.ndarray,
    batch_no: int,
) -> None:
    parts = []
    counts = {}
    for net in names:
        s, shape = to_samples(outputs[(net, layer)], spatial=spatial, channels_first=channels_first)
        if s.shape[1] != st["ranges"][net][1] - st["ranges"][net][0]:
            raise ConvergentError(
                f"Layer {layer!r} of net {net!r} changed width between batches ({s.shape[1]} units "
                f"instead of {st['ranges'][net][1] - st['ranges'][net][0]})."
            )
        counts[net] = (s.shape[0], shape)
        parts.append(s)
    if len({c for c, _ in counts.values()}) > 1:
        detail = ", ".join(
            f"{net}: {c} samples (map {tuple(shape)})" for net, (c, shape) in counts.items()
        )
        raise ConvergentError(
            f"The nets disagree on the number of samples at layer {layer!r} ({detail}), so their "
            "units cannot be compared sample by sample. Their maps differ in size; use "
            "spatial='mean' (CLI: --spatial mean) to average each map to one sample per input."
        )
    joint = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    try:
        st["moments"].update(joint)
    except ValueError as exc:
        ranges = ", ".join(f"{n} {a}-{b - 1}" for n, (a, b) in st["ranges"].items())
        raise ValueError(
            f"while collecting layer {layer!r} (joint units: {ranges}) at inputs "
            f"{int(input_index[0])}-{int(input_index[-1])}: {exc}"
        ) from exc
    if st["topk"] is not None:
        per_input = joint.shape[0] // len(input_index)
        st["topk"].update(
            joint,
            np.repeat(input_index, per_input),
            np.tile(np.arange(per_input, dtype=np.int64), len(input_index)),
        )


def _merge_ranks(state: dict[str, dict[str, Any]]) -> None:
    import torch.distributed as dist

    for layer in sorted(state):
        st = state[layer]
        st["moments"] = all_merge(st["moments"])
        if st["topk"] is not None:
            mine = st["topk"]
            merged = TopK(mine.units, mine.k)
            gathered = {}
            # nccl moves only CUDA tensors; gloo only CPU ones
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            for key in ("value", "index", "position"):
                local = torch.from_numpy(np.ascontiguousarray(getattr(mine, key))).to(device)
                parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
                dist.all_gather(parts, local)
                gathered[key] = [p.cpu().numpy() for p in parts]
            for r in range(dist.get_world_size()):
                merged.merge(TopK.from_arrays({k: v[r] for k, v in gathered.items()}))
            st["topk"] = merged


def iter_batches(inputs: Any, batch_size: int) -> Iterable[torch.Tensor]:
    """Batches of ``inputs`` in order (a helper for second passes such as mutual information)."""
    inputs = _as_inputs(inputs)
    for start in range(0, len(inputs), batch_size):
        yield _batch(inputs, start, min(start + batch_size, len(inputs)))
