"""Collect-time accumulators: thin adapters that feed the pure accumulators from ``collect``.

``collect(..., observers=[...])`` calls ``observer.observe(view)`` once per batch with a
``BatchView`` (defined in ``convergent.collect._loop``: the batch's layer outputs of every net,
the input indices, and helpers: ``samples(net, layer)`` as collected, ``pooled(net, layer)``
spatially averaged, ``flat(net, layer)`` flattened). Every adapter merges with another of its kind
(a shard).

- :class:`PooledLayerMoments`: one ``KernelMoments`` over every (net, layer)'s spatially averaged
  units -- exact layer x layer (debiased) CKA between two nets.
- :class:`LayerSampleBuffers`: a :class:`SampleBuffer` per layer over every net's averaged units --
  RSA and mutual k-NN.
- :class:`FlatMinibatchCKA`: the minibatch unbiased-HSIC CKA estimate between flattened maps.
- :class:`ShuffledLayerPairs`: :class:`ShuffledPairs` of one layer (the shuffled-input null).
- :class:`MutualInformationObserver`: joint histograms of every unit pair of chosen pairs of nets
  (mutual information), bin edges from the probe inputs.
- :class:`ScoresObserver`: each net's loss and accuracy from its own outputs and the labels.

Each has ``statistics()`` / ``load_statistics()``, so ``collect`` merges them across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from convergent.analysis import layer_cka_matrix
from convergent.stats import (
    DEFAULT_MAX_BYTES,
    ClassifierScores,
    JointHistogram,
    KernelMoments,
    MinibatchCKA,
    SampleBuffer,
    ScoreMatrix,
    ShuffledPairs,
    Statistic,
    block_name,
    pair_key,
    quantile_edges,
)


def _layers(view: Any, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return list(view.layers)
    missing = [layer for layer in layers if layer not in view.layers]
    if missing:
        raise ValueError(
            f"Layers {missing} are not collected (collected: {list(view.layers)}); add them to "
            "collect(layers=...)."
        )
    return list(layers)


def _ranges(widths: dict[str, int]) -> dict[str, tuple[int, int]]:
    out, start = {}, 0
    for name, width in widths.items():
        out[name] = (start, start + width)
        start += width
    return out


class PooledLayerMoments:
    """``KernelMoments`` over every net's every layer, spatially averaged (one sample per input).

    Parameters
    ----------
    layers : sequence of str, optional
        Layers to include (default: every collected layer).
    exact : bool
        As for ``Moments``.

    Attributes
    ----------
    moments : KernelMoments or None
        Blocks ``net/layer`` (see :func:`block_name`); created on the first batch.
    """

    def __init__(self, layers: Sequence[str] | None = None, *, exact: bool = False) -> None:
        self.layers = list(layers) if layers is not None else None
        self.exact = exact
        self.moments: KernelMoments | None = None
        self.nets: list[str] = []

    def observe(self, view: Any) -> None:
        layers = _layers(view, self.layers)
        parts = {
            block_name(net, layer): view.pooled(net, layer) for net in view.nets for layer in layers
        }
        if self.moments is None:
            self.layers, self.nets = layers, list(view.nets)
            ranges = _ranges({k: int(v.shape[1]) for k, v in parts.items()})
            self.moments = KernelMoments(
                max(s for _, s in ranges.values()), ranges, exact=self.exact
            )
        self.moments.update(torch.cat([torch.as_tensor(v) for v in parts.values()], dim=1))

    def statistics(self) -> dict[str, Statistic]:
        return {"pooled": self.moments} if self.moments is not None else {}

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        if "pooled" in merged:
            self.moments = merged["pooled"]  # type: ignore[assignment]

    def merge(self, other: PooledLayerMoments) -> PooledLayerMoments:
        if other.moments is None:
            return self
        if self.moments is None:
            self.layers, self.nets, self.moments = other.layers, other.nets, other.moments.copy()
            return self
        self.moments.merge(other.moments)
        return self

    def matrix(self, net_a: str, net_b: str, *, debiased: bool = False) -> ScoreMatrix:
        """Layer x layer CKA between ``net_a``'s layers (rows) and ``net_b``'s (columns)."""
        if self.moments is None:
            raise ValueError("PooledLayerMoments has seen no batch; run collect with it first.")
        for net in (net_a, net_b):
            if net not in self.nets:
                raise ValueError(f"No net {net!r} in PooledLayerMoments. Nets: {self.nets}.")
        return layer_cka_matrix(
            self.moments,
            [block_name(net_a, layer) for layer in self.layers],
            [block_name(net_b, layer) for layer in self.layers],
            debiased=debiased,
            labels=(self.layers, self.layers),
        )


class LayerSampleBuffers:
    """A :class:`SampleBuffer` per layer over every net's spatially averaged units.

    Parameters
    ----------
    capacity : int
        Inputs kept per layer (the same inputs in every layer).
    seed : int
        Which inputs (see :class:`SampleBuffer`).
    layers : sequence of str, optional
        Default: every collected layer.
    """

    def __init__(
        self, capacity: int = 1000, *, seed: int = 0, layers: Sequence[str] | None = None
    ) -> None:
        self.capacity, self.seed = capacity, seed
        self.layers = list(layers) if layers is not None else None
        self.buffers: dict[str, SampleBuffer] = {}

    def __getitem__(self, layer: str) -> SampleBuffer:
        if layer not in self.buffers:
            raise ValueError(f"No buffer for layer {layer!r}. Layers: {list(self.buffers)}.")
        return self.buffers[layer]

    def observe(self, view: Any) -> None:
        for layer in _layers(view, self.layers):
            parts = {net: view.pooled(net, layer) for net in view.nets}
            if layer not in self.buffers:
                ranges = _ranges({k: int(v.shape[1]) for k, v in parts.items()})
                dim = max(s for _, s in ranges.values())
                self.buffers[layer] = SampleBuffer(
                    self.capacity, dim, seed=self.seed, unit_ranges=ranges
                )
            joint = torch.cat([torch.as_tensor(v) for v in parts.values()], dim=1)
            self.buffers[layer].update(joint, np.asarray(view.input_index))

    def statistics(self) -> dict[str, Statistic]:
        return dict(self.buffers)

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        self.buffers.update(merged)  # type: ignore[arg-type]

    def merge(self, other: LayerSampleBuffers) -> LayerSampleBuffers:
        for layer, buf in other.buffers.items():
            if layer in self.buffers:
                self.buffers[layer].merge(buf)
            else:
                self.buffers[layer] = buf
        return self


class FlatMinibatchCKA:
    """The minibatch CKA estimate between every net's every layer, on flattened maps.

    Parameters
    ----------
    layers : sequence of str, optional
        Default: every collected layer.
    """

    def __init__(self, layers: Sequence[str] | None = None) -> None:
        self.layers = list(layers) if layers is not None else None
        self.nets: list[str] = []
        self.estimator = MinibatchCKA()

    def observe(self, view: Any) -> None:
        layers = _layers(view, self.layers)
        self.layers, self.nets = layers, list(view.nets)
        self.estimator.update(
            {block_name(net, layer): view.flat(net, layer) for net in view.nets for layer in layers}
        )

    def statistics(self) -> dict[str, Statistic]:
        return {"minibatch_cka": self.estimator}

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        self.estimator = merged["minibatch_cka"]  # type: ignore[assignment]

    def merge(self, other: FlatMinibatchCKA) -> FlatMinibatchCKA:
        self.estimator.merge(other.estimator)
        self.layers, self.nets = self.layers or other.layers, self.nets or other.nets
        return self

    def matrix(self, net_a: str, net_b: str) -> ScoreMatrix:
        """Layer x layer minibatch CKA estimate (``estimate=True``) between two nets."""
        for net in (net_a, net_b):
            if net not in self.nets:
                raise ValueError(f"No net {net!r} in FlatMinibatchCKA. Nets: {self.nets}.")
        return self.estimator.matrix(
            [block_name(net_a, layer) for layer in self.layers],
            [block_name(net_b, layer) for layer in self.layers],
            labels=(self.layers, self.layers),
        )


class ShuffledLayerPairs:
    """:class:`ShuffledPairs` of one layer, its samples as collected (positions or averages)."""

    def __init__(self, layer: str, *, exact: bool = False) -> None:
        self.layer, self.exact = layer, exact
        self.pairs: ShuffledPairs | None = None

    @property
    def moments(self) -> KernelMoments:
        if self.pairs is None:
            raise ValueError("ShuffledLayerPairs has seen no batch; run collect with it first.")
        return self.pairs.moments

    def observe(self, view: Any) -> None:
        _layers(view, [self.layer])
        if view.mask is not None:
            raise ValueError(
                "ShuffledLayerPairs needs the same number of samples per input; with a token mask "
                "inputs differ. Collect it with spatial='mean' or without a mask."
            )
        parts = {net: view.samples(net, self.layer) for net in view.nets}
        if self.pairs is None:
            ranges = _ranges({k: int(v.shape[1]) for k, v in parts.items()})
            self.pairs = ShuffledPairs(ranges, exact=self.exact)
        joint = torch.cat([torch.as_tensor(v) for v in parts.values()], dim=1)
        self.pairs.update(joint, joint.shape[0] // len(view.input_index))

    def statistics(self) -> dict[str, Statistic]:
        return {"shuffled": self.pairs} if self.pairs is not None else {}

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        if "shuffled" in merged:
            self.pairs = merged["shuffled"]  # type: ignore[assignment]

    def merge(self, other: ShuffledLayerPairs) -> ShuffledLayerPairs:
        if other.pairs is not None:
            if self.pairs is None:
                self.pairs = other.pairs
            else:
                self.pairs.merge(other.pairs)
        return self


class MutualInformationObserver:
    """Joint histograms of every (A unit, B unit) pair of the given pairs of nets, per layer: the
    streaming statistic behind mutual-information matching (Li et al. 2016, section 3.2).

    Bin edges are each unit's percentiles over the first ``edge_inputs`` inputs (the probe batch,
    the same on every rank); counts cover the inputs with index below ``max_inputs`` (all inputs
    when None), in the sample mode of ``collect``.

    Parameters
    ----------
    pairs : sequence of (str, str)
        The pairs of nets.
    layers : sequence of str, optional
        Default: every collected layer.
    bins : int
        Bins per unit (a ReLU's zeros get a bin of their own).
    edge_inputs : int
        Inputs whose samples set the bin edges.
    max_inputs : int, optional
        Only inputs with a smaller index are counted (bounds the cost on large maps).
    max_bytes : int
        Memory allowed for one pair's counts (d_A * d_B * bins^2 * 8 bytes); checked up front.

    Attributes
    ----------
    histograms : dict of str to JointHistogram
        By ``"<layer>/<a>~<b>"``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        layers: Sequence[str] | None = None,
        *,
        bins: int = 10,
        edge_inputs: int = 256,
        max_inputs: int | None = 500,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.pairs = [(str(a), str(b)) for a, b in pairs]
        if not self.pairs:
            raise ValueError("The 'pairs' parameter of MutualInformationObserver names no pair.")
        self.layers = list(layers) if layers is not None else None
        self.bins, self.max_inputs, self.max_bytes = int(bins), max_inputs, int(max_bytes)
        self.probe_inputs = int(edge_inputs)
        self.histograms: dict[str, JointHistogram] = {}

    def prepare(self, view: Any) -> None:
        layers = _layers(view, self.layers)
        self.layers = layers
        nets = {n for pair in self.pairs for n in pair}
        unknown = sorted(nets - set(view.nets))
        if unknown:
            raise ValueError(f"No nets {unknown} in this collection. Nets: {list(view.nets)}.")
        for layer in layers:
            edges = {n: quantile_edges(view.samples(n, layer), self.bins) for n in sorted(nets)}
            for a, b in self.pairs:
                self.histograms[f"{layer}/{pair_key(a, b)}"] = JointHistogram(
                    edges[a], edges[b], self.max_bytes
                )

    def observe(self, view: Any) -> None:
        if self.max_inputs is not None and int(np.min(view.input_index)) >= self.max_inputs:
            return
        for layer in self.layers or []:
            acts = {}
            for a, b in self.pairs:
                for net in (a, b):
                    if net not in acts:
                        x = view.samples(net, layer)
                        if self.max_inputs is not None:
                            rows = view.positions(net, layer)[0] < self.max_inputs
                            if not rows.all():
                                x = x[torch.from_numpy(rows).to(x.device)]
                        acts[net] = x
                self.histograms[f"{layer}/{pair_key(a, b)}"].update(acts[a], acts[b])

    def statistics(self) -> dict[str, Statistic]:
        return dict(self.histograms)

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        self.histograms.update(merged)  # type: ignore[arg-type]

    def for_layer(self, layer: str) -> dict[str, JointHistogram]:
        """This layer's histograms by pair key ``a~b``."""
        prefix = f"{layer}/"
        return {k[len(prefix) :]: v for k, v in self.histograms.items() if k.startswith(prefix)}


class ScoresObserver:
    """Each net's loss and accuracy on the collected inputs, from its own outputs and the labels
    (inputs without labels, or nets whose output is not (B, classes) logits, are not scored)."""

    def __init__(self) -> None:
        self.scores: dict[str, ClassifierScores] = {}

    def prepare(self, view: Any) -> None:
        if view.labels is None or not view.logits:
            return
        for net, out in view.logits.items():
            if out.ndim == 2:
                self.scores[net] = ClassifierScores()

    def observe(self, view: Any) -> None:
        if view.labels is None or not view.logits:
            return
        for net, scores in self.scores.items():
            scores.update(view.logits[net], view.labels)

    def statistics(self) -> dict[str, Statistic]:
        return dict(self.scores)

    def load_statistics(self, merged: dict[str, Statistic]) -> None:
        self.scores.update(merged)  # type: ignore[arg-type]
