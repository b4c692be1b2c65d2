"""Linear CKA (Kornblith et al. 2019) and its debiased form, from the joint moments.

Linear CKA compares the centred Gram matrices of two nets' samples; for linear kernels it reduces to
the centred co-moment blocks::

    CKA = ||C_AB||_F^2 / (||C_AA||_F ||C_BB||_F)

Debiased CKA replaces each HSIC by the unbiased estimator of Song et al. (2012), computed exactly
in one pass from a :class:`KernelMoments` (the algebra is in ``_accumulate.py``)::

    HSIC_1(A, B) = [ ||C_AB||^2 - S_AB + T_A T_B / ((n-1)(n-2)) - 2 S_AB / (n-2) ] / (n (n-3))

with ``T_A = tr(C_AA)`` and ``S_AB = sum_i |x_i - mean_A|^2 |y_i - mean_B|^2``.

Widths may differ (the Gram matrices are n x n whatever the widths). Dead units contribute nothing.
Where a net has no variance at all, or (debiased) an HSIC of a net with itself is not positive (few
samples), the value is 0 with ``defined=False`` and a note, never NaN. Debiased CKA needs n >= 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convergent._errors import ConvergentError
from convergent.analysis._joint import PairBlocks, pair_blocks, require_kernel
from convergent.stats import block_name
from convergent.stats._scores import PairScore, ScoreMatrix


def linear_cka(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> PairScore:
    """Linear CKA of two nets, in [0, 1].

    Parameters
    ----------
    x : Moments or (n, d_A) array
        Joint moments over several nets' units, or net A's activations.
    y : (n, d_B) array, optional
        Net B's activations on the same inputs (with an array ``x``).
    nets : (str, str), optional
        The two nets of the joint moments (default: the only two).
    unit_ranges : mapping, optional
        Each net's (start, stop) among the joint units (default: ``moments.metadata``).
    """
    return cka_from_blocks(pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges))


def debiased_cka(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> PairScore:
    """Debiased linear CKA (unbiased HSIC of Song et al. 2012), exact from a ``KernelMoments``.

    Same parameters as :func:`linear_cka`; joint moments must be a :class:`KernelMoments` whose
    blocks are the two nets (``collect(..., kernel_sums=True)``). Can be slightly negative.

    Raises
    ------
    ConvergentError
        With plain ``Moments`` (no kernel sums), or fewer than 4 samples.
    """
    return cka_from_blocks(pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges), debiased=True)


#: An unbiased self-HSIC at most this fraction of the size of the terms it is summed from is
#: rounding of an exact 0 (e.g. a net on which only one input differs from the rest).
HSIC_RTOL = 1e-10


def _hsic1(n: int, cross_sq: float, s: float, t_a: float, t_b: float) -> tuple[float, float]:
    """The unbiased HSIC and the magnitude of the terms it cancels from."""
    terms = (cross_sq - s, t_a * t_b / ((n - 1) * (n - 2)), -2.0 * s / (n - 2))
    scale = (abs(cross_sq) + abs(s) + abs(terms[1]) + abs(terms[2])) / (n * (n - 3))
    return sum(terms) / (n * (n - 3)), scale


def cka_from_blocks(blocks: PairBlocks, *, debiased: bool = False) -> PairScore:
    """Linear (or debiased) CKA from a pair's blocks of the joint moments."""
    n = blocks.count
    details = {"widths": list(blocks.widths), "dead_units": blocks.dead()}
    metric = "debiased_cka" if debiased else "cka"
    # divide by n (and n^2 for fourth-order sums) to keep the magnitudes moderate
    c_aa, c_bb, c_ab = blocks.c_aa / n, blocks.c_bb / n, blocks.c_ab / n
    f_aa, f_bb, f_ab = (float(np.sum(c * c)) for c in (c_aa, c_bb, c_ab))
    if debiased:
        s_aa, s_bb, s_ab = require_kernel(blocks, "Debiased CKA") / n**2
        if n < 4:
            raise ConvergentError(
                f"Debiased CKA needs at least 4 samples (the unbiased HSIC divides by n-3); got {n}."
            )
        t_a, t_b = float(np.trace(c_aa)), float(np.trace(c_bb))
        h_ab = _hsic1(n, f_ab, s_ab, t_a, t_b)[0]
        (h_aa, scale_a), (h_bb, scale_b) = (
            _hsic1(n, f_aa, s_aa, t_a, t_a),
            _hsic1(n, f_bb, s_bb, t_b, t_b),
        )
        degenerate = h_aa <= HSIC_RTOL * scale_a or h_bb <= HSIC_RTOL * scale_b
    else:
        h_ab, h_aa, h_bb = f_ab, f_aa, f_bb
        degenerate = False
    if h_aa <= 0 or h_bb <= 0 or degenerate:
        why = (
            "a net has no variance (all its units dead or constant)"
            if min(f_aa, f_bb) == 0
            else "the unbiased HSIC of a net with itself is 0 or negative (too few samples, or a "
            "degenerate net such as one where a single input differs from all others)"
        )
        return PairScore(
            metric, 0.0, blocks.names, n, False, f"undefined: {why}; reported as 0", details
        )
    return PairScore(metric, float(h_ab / np.sqrt(h_aa * h_bb)), blocks.names, n, True, "", details)


def layer_cka_matrix(
    moments: Any,
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    debiased: bool = False,
    unit_ranges: Mapping[str, Any] | None = None,
    labels: tuple[Sequence[str], Sequence[str]] | None = None,
) -> ScoreMatrix:
    """CKA between every block in ``rows`` and every block in ``cols`` of one joint ``Moments``.

    With moments over all layers' spatially averaged units of two nets (see
    :class:`PooledLayerMoments`), ``rows`` are net A's layer blocks and ``cols`` net B's: the
    layer x layer CKA heatmap, exact on the full data.

    Parameters
    ----------
    moments : Moments or KernelMoments
    rows, cols : sequence of str
        Block names (keys of the unit ranges).
    debiased : bool
        Debiased CKA (needs ``KernelMoments``).
    labels : (sequence, sequence), optional
        Names to show for rows and columns (default: the block names).
    """
    values = np.zeros((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            blocks = pair_blocks(moments, nets=(r, c), unit_ranges=unit_ranges)
            values[i, j] = cka_from_blocks(blocks, debiased=debiased).value
    row_names, col_names = labels if labels is not None else (rows, cols)
    return ScoreMatrix(
        "debiased_cka" if debiased else "cka", list(row_names), list(col_names), values
    )


def layer_by_layer_cka(
    stats: Any, net_a: str, net_b: str, *, debiased: bool = False
) -> ScoreMatrix:
    """Layer x layer CKA between ``net_a``'s layers (rows) and ``net_b``'s (columns) from the pooled
    all-layer moments of a :class:`~convergent.stats.Statistics` (one spatially averaged sample per
    input; ``collect`` keeps them unless told not to)."""
    if stats.pooled is None:
        raise ConvergentError(
            "These statistics hold no pooled all-layer moments; collect them with "
            "`convergent collect` (without --no-pooled)."
        )
    for net in (net_a, net_b):
        if net not in stats.nets:
            raise ValueError(f"No net {net!r} in these statistics. Nets: {stats.nets}.")
    layers = list(stats.pooled_layers)
    return layer_cka_matrix(
        stats.pooled,
        [block_name(net_a, layer) for layer in layers],
        [block_name(net_b, layer) for layer in layers],
        debiased=debiased,
        labels=(layers, layers),
    )
