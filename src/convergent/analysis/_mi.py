"""Mutual information between every pair of units of two nets (Li et al. 2016, section 3.2).

Each unit's activations are discretised with per-unit percentile bins; a ReLU unit's mass at exactly
zero (more generally, a point mass at its minimum) gets a bin of its own, the rest is split at
percentiles. :class:`JointHistogram` accumulates the joint counts of every (A unit, B unit) pair in a
streaming pass, as one one-hot matrix product per batch; :func:`mutual_information_matrix` turns the
counts into MI in nats.

Bias correction (default ``"miller-madow"``): each plug-in entropy H = -sum p log p is corrected by
(m - 1) / (2N), m the number of non-empty bins (Miller 1955). For MI = H(A) + H(B) - H(A, B) this adds
((m_A - 1) + (m_B - 1) - (m_AB - 1)) / (2N), removing most of the plug-in estimator's upward bias for
independent units ((bins - 1)^2 / (2N) nats). Corrected values can fall slightly below 0 for
independent units; they are clipped at 0 (MI is non-negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convergent._errors import ConvergentError
from convergent.stats import DEFAULT_MAX_BYTES, JointHistogram, quantile_edges

BIAS_CORRECTIONS = ("miller-madow", None)


def _entropy(p: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis)


@dataclass(frozen=True)
class MutualInformation:
    """MI between every A unit (rows) and B unit (columns), in nats, with the marginal entropies."""

    mi: np.ndarray
    entropy_a: np.ndarray
    entropy_b: np.ndarray
    bias_correction: str | None
    samples: int


def mutual_information_matrix(
    hist: JointHistogram, *, bias_correction: str | None = "miller-madow"
) -> MutualInformation:
    """MI (nats) of every pair from a :class:`JointHistogram`; see the module notes on the bias
    correction."""
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(
            f"The 'bias_correction' parameter must be one of {BIAS_CORRECTIONS}. Got "
            f"{bias_correction!r} instead."
        )
    if hist.count == 0:
        raise ConvergentError("The joint histogram is empty: update it with samples first.")
    n = float(hist.count)
    p = hist.table() / n  # (d_A, d_B, bins, bins)
    pa = p.sum(axis=3)[:, 0, :]  # marginal of A is the same for every B unit
    pb = p.sum(axis=2)[0, :, :]
    h_a = _entropy(pa, (1,))
    h_b = _entropy(pb, (1,))
    h_ab = _entropy(p, (2, 3))
    mi = h_a[:, None] + h_b[None, :] - h_ab
    if bias_correction == "miller-madow":
        m_a = (pa > 0).sum(axis=1)
        m_b = (pb > 0).sum(axis=1)
        m_ab = (p > 0).sum(axis=(2, 3))
        mi = mi + ((m_a[:, None] - 1) + (m_b[None, :] - 1) - (m_ab - 1)) / (2 * n)
        h_a = h_a + (m_a - 1) / (2 * n)
        h_b = h_b + (m_b - 1) / (2 * n)
    mi = np.clip(mi, 0.0, None)
    return MutualInformation(mi, h_a, h_b, bias_correction, int(n))


def mutual_information(
    xa: np.ndarray | torch.Tensor,
    xb: np.ndarray | torch.Tensor,
    *,
    bins: int = 10,
    bias_correction: str | None = "miller-madow",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> MutualInformation:
    """MI (nats) between every unit of ``xa`` (n, d_A) and every unit of ``xb`` (n, d_B).

    Bin edges are the percentiles of the data itself (see :func:`quantile_edges`); for a streaming
    computation build a :class:`JointHistogram` from edges of a sample and update it batch by batch.
    """
    hist = JointHistogram(quantile_edges(xa, bins), quantile_edges(xb, bins), max_bytes)
    hist.update(xa, xb)
    return mutual_information_matrix(hist, bias_correction=bias_correction)
