"""The collection loop: run every net on the same batches, one streaming pass, O(d^2) memory.

Activations are never stored. Each batch's layer outputs are handed to *observers*, each feeding
its own statistics: the built-in :class:`LayerAccumulator` reshapes every layer's output to
(samples, units), concatenates the nets and folds the joint matrix into that layer's
:class:`~convergent.stats.Moments` (or ``KernelMoments``) and :class:`~convergent.stats.TopK`;
others add pooled all-layer moments, mutual-information histograms, classifier scores, sample
buffers (``convergent.collect._observers``). Under ``torchrun`` every rank takes a contiguous
shard of the inputs, and every statistic of every observer is merged exactly, in rank order, by
the one generic rank merge (:func:`convergent.stats.all_merge`).

An observer is any object with ``observe(view)``; optionally ``probe_inputs`` (an int) and
``prepare(view)``, called once before the pass with the first ``probe_inputs`` inputs (the same on
every rank: e.g. bin edges), and ``statistics()`` / ``load_statistics(merged)``, through which its
statistics are merged across ranks.
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
from convergent.models import default_layers, describe_layers
from convergent.stats import (
    KernelMoments,
    LayerStatistics,
    Moments,
    Statistic,
    Statistics,
    TopK,
    all_merge,
)


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
    logits : mapping of net to tensor, optional
        Each net's own output for the batch (what its forward returned, when a tensor).
    labels : tensor, optional
        The batch's labels, when the data came with labels.
    mask : tensor, optional
        (B, T) bool: which token positions are samples (padding is not). Applied to every token
        layer whose outputs have T positions; other layers are unaffected.
    """

    nets: list[str]
    layers: list[str]
    outputs: Mapping[tuple[str, str], torch.Tensor]
    input_index: np.ndarray
    spatial: str
    channels_first: Mapping[str, bool]
    logits: Mapping[str, torch.Tensor] | None = None
    labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def _mask(self, out: torch.Tensor, layer: str) -> torch.Tensor | None:
        """The token mask that applies to this output: (B, T) for a (B, T, C) token layer."""
        if self.mask is None or out.ndim != 3 or self.channels_first[layer]:
            return None
        return self.mask.to(out.device) if out.shape[1] == self.mask.shape[1] else None

    def samples(self, net: str, layer: str) -> torch.Tensor:
        """(samples, units) as collect folds them (positions or spatial means; padded positions
        are not samples)."""
        return self._rows(net, layer, self.spatial)

    def pooled(self, net: str, layer: str) -> torch.Tensor:
        """(B', units): one spatially averaged feature vector per input (inputs whose every
        position is padding are left out)."""
        return self._rows(net, layer, "mean")

    def _rows(self, net: str, layer: str, spatial: str) -> torch.Tensor:
        out = self.outputs[(net, layer)]
        mask = self._mask(out, layer)
        if mask is None:
            return to_samples(out, spatial=spatial, channels_first=self.channels_first[layer])[0]
        if spatial == "mean":
            valid = mask.any(dim=1)
            weights = mask[valid].to(out.dtype).unsqueeze(-1)
            return (out[valid] * weights).sum(1) / weights.sum(1)
        return out[mask]

    def positions(
        self, net: str, layer: str, spatial: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(input index, position) of every row of :meth:`samples` (or of :meth:`pooled` with
        ``spatial="mean"``): which input, and where in its map or sequence."""
        spatial = spatial or self.spatial
        out = self.outputs[(net, layer)]
        mask = self._mask(out, layer)
        index = np.asarray(self.input_index)
        if mask is not None:
            if spatial == "mean":
                keep = mask.any(dim=1).cpu().numpy()
                return index[keep], np.zeros(int(keep.sum()), dtype=np.int64)
            rows, cols = torch.nonzero(mask, as_tuple=True)
            return index[rows.cpu().numpy()], cols.cpu().numpy().astype(np.int64)
        rows = self._rows(net, layer, spatial).shape[0]
        per_input = rows // len(index)
        return (
            np.repeat(index, per_input),
            np.tile(np.arange(per_input, dtype=np.int64), len(index)),
        )

    def flat(self, net: str, layer: str) -> torch.Tensor:
        """(B, features): each input's whole map flattened."""
        out = self.outputs[(net, layer)]
        return out.reshape(out.shape[0], -1)

    def samples_per_input(self, net: str, layer: str) -> int:
        """Rows of :meth:`samples` per input (spatial positions or tokens; 1 for vectors)."""
        return self.samples(net, layer).shape[0] // len(self.input_index)


class LayerAccumulator:
    """The built-in observer: per layer, the joint moments of all nets' units and their top-k.

    Parameters
    ----------
    topk : int or None
        Inputs kept per unit (None: no top-k).
    exact : bool
        Per-batch products in float64 (see :class:`~convergent.stats.Moments`).
    kernel_sums : bool
        Keep each layer's moments as a ``KernelMoments`` (exact debiased CKA).
    """

    def __init__(self, *, topk: int | None = 9, exact: bool = True, kernel_sums: bool = False):
        self.topk, self.exact, self.kernel_sums = topk, exact, kernel_sums
        self.probe_inputs = 1
        self.state: dict[str, dict[str, Any]] = {}

    def prepare(self, view: BatchView) -> None:
        """Fix every layer's unit ranges from the probe batch."""
        for layer in view.layers:
            ranges, start, shape = {}, 0, ()
            for net in view.nets:
                s, shape = to_samples(
                    view.outputs[(net, layer)],
                    spatial=view.spatial,
                    channels_first=view.channels_first[layer],
                )
                ranges[net] = (start, start + s.shape[1])
                start += s.shape[1]
            if self.kernel_sums:
                moments: Moments = KernelMoments(start, ranges, exact=self.exact)
            else:
                moments = Moments(start, exact=self.exact)
            moments.metadata.update(
                {"layer": layer, "unit_ranges": {k: list(v) for k, v in ranges.items()}}
            )
            self.state[layer] = {
                "ranges": ranges,
                "shape": tuple(shape),
                "moments": moments,
                "topk": TopK(start, self.topk) if self.topk else None,
            }

    def observe(self, view: BatchView) -> None:
        for layer in view.layers:
            self._fold(view, layer)

    def _fold(self, view: BatchView, layer: str) -> None:
        st = self.state[layer]
        parts, counts = [], {}
        for net in view.nets:
            s = view.samples(net, layer)
            shape = tuple(view.outputs[(net, layer)].shape[2:])
            start, stop = st["ranges"][net]
            if s.shape[1] != stop - start:
                raise ConvergentError(
                    f"Layer {layer!r} of net {net!r} changed width between batches ({s.shape[1]} "
                    f"units instead of {stop - start})."
                )
            counts[net] = (s.shape[0], shape)
            parts.append(s)
        if len({c for c, _ in counts.values()}) > 1:
            detail = ", ".join(
                f"{net}: {c} samples (map {tuple(shape)})" for net, (c, shape) in counts.items()
            )
            raise ConvergentError(
                f"The nets disagree on the number of samples at layer {layer!r} ({detail}), so "
                "their units cannot be compared sample by sample. Their maps differ in size; use "
                "spatial='mean' (CLI: --spatial mean) to average each map to one sample per input."
            )
        joint = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        index = view.input_index
        try:
            st["moments"].update(joint)
        except ValueError as exc:
            ranges = ", ".join(f"{n} {a}-{b - 1}" for n, (a, b) in st["ranges"].items())
            raise ValueError(
                f"while collecting layer {layer!r} (joint units: {ranges}) at inputs "
                f"{int(index[0])}-{int(index[-1])}: {exc}"
            ) from exc
        if st["topk"] is not None:
            st["topk"].update(joint, *view.positions(view.nets[0], layer))

    def statistics(self) -> dict[str, Statistic]:
        out: dict[str, Statistic] = {}
        for layer, st in self.state.items():
            out[f"{layer}/moments"] = st["moments"]
            if st["topk"] is not None:
                out[f"{layer}/topk"] = st["topk"]
        return out

    def load_statistics(self, merged: Mapping[str, Statistic]) -> None:
        for layer, st in self.state.items():
            st["moments"] = merged[f"{layer}/moments"]
            if st["topk"] is not None:
                st["topk"] = merged[f"{layer}/topk"]

    def layer_statistics(self) -> dict[str, LayerStatistics]:
        return {
            layer: LayerStatistics(layer, st["moments"], st["ranges"], st["shape"], st["topk"])
            for layer, st in self.state.items()
        }


def _channels_first(model: nn.Module, layers: Sequence[str], example: Any) -> dict[str, bool]:
    """Whether each layer's 3-D output is (B, C, L) rather than (B, T, C): from a forward trace
    (an activation after a Conv1d is channels-first too), else from the module's type."""
    modules = dict(model.named_modules())
    try:
        layout = {r["name"]: r["layout"] for r in describe_layers(model, example)}
    except Exception:  # noqa: BLE001 - a model the tracer cannot run: use the module types
        layout = {}
    return {
        layer: layout[layer] == "channels_first"
        if layout.get(layer) is not None
        else is_channels_first(modules[layer])
        for layer in layers
    }


def _as_inputs(data: Any) -> tuple[Any, Any]:
    """(inputs, labels or None) from a tensor of inputs, a mapping of named input tensors (e.g.
    ``input_ids`` and ``attention_mask``: passed to the models as keyword arguments), an
    (inputs, labels) pair of either, or a torch Dataset of (x[, y])."""
    if isinstance(data, torch.Tensor):
        return data, None
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data), None
    if isinstance(data, Mapping):
        return _check_named(data), None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (torch.Tensor, Mapping)):
        labels = data[1] if isinstance(data[1], torch.Tensor) else None
        inputs = _check_named(data[0]) if isinstance(data[0], Mapping) else data[0]
        return inputs, labels
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data, None
    raise TypeError(
        "The 'data' parameter of collect must be a tensor of inputs, a mapping of named input "
        "tensors, an (inputs, labels) pair or an indexable torch Dataset. Got "
        f"{type(data).__name__} instead."
    )


class _Named(dict):
    """Named input tensors with one row per input (a mapping that knows its length)."""

    def __len__(self) -> int:  # the number of inputs, not of names
        return int(next(iter(self.values())).shape[0])

    def names(self) -> list[str]:
        return list(self.keys())


def _check_named(data: Mapping[str, Any]) -> _Named:
    if not data:
        raise ValueError("The 'data' parameter of collect is an empty mapping of inputs.")
    out = _Named({str(k): torch.as_tensor(v) for k, v in data.items()})
    sizes = {k: int(v.shape[0]) if v.ndim else -1 for k, v in out.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(
            "Every named input of collect needs one row per input (the same first dimension). "
            f"Got {sizes} instead."
        )
    return out


def _batch(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:stop]
    if isinstance(inputs, _Named):
        return _Named({k: v[start:stop] for k, v in inputs.items()})
    items = [inputs[i] for i in range(start, stop)]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return torch.stack([torch.as_tensor(it) for it in items])


def _to(batch: Any, device: Any) -> Any:
    if isinstance(batch, Mapping):
        return _Named({k: v.to(device) for k, v in batch.items()})
    return batch.to(device)


def _mask_of(batch: Any, mask: Any) -> torch.Tensor | None:
    """The (B, T) token mask of a batch: ``mask="auto"`` takes a mapping's ``attention_mask``; a
    callable is called with the batch; None means no mask."""
    if mask is None:
        return None
    if isinstance(mask, str) and mask == "auto":
        if isinstance(batch, Mapping) and "attention_mask" in batch:
            return batch["attention_mask"] != 0
        return None
    if isinstance(mask, str):
        if not isinstance(batch, Mapping) or mask not in batch:
            raise ValueError(
                f"The mask {mask!r} is not one of the named inputs "
                f"{list(batch) if isinstance(batch, Mapping) else '(the inputs are not named)'}."
            )
        return batch[mask] != 0
    out = mask(batch)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(
            "A mask function must return a (batch, positions) tensor of which positions are "
            f"samples. Got {type(out).__name__} {tuple(getattr(out, 'shape', ()))} instead."
        )
    return out.bool()


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _forward(models: Mapping[str, nn.Module], x: Any) -> dict[str, torch.Tensor]:
    out = {}
    for name, model in models.items():
        y = model(**x) if isinstance(x, Mapping) else model(x)
        if hasattr(y, "logits") and isinstance(y.logits, torch.Tensor):  # model-library outputs
            y = y.logits
        if isinstance(y, torch.Tensor):
            out[name] = y
    return out


def collect(
    models: Mapping[str, nn.Module],
    data: Any,
    layers: Sequence[str] | None = None,
    *,
    spatial: str = "positions",
    batch_size: int = 256,
    topk: int | None = 9,
    exact: bool = True,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    distributed: bool | None = None,
    info: Mapping[str, Any] | None = None,
    kernel_sums: bool = False,
    observers: Sequence[Any] | None = None,
    mask: Any = "auto",
) -> Statistics:
    """Collect joint activation statistics of several nets in one pass over ``data``.

    Parameters
    ----------
    models : mapping of str to nn.Module
        The nets, by name (e.g. ``zoo.models()``). Each is run in eval mode, every module's
        train/eval state restored afterwards; models are moved to ``device``.
    data : tensor (N, ...), mapping of named tensors, (inputs, labels) or indexable Dataset
        The inputs, all nets see the same batches in the same order. Named inputs (e.g.
        ``{"input_ids": ..., "attention_mask": ...}``, one row per input) are passed to the models
        as keyword arguments. With labels, observers see them (e.g. classifier scores).
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
        Per-batch products in float64 (default). ``False`` runs them in the activations' precision
        (float32) after centring each batch: about 2x faster products on a CPU, with relative errors
        of about 1e-7 in co-moments and up to ~1e-5 in correlations (accumulation and merges stay
        float64 either way).
    device : str or torch.device
        Where the nets run and the per-batch products are computed.
    distributed : bool, optional
        Shard the inputs over the ranks of the initialised ``torch.distributed`` process group and
        merge every statistic exactly (default: when a group with more than one rank is
        initialised). Every rank returns the same merged result.
    info : mapping, optional
        Free description (dataset, split, zoo) stored with the statistics.
    kernel_sums : bool
        Keep each layer's moments as a :class:`~convergent.stats.KernelMoments` (a ``Moments`` plus
        the per-sample sums that make debiased CKA exact; O(K D) more state, saved in the same file).
    observers : sequence, optional
        Extra accumulators called once per batch as ``observer.observe(view)`` with a
        :class:`BatchView` (e.g. :class:`~convergent.collect.PooledLayerMoments`). They are not
        part of the returned statistics: keep a reference. Observers that have ``statistics()``
        and ``load_statistics()`` are merged across ranks under ``distributed``.
    mask : 'auto', str, callable or None
        Which token positions are samples: ``"auto"`` (default) uses the ``attention_mask`` of
        named inputs when there is one; a name picks another named input; a callable gets the
        batch and returns a (B, T) bool tensor. Padded positions never enter any statistic (moments,
        kernel sums, top-k, MI); in ``spatial="mean"`` mode the mean runs over the valid positions.

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
    inputs, labels = _as_inputs(data)
    n_total = len(inputs)
    if n_total == 0:
        raise ValueError("The 'data' parameter of collect holds no inputs.")
    names = list(models)
    first = models[names[0]]
    for model in models.values():
        model.to(device)
    example = _to(_batch(inputs, 0, min(2, n_total)), device)
    layers = list(layers) if layers else default_layers(first, example)
    for name, model in models.items():
        resolve_layers(model, layers, name)

    rank, world = _world()
    use_dist = world > 1 if distributed is None else bool(distributed)
    if use_dist and world == 1:
        raise ConvergentError(
            "collect(distributed=True) needs an initialised torch.distributed process group; "
            "launch with `torchrun --nproc_per_node=N` (the CLI initialises the group itself)."
        )
    if not use_dist:
        rank, world = 0, 1
    extra = list(observers or [])
    for obs in extra:
        if not callable(getattr(obs, "observe", None)):
            raise TypeError(
                "Each of collect's 'observers' must have an observe(view) method. Got "
                f"{type(obs).__name__} instead."
            )
    accumulator = LayerAccumulator(topk=topk, exact=exact, kernel_sums=kernel_sums)
    everyone = [accumulator, *extra]
    lo, hi = rank * n_total // world, (rank + 1) * n_total // world
    channels_first = _channels_first(first, layers, example)

    def view_of(store: Any, start: int, stop: int, logits: Any, batch: Any) -> BatchView:
        return BatchView(
            names,
            layers,
            store.outputs,
            np.arange(start, stop, dtype=np.int64),
            spatial,
            channels_first,
            logits,
            labels[start:stop] if labels is not None else None,
            _mask_of(batch, mask),
        )

    with torch.inference_mode(), capture(models, layers) as store:
        # a probe forward on the first inputs (the same on every rank, even an empty one) fixes
        # every layer's widths and whatever else observers take from it (bin edges)
        probe = max(int(getattr(obs, "probe_inputs", 0) or 0) for obs in everyone)
        probe = min(max(probe, 1), n_total)
        batch = _to(_batch(inputs, 0, probe), device)
        logits = _forward(models, batch)
        view = view_of(store, 0, probe, logits, batch)
        for obs in everyone:
            if callable(getattr(obs, "prepare", None)):
                obs.prepare(view)
        store.clear()
        batches = range(lo, hi, batch_size)
        for start in bar(
            batches, progress=progress if rank == 0 else False, desc="collect", unit="batch"
        ):
            stop = min(start + batch_size, hi)
            batch = _to(_batch(inputs, start, stop), device)
            logits = _forward(models, batch)
            view = view_of(store, start, stop, logits, batch)
            for obs in everyone:
                obs.observe(view)
            store.clear()

    if use_dist:
        for obs in everyone:
            if callable(getattr(obs, "statistics", None)):
                obs.load_statistics({k: all_merge(v) for k, v in obs.statistics().items()})
    settings = {
        "spatial": spatial,
        "batch_size": int(batch_size),
        "topk": topk,
        "exact": bool(exact),
        "world_size": int(world),
        "kernel_sums": bool(kernel_sums),
    }
    return Statistics(accumulator.layer_statistics(), names, n_total, settings, dict(info or {}))


def iter_batches(inputs: Any, batch_size: int) -> Iterable[torch.Tensor]:
    """Batches of ``inputs`` in order (a helper for second passes over the data)."""
    inputs, _ = _as_inputs(inputs)
    for start in range(0, len(inputs), batch_size):
        yield _batch(inputs, start, min(start + batch_size, len(inputs)))
