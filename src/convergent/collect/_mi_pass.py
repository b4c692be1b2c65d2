"""Mutual information of one layer in a pass of its own (the library form of what
``collect_run(mi=...)`` keeps for every layer): the one collection loop with a
:class:`~convergent.collect.MutualInformationObserver`, then MI from the joint histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from convergent.analysis import MutualInformation, mutual_information_matrix
from convergent.collect._loop import collect
from convergent.collect._observers import MutualInformationObserver
from convergent.stats import DEFAULT_MAX_BYTES


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
    before the pass starts, see :class:`~convergent.stats.JointHistogram`), plus one batch.
    Returns ``{"a~b": MutualInformation}``.
    """
    nets = sorted({n for p in pairs for n in p}, key=list(models).index)
    observer = MutualInformationObserver(
        pairs, [layer], bins=bins, edge_inputs=edge_inputs, max_inputs=None, max_bytes=max_bytes
    )
    collect(
        {n: models[n] for n in nets},
        data,
        [layer],
        spatial=spatial,
        batch_size=batch_size,
        topk=None,
        progress=progress,
        observers=[observer],
    )
    return {
        key: mutual_information_matrix(hist, bias_correction=bias_correction)
        for key, hist in observer.for_layer(layer).items()
    }
