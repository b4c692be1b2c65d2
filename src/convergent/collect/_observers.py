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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from convergent.analysis._cka import layer_cka_matrix
from convergent.stats import ShuffledPairs, block_name
from convergent.stats._buffer import SampleBuffer
from convergent.stats._kernel import KernelMoments
from convergent.stats._minibatch import MinibatchCKA
from convergent.stats._scores import ScoreMatrix


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
        parts = {net: view.samples(net, self.layer) for net in view.nets}
        if self.pairs is None:
            ranges = _ranges({k: int(v.shape[1]) for k, v in parts.items()})
            self.pairs = ShuffledPairs(ranges, exact=self.exact)
        joint = torch.cat([torch.as_tensor(v) for v in parts.values()], dim=1)
        self.pairs.update(joint, joint.shape[0] // len(view.input_index))

    def merge(self, other: ShuffledLayerPairs) -> ShuffledLayerPairs:
        if other.pairs is not None:
            if self.pairs is None:
                self.pairs = other.pairs
            else:
                self.pairs.merge(other.pairs)
        return self
