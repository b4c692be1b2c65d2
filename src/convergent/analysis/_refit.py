"""Least-squares refit on the Lasso support (relaxed Lasso): the one-to-many error per k.

The Lasso's coefficients are shrunk towards 0, so its error at a penalty with ~k non-zero
predictors overstates what k units of net A can do (with an exact permutation between the nets the
Lasso error at one predictor is far from 0, while the best unit predicts perfectly). The question
of Li et al. (2016, section 4) -- how well do a few units of A predict a unit of B? -- is answered
by using the Lasso only to *choose* the units and then fitting them without penalty:

1. **Support.** For each target and each ``k``: the support of the Lasso solution at the smallest
   penalty on the path whose support has at most ``k`` units (the exact homotopy's supports, plus
   the solutions on the penalty grid). Its size is reported: a path that never reaches ``k``
   units (e.g. a target that one unit predicts perfectly) gives a smaller support, and the summary
   counts the targets that reached ``k``, so no ``k`` the path did not reach is claimed.
2. **Refit.** Ordinary least squares of the target on those units, from the fit moments
   (``w_S = G_SS^+ c_S`` on z-scored units; minimum-norm where ``G_SS`` is singular).
3. **Errors.** ``1 - R^2`` on the fit moments, and -- with the same coefficients, never refitted
   -- on held-out moments (the held-out convention of :mod:`._sparse`).

Conventions of every column, for a results writer:

- ``refit`` (this module): "refit on <= k Lasso units", fitted on the fit split, scored on the fit
  split (``error``) or the held-out split (``held_out_error``).
- Lasso path (``SparsePredictionResult.error``): the penalised (shrunk) coefficients at each
  penalty, same splits.
- ``one_to_one``: least squares on the best-correlated single unit (= the refit at k = 1 whenever
  the path's first unit is the best one, which it is for the exact path).
- ``full_linear``: least squares on all units of A.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergent.analysis._lars import Homotopy, visited_supports

#: The label of the refit columns (format with k).
REFIT_LABEL = "refit on <= {k} Lasso units"
#: One line saying what the refit columns hold.
REFIT_CONVENTION = (
    "least-squares refit on the support of the Lasso at the smallest penalty whose support has "
    "at most k units (relaxed Lasso); coefficients fitted on the fit split, error 1 - R^2 scored "
    "on the fit split ('fit') and, with the same coefficients, on the held-out split ('held_out')"
)


def prediction_errors(
    second: np.ndarray, coef: np.ndarray, n_source: int, target_var: np.ndarray
) -> np.ndarray:
    """Normalised errors ``(M_tt - 2 W_t.M_At + W_t^T M_AA W_t) / var_t`` for coefficient matrices.

    ``second`` (d_A + d_B, d_A + d_B) is a second-moment matrix of the sources then the targets,
    ``coef`` (..., d_A, d_B); entries with ``target_var`` 0 come back as 0.
    """
    m_aa = second[:n_source, :n_source]
    m_ab = second[:n_source, n_source:]
    m_bb = np.diag(second)[n_source:]
    fitted = np.matmul(m_aa, coef)
    sse = m_bb - 2.0 * np.sum(coef * m_ab, axis=-2) + np.sum(coef * fitted, axis=-2)
    safe = np.where(target_var > 0, target_var, 1.0)
    return np.where(target_var > 0, np.maximum(sse, 0.0) / safe, 0.0)


def check_k(k: Any, owner: str) -> np.ndarray:
    """``k`` as a sorted array of distinct integers >= 1."""
    values = np.atleast_1d(np.asarray(k))
    if (
        values.ndim != 1
        or values.size == 0
        or not np.issubdtype(values.dtype, np.integer)
        or values.min() < 1
    ):
        raise ValueError(
            f"The 'refit_k' parameter of {owner} must be a non-empty sequence of integers >= 1 "
            f"(numbers of units of net A). Got {k!r} instead; e.g. (1, 2, 3, 4)."
        )
    return np.unique(values.astype(np.int64))


@dataclass(frozen=True)
class SupportRefit:
    """Least-squares refit on the Lasso support with at most ``k`` units, per ``k`` and target.

    ``K`` values of ``k``, ``d_A`` sources, ``d_B`` targets; errors ``1 - R^2`` (0 perfect). See the
    module notes for the conventions.

    Attributes
    ----------
    k : ndarray of int, shape (K,)
        The numbers of units asked for, increasing.
    support : ndarray of bool, shape (K, d_A, d_B)
        The Lasso support chosen for each ``k`` and target (the smallest penalty on the path whose
        support has at most ``k`` units).
    size : ndarray of int, shape (K, d_B)
        Its number of units (``< k`` where the path never reaches ``k`` units).
    penalty : ndarray, shape (K, d_B)
        A penalty at which the Lasso has exactly that support (the middle of the path segment on
        which it holds, or a grid penalty); 0 for targets without any support.
    coef : ndarray, shape (K, d_A, d_B)
        The refitted least-squares coefficients, in fit-standardised units (0 off the support).
    error : ndarray, shape (K, d_B)
        ``1 - R^2`` on the fit moments (0 for targets dead in the fit split).
    held_out_error : ndarray of shape (K, d_B), or None
        ``1 - R^2`` of the same coefficients on the held-out moments.
    """

    k: np.ndarray
    support: np.ndarray
    size: np.ndarray
    penalty: np.ndarray
    coef: np.ndarray
    error: np.ndarray
    held_out_error: np.ndarray | None

    def reached(self) -> np.ndarray:
        """(K, d_B) bool: targets whose chosen support has exactly ``k`` units."""
        return self.size == self.k[:, None]


def choose_supports(
    homotopy: Sequence[Homotopy],
    grid_penalties: np.ndarray,
    grid_coef: np.ndarray,
    ks: np.ndarray,
    skip: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ``k`` and target, the support at the smallest penalty whose support has <= k units.

    Candidates are every support the exact path visits (:func:`visited_supports`) and the
    solutions on the penalty grid (which cover what the homotopy misses when LARS stops early on
    degenerate sources). Targets in ``skip`` (dead) get the empty support.

    Returns
    -------
    support : (K, d_A, d_B) bool
    size : (K, d_B) int
    penalty : (K, d_B) float
    """
    n_k, (_, d_a, d_b) = len(ks), grid_coef.shape
    support = np.zeros((n_k, d_a, d_b), dtype=bool)
    penalty = np.zeros((n_k, d_b))
    for t in range(d_b):
        if skip[t]:
            continue
        path_pen, path_sup = visited_supports(homotopy[t])
        pen = np.concatenate([path_pen, grid_penalties])
        sup = np.concatenate([path_sup, grid_coef[:, :, t] != 0])
        sizes = sup.sum(axis=1)
        # smallest penalty first; among equal penalties the larger support
        order = np.lexsort((-sizes, pen))
        pen, sup, sizes = pen[order], sup[order], sizes[order]
        for i, k in enumerate(ks):
            hits = np.flatnonzero(sizes <= k)
            if not hits.size:  # several units entered together above k: no support qualifies
                continue
            support[i, :, t] = sup[hits[0]]
            penalty[i, t] = pen[hits[0]] if sizes[hits[0]] else 0.0
    return support, support.sum(axis=1), penalty


def refit_coefficients(gram: np.ndarray, cross: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Least squares of each target on its support, ``w_S = G_SS^+ c_S`` (minimum norm).

    Parameters
    ----------
    gram : (d_A, d_A), cross : (d_A, d_B), support : (K, d_A, d_B) bool

    Returns
    -------
    ndarray, shape (K, d_A, d_B)
    """
    coef = np.zeros(support.shape)
    solved: dict[bytes, np.ndarray] = {}
    for i in range(support.shape[0]):
        for t in range(support.shape[2]):
            idx = np.flatnonzero(support[i, :, t])
            if not idx.size:
                continue
            key = idx.tobytes() + t.to_bytes(4, "little")
            if key not in solved:
                solved[key] = np.linalg.lstsq(gram[np.ix_(idx, idx)], cross[idx, t], rcond=None)[0]
            coef[i, idx, t] = solved[key]
    return coef


def error_summary(errors: np.ndarray | None, keep: np.ndarray) -> dict[str, float | int] | None:
    """Mean and median of ``errors`` (d_B,) over the targets in ``keep`` (d_B,), and their number
    (0.0 for both when no target is kept; None without errors)."""
    if errors is None:
        return None
    chosen = errors[keep]
    if not keep.any():
        return {"mean": 0.0, "median": 0.0, "targets": 0}
    return {
        "mean": float(np.mean(chosen)),
        "median": float(np.median(chosen)),
        "targets": int(keep.sum()),
    }
