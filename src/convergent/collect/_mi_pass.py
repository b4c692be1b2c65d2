"""The second streaming pass for mutual information: per-unit bin edges from a first batch of
inputs, then joint histograms of every requested pair of nets over all inputs (bounded memory)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convergent._progress import bar
from convergent.analysis._mi import (
    DEFAULT_MAX_BYTES,
    JointHistogram,
    MutualInformation,
    mutual_information_matrix,
    quantile_edges,
)
from convergent.collect._hooks import capture
from convergent.collect._loop import _as_inputs, _batch
from convergent.collect._samples import is_channels_first, to_samples


def collect_mutual_information(
    models: Mapping[str, nn.Module],
    data: Any,
    layer: str,
    pairs: Sequence[tuple[str, str]],
    *,
    bins: int = 10,
    spatial: str = "positions",
    batch_size: int = 256,
    edge_inputs: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
    bias_correction: str | None = "miller-madow",
    progress: bool | None = None,
) -> dict[str, MutualInformation]:
    """MI between every unit pair of each (net A, net B) in ``pairs`` at ``layer``.

    Edges: percentiles of each unit over the samples of the first ``edge_inputs`` inputs (a
    deterministic subset); counts: every input. Memory: d_A x d_B x bins^2 counts per pair (checked
    before the pass starts, see :class:`~convergent.analysis.JointHistogram`), plus one batch.
    Returns ``{"a~b": MutualInformation}``.
    """
    inputs = _as_inputs(data)
    nets = sorted({n for p in pairs for n in p}, key=list(models).index)
    sub = {n: models[n] for n in nets}
    channels_first = is_channels_first(dict(models[nets[0]].named_modules())[layer])

    def samples(store: Any, net: str) -> torch.Tensor:
        return to_samples(
            store.outputs[(net, layer)], spatial=spatial, channels_first=channels_first
        )[0]

    with torch.inference_mode(), capture(sub, [layer]) as store:
        first = _batch(inputs, 0, min(edge_inputs, len(inputs)))
        for m in sub.values():
            m(first)
        edges = {n: quantile_edges(samples(store, n), bins) for n in nets}
        store.clear()
        hists = {f"{a}~{b}": JointHistogram(edges[a], edges[b], max_bytes) for a, b in pairs}
        for start in bar(
            range(0, len(inputs), batch_size),
            progress=progress,
            desc=f"mutual information {layer}",
            unit="batch",
        ):
            x = _batch(inputs, start, min(start + batch_size, len(inputs)))
            for m in sub.values():
                m(x)
            acts = {n: samples(store, n) for n in nets}
            for a, b in pairs:
                hists[f"{a}~{b}"].update(acts[a], acts[b])
            store.clear()
    return {
        k: mutual_information_matrix(h, bias_correction=bias_correction) for k, h in hists.items()
    }
