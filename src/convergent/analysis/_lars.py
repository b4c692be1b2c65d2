"""The exact Lasso path (LARS-Lasso homotopy) in Gram form, and the supports it visits.

The Lasso solution is piecewise linear in the penalty between the homotopy's *knots*; between two
knots the set of non-zero coefficients (the support) is constant. So the homotopy gives both the
solution at any penalty (interpolation between the knots around it, exact) and every support the
path visits, each with the penalty interval on which it holds.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np


class Homotopy(NamedTuple):
    """The LARS-Lasso path of one target.

    Attributes
    ----------
    knots : ndarray, shape (K,)
        Penalties at the knots, decreasing from ``max |c|`` (all coefficients 0) down to the
        smallest penalty asked for (or where LARS stopped, on degenerate sources).
    path : ndarray, shape (p, K)
        The Lasso solution at each knot, over all ``p`` sources (dead sources 0).
    """

    knots: np.ndarray
    path: np.ndarray


def lars_homotopy(gram: np.ndarray, cross: np.ndarray, alpha_min: float) -> list[Homotopy]:
    """The exact Lasso path of every target down to ``alpha_min`` (scikit-learn's
    ``lars_path_gram``, one target at a time).

    Sources with a zero diagonal (dead units) are left out (coefficient 0). A target whose
    correlations with every usable source are 0 gets the path ``knots = [alpha_min]``, all zero.
    On degenerate (nearly collinear) sources LARS may stop above ``alpha_min``; callers check the
    solutions' duality gaps.

    Parameters
    ----------
    gram : ndarray, shape (p, p)
    cross : ndarray, shape (p, q)
    alpha_min : float

    Returns
    -------
    list of Homotopy, length q
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path_gram

    p, q = cross.shape
    usable = np.flatnonzero(np.diag(gram) > 0)
    empty = Homotopy(np.array([float(alpha_min)]), np.zeros((p, 1)))
    out = []
    block = gram[np.ix_(usable, usable)]
    with warnings.catch_warnings():
        # degenerate regressors / early stopping: the duality gap is checked by the caller
        warnings.simplefilter("ignore", ConvergenceWarning)
        for t in range(q):
            c = cross[usable, t]
            if usable.size == 0 or not np.any(c):
                out.append(empty)
                continue
            knots, _, path = lars_path_gram(
                Xy=c, Gram=block, n_samples=1, alpha_min=float(alpha_min), method="lasso"
            )
            full = np.zeros((p, len(knots)))
            full[usable] = path
            out.append(Homotopy(np.asarray(knots, dtype=np.float64), full))
    return out


def interpolate_path(homotopy: list[Homotopy], alphas: np.ndarray, p: int) -> np.ndarray:
    """The Lasso solutions at ``alphas`` (decreasing), shape (len(alphas), p, q): the linear
    interpolation of the two knots around each penalty (the last knot's solution below it)."""
    out = np.zeros((len(alphas), p, len(homotopy)))
    for t, (knots, path) in enumerate(homotopy):
        if not np.any(path):
            continue
        # knots decrease; position k with knots[k] >= a > knots[k + 1]
        k = np.clip(np.searchsorted(-knots, -alphas, side="right") - 1, 0, len(knots) - 1)
        nxt = np.minimum(k + 1, len(knots) - 1)
        width = knots[k] - knots[nxt]
        share = np.where(width > 0, (knots[k] - alphas) / np.where(width > 0, width, 1.0), 0.0)
        share = np.clip(share, 0.0, 1.0)
        out[:, :, t] = (path[:, k] * (1.0 - share) + path[:, nxt] * share).T
    return out


def visited_supports(path: Homotopy) -> tuple[np.ndarray, np.ndarray]:
    """Every support the path visits, with a penalty at which the Lasso has exactly that support.

    Between knots ``a_j > a_{j+1}`` a coefficient is linear in the penalty and cannot cross 0, so
    the support on the open interval is that of the midpoint solution; the solution at the last
    knot (the smallest penalty) is added as well.

    Returns
    -------
    penalties : ndarray, shape (S,)
        Decreasing: the middle of each segment, then the last knot.
    supports : ndarray of bool, shape (S, p)
    """
    knots, coef = path
    wide = knots[:-1] > knots[1:]
    mids = 0.5 * (coef[:, :-1] + coef[:, 1:])[:, wide]
    penalties = np.concatenate([0.5 * (knots[:-1] + knots[1:])[wide], knots[-1:]])
    supports = np.concatenate([mids, coef[:, -1:]], axis=1).T != 0
    return penalties, supports
