"""One-to-many: predict each unit of net B from the units of net A with a sparse linear model
(Li et al. 2016, section 4), from collected moments alone.

The model
---------
Units are z-scored with the population (ddof=0) mean and standard deviation of the fit set. For one
target ``y`` and sources ``X`` (``n`` samples) scikit-learn's ``Lasso(alpha, fit_intercept=True)``
minimises ``(1/2n) ||y - X w - b||^2 + alpha ||w||_1``. On z-scored data the intercept ``b`` is 0 and
the objective is ::

    1/2 - c^T w + 1/2 w^T G w + alpha ||w||_1,   G = X^T X / n = corr_AA,   c = X^T y / n = corr_AB[:, t]

so the whole penalty path follows from the correlation matrix: no stored activations, no second pass.

The solver
----------
Cyclic coordinate descent over the source units, vectorised over *all* targets: the coefficients are a
(d_A, d_B) matrix ``W`` and the residual correlations ``R = C - G W`` are kept up to date; one step
soft-thresholds row ``j`` of ``W`` for every target at once and updates ``R`` by a rank-one product
(grouped in blocks of 64 sources, so most of the work is one matrix product per block; the iterates
are exactly the cyclic ones).
Sweeps run over the sources that are non-zero for some target until they settle, then over all
sources; the solver stops when every target's duality gap (scikit-learn's, in units of the target's
variance) is at most ``tol`` and the last full sweep moved no coefficient by more than ``tol``.
Penalties run from large to small, each warm-started from the previous solution (a path).

Held-out error
--------------
A second set of moments (other samples of the same units) is scored with the fit set's
standardisation. In fit-standardised units ``u = (x - mu_fit) / sd_fit`` the prediction of target
``t`` is ``W[:, t]^T u_A``, and with ``M = Cov_h(u) + m_h(u) m_h(u)^T`` the held-out second moment
of ``u`` about 0 (``Cov_h(u) = Cov_h(x) / (sd sd^T)``, ``m_h(u) = (mean_h - mu_fit) / sd_fit``)::

    SSE_t / n_h = M_tt - 2 W_t^T M_At + W_t^T M_AA W_t,     error_t = (SSE_t / n_h) / Var_h(u_t)

i.e. 1 - R^2 on the held-out samples with R^2 about the held-out mean (a shift of the mean between
the sets counts as error), quadratic in ``W`` and computed from the held-out moments alone.

Headline: refit on the Lasso support
-------------------------------------
The Lasso's coefficients are shrunk, so its error at ~k non-zero predictors overstates what k units
can do. ``result.refit`` holds, per target and per ``k`` (default 1-4), the least-squares refit on
the support of the Lasso at the smallest penalty whose support has at most ``k`` units, with the
support's size (a ``k`` the path does not reach is never claimed). These are the numbers to report;
the Lasso path's own errors and :func:`errors_at_nonzero` stay available (see
:mod:`convergent.analysis._refit` for the conventions).

Dead units
----------
A source unit that :meth:`Moments.dead_units` calls dead gets coefficient 0. A target unit that is
dead in the fit set is not predicted: coefficients 0, no predictors, errors reported as 0.0, and it
is left out of every summary (``mean_error``, ``mean_nonzero``, :func:`errors_at_nonzero`, the
refit summary); ``dead_target`` marks it. A target dead in the held-out set only gets held-out
error 0.0, is marked in ``held_out_dead_target`` and left out of held-out summaries. No result
holds NaN.

Near-dead targets (the scoring rule)
------------------------------------
A live target whose fit variance is below ``min_variance_fraction`` (default 1e-2) times the median
fit variance of the live targets is predicted and gets errors like any other, but is left out of
every summary (``low_variance_target``; ``result.scoring()`` states the rule, the threshold and
the counts). Errors are normalised by each target's own variance, so a unit that barely varies
(for ReLU units: one active on a small share of the inputs; a standard deviation under a tenth
of the typical unit's) has an error set by a handful of samples: on the digits convnet, such
units reach held-out errors of 10-40 (far worse than predicting the mean) and moved the held-out
mean of fc6 from a median of 0.07 to 0.15, while with the rule the mean and median agree within
0.03. The medians (also reported) need no threshold; ``min_variance_fraction=0`` scores every
live target.

Near-dead sources
-----------------
The same fraction decides which sources are predictors: a live source whose fit variance is below
``min_variance_fraction`` times the median fit variance of the live sources is handled as a dead
one (coefficient 0 everywhere; ``low_variance_source``). Standardised by its tiny fit deviation,
such a unit takes held-out values hundreds of deviations out. On the digits demo convnet one fc7
unit of seed1, nearly silent on the training split, had 1.3e5 times its fit variance on the test
split; least squares on all units of seed1 then gave held-out full-linear errors of mean 4.9 and
2.9 (medians 1.1, worst target 79) against seed2 and seed3, where every other pair is at 0.09-0.10.
With the rule (24 of seed1's 256 fc7 units left out as sources) those two pairs are at 0.10 and
0.09. ``result.scoring()`` counts the sources used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from convergent.analysis._lars import interpolate_path, lars_homotopy
from convergent.analysis._refit import (
    REFIT_CONVENTION,
    REFIT_LABEL,
    SupportRefit,
    check_k,
    choose_supports,
    error_summary,
    prediction_errors,
    refit_coefficients,
)

#: Default numbers of units of the refit on the Lasso support (the paper discusses 1 to 4).
DEFAULT_REFIT_K = (1, 2, 3, 4)
#: Default scoring rule: a live target is summarised when its fit variance is at least this
#: fraction of the median fit variance of the live targets (see the module notes).
MIN_VARIANCE_FRACTION = 1e-2

#: Attributes a statistics object needs for the analyses here (duck-typed ``convergent.Moments``).
_MOMENTS_ATTRS = ("dim", "count", "mean", "comoment", "cov", "std", "corr", "dead_units", "subset")


class LassoFit(NamedTuple):
    """Solution of :func:`lasso_gram`.

    Attributes
    ----------
    coef : ndarray, shape (p, q)
        Coefficients, one column per target.
    n_sweeps : int
        Coordinate-descent sweeps run (over the active set or all sources).
    gap : ndarray, shape (q,)
        Final duality gap per target.
    """

    coef: np.ndarray
    n_sweeps: int
    gap: np.ndarray


#: Sweeps over the active set between full sweeps (each followed by the closed-form polish).
_ACTIVE_SWEEPS = 20


def _soft_threshold(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - alpha, 0.0)


def _duality_gap(
    cross: np.ndarray, coef: np.ndarray, resid: np.ndarray, yty: np.ndarray, alpha: float
) -> np.ndarray:
    """scikit-learn's Lasso duality gap per target, divided by n, from Gram-form quantities.

    With ``rho = c - G w`` (``resid``): ``||r||^2/n = yty - c.w - w.rho``, ``r.y/n = yty - c.w``,
    dual scaling ``s = min(1, alpha / max|rho|)``, gap ``= ||r||^2/n (1 + s^2)/2 + alpha |w|_1
    - s r.y/n``.
    """
    cw = np.einsum("pq,pq->q", cross, coef)
    r_norm2 = np.maximum(yty - cw - np.einsum("pq,pq->q", coef, resid), 0.0)
    dual_norm = np.abs(resid).max(axis=0) if resid.shape[0] else np.zeros(resid.shape[1])
    scale = np.ones_like(dual_norm)
    over = dual_norm > alpha
    scale[over] = alpha / dual_norm[over]
    gap = 0.5 * r_norm2 * (1.0 + scale**2) + alpha * np.abs(coef).sum(axis=0) - scale * (yty - cw)
    return np.maximum(gap, 0.0)


def _sweep(
    gram: np.ndarray,
    diag: np.ndarray,
    coef: np.ndarray,
    resid: np.ndarray,
    alpha: float,
    coords: np.ndarray,
    block: int = 64,
) -> float:
    """One cyclic pass of coordinate descent over ``coords``, all targets at once (in place).

    Exactly the cyclic updates, grouped into blocks of ``block`` sources: inside a block only the
    block's rows of the residual correlations are kept current (rank-one updates of a small
    (block, q) matrix); after the block, all rows are brought up to date by one matrix product
    restricted to the targets that moved. Returns the largest absolute coefficient change.
    """
    max_change = 0.0
    for start in range(0, len(coords), block):
        rows = coords[start : start + block]
        local = resid[rows]  # (b, q) copy, current within the block
        gram_rows = gram[np.ix_(rows, rows)]
        moved = np.zeros((len(rows), coef.shape[1]))
        for k, j in enumerate(rows):
            old = coef[j]
            new = _soft_threshold(local[k] + diag[j] * old, alpha) / diag[j]
            delta = new - old
            if not delta.any():
                continue
            coef[j] = new
            moved[k] = delta
            local -= np.outer(gram_rows[:, k], delta)
            max_change = max(max_change, float(np.abs(delta).max()))
        targets = np.flatnonzero(moved.any(axis=0))
        if targets.size == coef.shape[1]:
            resid -= gram[:, rows] @ moved
        elif targets.size:
            resid[:, targets] -= gram[:, rows] @ moved[:, targets]
    return max_change


def _polish(gram: np.ndarray, cross: np.ndarray, coef: np.ndarray, alpha: float) -> np.ndarray:
    """Per target, the exact Lasso solution on the current support and signs.

    On support ``S`` with signs ``s`` the optimality conditions give ``w_S = G_SS^-1 (c_S - alpha
    s)``; it is kept only where it satisfies them all (signs unchanged, ``|c_j - G_jS w_S| <=
    alpha`` off the support), so it is the solution, not an approximation. Coordinate descent
    finds the support quickly but can creep towards the values for thousands of sweeps when
    sources are nearly collinear (few samples, many units); this finishes those targets at once.
    """
    out = coef.copy()
    for t in range(cross.shape[1]):
        support = np.flatnonzero(coef[:, t])
        if support.size == 0:
            continue
        signs = np.sign(coef[support, t])
        block, rhs = gram[np.ix_(support, support)], cross[support, t] - alpha * signs
        # least squares, not solve: with fewer samples than units G_SS can be singular, and then
        # any solution of the (consistent) system that passes the checks is optimal
        values = np.linalg.lstsq(block, rhs, rcond=None)[0]
        if np.any(np.sign(values) != signs) or not np.allclose(block @ values, rhs, atol=1e-10):
            continue
        rho = cross[:, t] - gram[:, support] @ values
        rho[support] = 0.0
        if np.abs(rho).max(initial=0.0) <= alpha * (1.0 + 1e-12):
            out[:, t] = 0.0
            out[support, t] = values
    return out


def lasso_gram(
    gram: np.ndarray,
    cross: np.ndarray,
    penalty: float,
    *,
    yty: np.ndarray | float = 1.0,
    coef_init: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 10_000,
) -> LassoFit:
    """Lasso for many targets at once, in Gram form, by cyclic coordinate descent.

    Minimises, for every column ``t``, ``yty_t / 2 - c_t^T w + 1/2 w^T G w + penalty ||w||_1``,
    which is scikit-learn's ``Lasso(alpha=penalty)`` objective when ``G = X^T X / n``,
    ``c = X^T y / n`` and ``yty = y^T y / n`` of centred data.

    Parameters
    ----------
    gram : ndarray, shape (p, p)
        Symmetric positive semi-definite Gram matrix (the source correlations). Sources with a zero
        diagonal entry keep coefficient 0.
    cross : ndarray, shape (p, q)
        Source-target cross products (correlations), one column per target.
    penalty : float
        The L1 penalty ``alpha`` (> 0).
    yty : float or ndarray, shape (q,)
        Each target's ``y^T y / n`` (1 for z-scored targets); used for the duality gap only.
    coef_init : ndarray, shape (p, q), optional
        Warm start (not modified).
    tol : float
        Stop when every duality gap is at most ``tol`` (in the units of ``yty``) and the last full
        sweep changed no coefficient by more than ``tol``.
    max_iter : int
        Maximum number of sweeps; if reached, a ``RuntimeWarning`` says so.

    Returns
    -------
    LassoFit
        ``coef`` (p, q), ``n_sweeps`` and the final ``gap`` (q,).
    """
    gram = np.asarray(gram, dtype=np.float64)
    cross = np.asarray(cross, dtype=np.float64)
    p, q = cross.shape
    yty = np.broadcast_to(np.asarray(yty, dtype=np.float64), (q,))
    coef = np.zeros((p, q)) if coef_init is None else np.array(coef_init, dtype=np.float64)
    diag = np.diag(gram).copy()
    usable = np.flatnonzero(diag > 0)
    coef[diag <= 0] = 0.0
    resid = cross - gram @ coef
    gap = _duality_gap(cross, coef, resid, yty, penalty)
    n_sweeps = 0
    while n_sweeps < max_iter:
        # settle the active set (sources non-zero for some target), then check all sources
        # (a few sweeps only: on nearly collinear sources the closed form below finishes faster)
        active = usable[np.any(coef[usable] != 0, axis=1)]
        for _ in range(_ACTIVE_SWEEPS):
            if not active.size or n_sweeps >= max_iter:
                break
            n_sweeps += 1
            if _sweep(gram, diag, coef, resid, penalty, active) <= tol:
                break
        n_sweeps += 1
        change = _sweep(gram, diag, coef, resid, penalty, usable)
        resid = cross - gram @ coef  # drop the rounding drift of the rank-one updates
        gap = _duality_gap(cross, coef, resid, yty, penalty)
        slow = np.flatnonzero(gap > tol)
        if slow.size:  # ill-conditioned sources: try the closed form on the current support
            coef[:, slow] = _polish(gram, cross[:, slow], coef[:, slow], penalty)
            resid[:, slow] = cross[:, slow] - gram @ coef[:, slow]
            gap = _duality_gap(cross, coef, resid, yty, penalty)
        if change <= tol and gap.max(initial=0.0) <= tol:
            return LassoFit(coef, n_sweeps, gap)
    warnings.warn(
        f"Coordinate descent stopped after max_iter={max_iter} sweeps at penalty {penalty:.4g} "
        f"with largest duality gap {gap.max(initial=0.0):.2e} > tol={tol:.1e}; "
        "raise max_iter or tol.",
        RuntimeWarning,
        stacklevel=2,
    )
    return LassoFit(coef, n_sweeps, gap)


@dataclass(frozen=True)
class SparsePredictionResult:
    """Sparse prediction of target units (net B) from source units (net A), per penalty.

    ``P`` penalties (largest first), ``d_A`` sources, ``d_B`` targets, ``K`` values of ``k``.
    Errors are normalised prediction errors ``1 - R^2`` (0 perfect, 1 no better than the mean);
    coefficients are in standardised units (z-scored with the fit set's population mean and
    standard deviation). Every error has a fit variant and, with held-out moments, a held-out one
    (coefficients always from the fit moments).

    Attributes
    ----------
    source, target : ndarray of int, shapes (d_A,), (d_B,)
        The variables' indices into the moments.
    penalties : ndarray, shape (P,)
        L1 penalties (scikit-learn's ``Lasso(alpha)``), decreasing.
    coef : ndarray, shape (P, d_A, d_B)
        Lasso coefficients (shrunk): target ``t`` is predicted as ``sum_j coef[i, j, t] * z_j``.
    error : ndarray, shape (P, d_B)
        Normalised error of the Lasso fit per target, on the fit moments.
    nonzero : ndarray of int, shape (P, d_B)
        Number of non-zero predictors per target.
    held_out_error : ndarray, shape (P, d_B), or None
        Normalised error on the held-out moments, if given.
    one_to_one_error, one_to_one_held_out_error : ndarray, shape (d_B,) (held-out: or None)
        Reference: prediction from the single best-correlated source, ``1 - max_j corr_jt^2``.
    one_to_one_source : ndarray of int, shape (d_B,)
        Position in ``source`` of that best source (-1 when every source is dead).
    full_linear_error, full_linear_held_out_error : ndarray, shape (d_B,) (held-out: or None)
        Reference: unpenalised least squares on all sources (minimum-norm solution).
    full_linear_coef : ndarray, shape (d_A, d_B)
        Its coefficients, in standardised units.
    dead_source, dead_target, held_out_dead_target : ndarray of bool
        Dead units (shapes (d_A,), (d_B,), (d_B,)); see the module notes.
    n_sweeps : ndarray of int, shape (P,)
        Coordinate-descent sweeps per penalty.
    duality_gap : ndarray, shape (P,)
        Largest final duality gap over targets, per penalty.
    refit : SupportRefit or None
        The headline one-to-many errors: least squares on the Lasso support with at most ``k``
        units, per ``k`` (see :mod:`convergent.analysis._refit`).
    target_variance : ndarray, shape (d_B,)
        Each target's population variance on the fit moments (in its own units).
    min_variance_fraction : float
        The scoring rule's fraction (see ``low_variance_target``).
    variance_threshold : float
        ``min_variance_fraction`` times the median fit variance of the live targets.
    low_variance_target : ndarray of bool, shape (d_B,)
        Live targets whose fit variance is below ``variance_threshold``: they get errors like any
        other target but are left out of every summary (means, medians, counts), as dead targets
        are.
    low_variance_source : ndarray of bool, shape (d_A,)
        Live sources whose fit variance is below ``source_variance_threshold``
        (``min_variance_fraction`` times the median fit variance of the live sources): never used
        as predictors (coefficient 0 in every fit, the Lasso, the refit, the best single source
        and least squares), as dead sources.
    source_variance_threshold : float
    """

    source: np.ndarray
    target: np.ndarray
    penalties: np.ndarray
    coef: np.ndarray
    error: np.ndarray
    nonzero: np.ndarray
    held_out_error: np.ndarray | None
    one_to_one_error: np.ndarray
    one_to_one_source: np.ndarray
    one_to_one_held_out_error: np.ndarray | None
    full_linear_error: np.ndarray
    full_linear_held_out_error: np.ndarray | None
    full_linear_coef: np.ndarray
    dead_source: np.ndarray
    dead_target: np.ndarray
    held_out_dead_target: np.ndarray
    n_sweeps: np.ndarray
    duality_gap: np.ndarray
    refit: SupportRefit | None = None
    target_variance: np.ndarray | None = None
    min_variance_fraction: float = 0.0
    variance_threshold: float = 0.0
    low_variance_target: np.ndarray | None = None
    low_variance_source: np.ndarray | None = None
    source_variance_threshold: float = 0.0

    def scored_targets(self, held_out: bool = False) -> np.ndarray:
        """(d_B,) bool: the targets that enter every summary.

        Live in the fit split with fit variance at least ``variance_threshold``; for held-out
        summaries also live in the held-out split.
        """
        if held_out and self.held_out_error is None:
            raise ValueError(
                "This SparsePredictionResult has no held-out errors; pass held_out= moments to "
                "sparse_prediction to get them."
            )
        keep = ~self.dead_target
        if self.low_variance_target is not None:
            keep = keep & ~self.low_variance_target
        return keep & ~self.held_out_dead_target if held_out else keep

    _scored = scored_targets

    def mean_error(self, held_out: bool = False) -> np.ndarray:
        """(P,) mean normalised Lasso error over the scored targets (0.0 when there are none)."""
        keep = self._scored(held_out)
        errors = self.held_out_error if held_out else self.error
        return errors[:, keep].mean(axis=1) if keep.any() else np.zeros(len(self.penalties))

    def median_error(self, held_out: bool = False) -> np.ndarray:
        """(P,) median normalised Lasso error over the scored targets (0.0 when there are none)."""
        keep = self._scored(held_out)
        errors = self.held_out_error if held_out else self.error
        return np.median(errors[:, keep], axis=1) if keep.any() else np.zeros(len(self.penalties))

    def mean_nonzero(self) -> np.ndarray:
        """(P,) mean number of non-zero predictors over the scored targets."""
        keep = self._scored(False)
        if not keep.any():
            return np.zeros(len(self.penalties))
        return self.nonzero[:, keep].mean(axis=1)

    def nonzero_distribution(self, index: int) -> np.ndarray:
        """Histogram of the number of non-zero predictors at penalty ``index``.

        Returns
        -------
        ndarray of int, shape (k_max + 1,)
            Entry ``k`` counts the scored targets with exactly ``k`` non-zero predictors.
        """
        return np.bincount(self.nonzero[index, self._scored(False)], minlength=1)

    def scoring(self) -> dict[str, Any]:
        """Which targets the summaries are over: the rule, its threshold and the counts."""
        live = ~self.dead_target
        low = (
            self.low_variance_target
            if self.low_variance_target is not None
            else np.zeros_like(live)
        )
        out: dict[str, Any] = {
            "rule": (
                "targets live in the fit split whose fit variance is at least "
                "min_variance_fraction times the median fit variance of the live targets"
            ),
            "min_variance_fraction": float(self.min_variance_fraction),
            "variance_threshold": float(self.variance_threshold),
            "targets": len(self.target),
            "scored": int(self.scored_targets().sum()),
            "left_out_dead": int(self.dead_target.sum()),
            "left_out_low_variance": int((live & low).sum()),
            "low_variance_target": np.flatnonzero(live & low).tolist(),
            "sources": len(self.source),
            "sources_used": int(len(self.source) - self.dead_source.sum() - self._weak().sum()),
            "sources_left_out_dead": int(self.dead_source.sum()),
            "sources_left_out_low_variance": int(self._weak().sum()),
            "source_rule": (
                "sources live in the fit split whose fit variance is at least "
                "min_variance_fraction times the median fit variance of the live sources"
            ),
        }
        if self.held_out_error is not None:
            out["scored_held_out"] = int(self.scored_targets(True).sum())
            out["left_out_held_out_dead"] = int(
                (self.scored_targets() & self.held_out_dead_target).sum()
            )
        return out

    def _weak(self) -> np.ndarray:
        if self.low_variance_source is None:
            return np.zeros(len(self.source), dtype=bool)
        return self.low_variance_source

    def reference_summary(self) -> dict[str, dict[str, Any]]:
        """Mean and median over the scored targets of the one-to-one and full-linear errors.

        Returns
        -------
        dict
            ``{"one_to_one" | "full_linear": {"fit": {"mean", "median", "targets"},
            "held_out": same or None}}``.
        """
        has_held = self.held_out_error is not None
        keep, keep_h = self.scored_targets(), self.scored_targets(has_held)
        return {
            "one_to_one": {
                "fit": error_summary(self.one_to_one_error, keep),
                "held_out": error_summary(self.one_to_one_held_out_error, keep_h),
            },
            "full_linear": {
                "fit": error_summary(self.full_linear_error, keep),
                "held_out": error_summary(self.full_linear_held_out_error, keep_h),
            },
        }

    def refit_summary(self) -> list[dict[str, Any]]:
        """Per ``k``: the refit's errors over the scored targets, and how many reached ``k`` units.

        Returns
        -------
        list of dict, one per ``k`` (increasing)
            ``k``, ``label`` ("refit on <= k Lasso units"), ``fit`` and ``held_out``
            (``{"mean", "median", "targets"}``; ``held_out`` None without held-out moments),
            ``reached`` (scored targets whose support has exactly ``k`` units), ``scored``,
            ``mean_size`` (mean support size over the scored targets). Empty without a refit.
        """
        if self.refit is None:
            return []
        has_held = self.held_out_error is not None
        keep, keep_h = self.scored_targets(), self.scored_targets(has_held)
        reached = self.refit.reached()
        out = []
        for i, k in enumerate(self.refit.k):
            held = self.refit.held_out_error
            out.append(
                {
                    "k": int(k),
                    "label": REFIT_LABEL.format(k=int(k)),
                    "fit": error_summary(self.refit.error[i], keep),
                    "held_out": error_summary(None if held is None else held[i], keep_h),
                    "reached": int(reached[i, keep].sum()),
                    "scored": int(keep.sum()),
                    "mean_size": float(self.refit.size[i, keep].mean()) if keep.any() else 0.0,
                }
            )
        return out

    def to_dict(self, *, per_target: bool = True) -> dict[str, Any]:
        """JSON-able summary (no NaN; ``None`` where a quantity was not computed).

        Per penalty: mean and median errors, the distribution of non-zero counts; the refit per
        ``k`` (``"refit"``, the headline); the references; which targets were scored
        (``"scoring"``). With ``per_target`` also the per-target errors, counts and refit
        supports. Coefficient matrices are left out (store them as arrays).
        """
        has_held = self.held_out_error is not None
        mean_held = self.mean_error(True) if has_held else None
        median_held = self.median_error(True) if has_held else None
        median_fit = self.median_error()
        live = self._scored(False)
        path = []
        for i, alpha in enumerate(self.penalties):
            nz = self.nonzero[i, live]
            entry: dict[str, Any] = {
                "penalty": float(alpha),
                "mean_error": float(self.mean_error()[i]),
                "median_error": float(median_fit[i]),
                "mean_held_out_error": None if mean_held is None else float(mean_held[i]),
                "median_held_out_error": None if median_held is None else float(median_held[i]),
                "mean_nonzero": float(nz.mean()) if nz.size else 0.0,
                "median_nonzero": float(np.median(nz)) if nz.size else 0.0,
                "max_nonzero": int(nz.max()) if nz.size else 0,
                "nonzero_histogram": self.nonzero_distribution(i).tolist(),
                "n_sweeps": int(self.n_sweeps[i]),
                "duality_gap": float(self.duality_gap[i]),
            }
            if per_target:
                entry["error"] = self.error[i].tolist()
                entry["nonzero"] = self.nonzero[i].tolist()
                entry["held_out_error"] = self.held_out_error[i].tolist() if has_held else None
            path.append(entry)

        def mean_over(values: np.ndarray | None, held_out: bool) -> float | None:
            if values is None:
                return None
            keep = self._scored(held_out)
            return float(values[keep].mean()) if keep.any() else 0.0

        refs = self.reference_summary()
        out: dict[str, Any] = {
            "n_source": len(self.source),
            "n_target": len(self.target),
            "dead_source": np.flatnonzero(self.dead_source).tolist(),
            "dead_target": np.flatnonzero(self.dead_target).tolist(),
            "held_out_dead_target": np.flatnonzero(self.held_out_dead_target).tolist(),
            "scoring": self.scoring(),
            "path": path,
            "refit": {"convention": REFIT_CONVENTION, "by_k": self.refit_summary()},
            "one_to_one": {
                "mean_error": mean_over(self.one_to_one_error, False),
                "mean_held_out_error": mean_over(self.one_to_one_held_out_error, True),
                **refs["one_to_one"],
            },
            "full_linear": {
                "mean_error": mean_over(self.full_linear_error, False),
                "mean_held_out_error": mean_over(self.full_linear_held_out_error, True),
                **refs["full_linear"],
            },
        }
        if per_target:
            out["one_to_one"]["error"] = self.one_to_one_error.tolist()
            out["one_to_one"]["source"] = self.one_to_one_source.tolist()
            out["full_linear"]["error"] = self.full_linear_error.tolist()
            if self.refit is not None:
                out["refit"]["size"] = self.refit.size.tolist()
                out["refit"]["error"] = self.refit.error.tolist()
                out["refit"]["held_out_error"] = (
                    None
                    if self.refit.held_out_error is None
                    else self.refit.held_out_error.tolist()
                )
        return out


def _check_moments(obj: Any, name: str) -> None:
    missing = [a for a in _MOMENTS_ATTRS if not hasattr(obj, a)]
    if missing:
        raise TypeError(
            f"The '{name}' parameter of sparse_prediction must be a Moments-like statistics object "
            f"(with {', '.join(_MOMENTS_ATTRS)}). Got {type(obj).__name__} lacking "
            f"{', '.join(missing)}; build one with convergent.Moments(dim).update(activations)."
        )


def _as_index(value: Any, name: str, dim: int) -> np.ndarray:
    index = np.asarray(value)
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(
            f"The '{name}' parameter of sparse_prediction must be a non-empty 1-D array of integer "
            f"unit indices. Got {value!r} instead; e.g. np.arange(*unit_ranges['net0'])."
        )
    if index.min() < 0 or index.max() >= dim:
        raise ValueError(
            f"The '{name}' parameter of sparse_prediction holds indices outside [0, {dim}) (the "
            f"moments' variables). Got min {index.min()}, max {index.max()} instead."
        )
    return index.astype(np.int64)


def _as_penalties(penalties: Any) -> np.ndarray:
    values = np.asarray(penalties, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or values.min() <= 0:
        raise ValueError(
            "The 'penalties' parameter of sparse_prediction must be a non-empty 1-D sequence of "
            f"finite numbers > 0. Got {penalties!r} instead (for the unpenalised fit, read "
            "full_linear_error from the result)."
        )
    return np.sort(values)[::-1]


def default_penalties(cross: np.ndarray, n_penalties: int = 12, ratio: float = 1e-3) -> np.ndarray:
    """Logarithmic penalty grid from ``alpha_max = max |corr_AB|`` (every coefficient 0) down.

    Parameters
    ----------
    cross : ndarray, shape (d_A, d_B)
        Source-target correlations.
    n_penalties : int
        Number of penalties.
    ratio : float
        Smallest over largest penalty.

    Returns
    -------
    ndarray, shape (n_penalties,)
        Decreasing penalties; from 1.0 down when every correlation is 0 (all solutions are 0).
    """
    alpha_max = float(np.abs(cross).max(initial=0.0))
    if alpha_max <= 0:
        alpha_max = 1.0
    return np.geomspace(alpha_max, alpha_max * ratio, n_penalties)


def sparse_prediction(
    moments: Any,
    source: Sequence[int] | np.ndarray,
    target: Sequence[int] | np.ndarray,
    penalties: Sequence[float] | np.ndarray | None = None,
    *,
    held_out: Any = None,
    n_penalties: int = 12,
    penalty_ratio: float = 1e-3,
    solver: str = "lars",
    tol: float = 1e-10,
    max_iter: int = 10_000,
    refit_k: Sequence[int] | None = DEFAULT_REFIT_K,
    min_variance_fraction: float = MIN_VARIANCE_FRACTION,
) -> SparsePredictionResult:
    """Predict every target unit from the source units by L1-penalised least squares, per penalty.

    Exactly scikit-learn's ``Lasso(alpha, fit_intercept=True)`` on the z-scored (population std)
    activations, one fit per target and penalty, computed from the moments alone (see the module
    notes for the algebra, the solver and dead units).

    Parameters
    ----------
    moments : Moments
        Joint moments of (at least) the source and target units, e.g. one layer of all nets.
    source, target : array-like of int, shapes (d_A,), (d_B,)
        Indices of the source (net A) and target (net B) units among the moments' variables.
    penalties : array-like of float, shape (P,), optional
        L1 penalties (> 0); solved from the largest to the smallest with warm starts. Default:
        ``n_penalties`` log-spaced from ``max |corr_AB|`` (where every coefficient is 0) down to
        ``penalty_ratio`` times that.
    held_out : Moments, optional
        Moments of the same variables on other samples; errors are also evaluated there, with the
        fit set's standardisation.
    n_penalties : int
        Size of the default grid.
    penalty_ratio : float
        Smallest over largest penalty of the default grid.
    solver : {"lars", "cd"}
        ``"lars"`` (default): the exact piecewise-linear path by the LARS-Lasso homotopy, then any
        solution whose duality gap exceeds ``tol`` (degenerate sources) is finished by coordinate
        descent; ``"cd"``: warm-started coordinate descent along the path (:func:`lasso_gram`).
        Both give the same solutions to ``tol``; LARS is much faster on nearly collinear sources.
    tol : float
        Duality-gap and coefficient-change tolerance of coordinate descent.
    max_iter : int
        Maximum coordinate-descent sweeps per penalty.
    refit_k : sequence of int >= 1, or None
        Numbers of units for the least-squares refit on the Lasso support (the headline one-to-many
        errors, ``result.refit``; see :mod:`convergent.analysis._refit`). None: no refit.
    min_variance_fraction : float in [0, 1)
        Targets whose fit variance is below this fraction of the median fit variance of the live
        targets are left out of every summary (``result.scoring()``); 0 keeps every live target.

    Returns
    -------
    SparsePredictionResult
        Per penalty (decreasing): error and number of non-zero predictors per target, coefficients
        in standardised units; the refit per ``k``; the one-to-one and full linear reference
        points; which targets the summaries are over.

    Raises
    ------
    ValueError
        For bad indices, penalties, solver, ``refit_k`` or ``min_variance_fraction``, or held-out
        moments of other variables.

    Examples
    --------
    >>> res = sparse_prediction(moments, np.arange(0, 64), np.arange(64, 128))  # doctest: +SKIP
    >>> res.mean_error(), res.mean_nonzero()  # doctest: +SKIP
    """
    _check_moments(moments, "moments")
    src = _as_index(source, "source", moments.dim)
    tgt = _as_index(target, "target", moments.dim)
    n_a, n_b = len(src), len(tgt)
    both = np.concatenate([src, tgt])
    fit = moments.subset(both)
    corr = np.asarray(fit.corr(), dtype=np.float64)
    dead = np.zeros(n_a + n_b, dtype=bool)
    dead[np.asarray(fit.dead_units(), dtype=np.int64)] = True
    dead_source, dead_target = dead[:n_a], dead[n_a:]
    variances = np.asarray(fit.var(0), dtype=np.float64)
    if not (np.isfinite(min_variance_fraction) and 0 <= min_variance_fraction < 1):
        raise ValueError(
            "The 'min_variance_fraction' parameter of sparse_prediction must be a number in "
            f"[0, 1). Got {min_variance_fraction!r} instead (0 scores every live target)."
        )
    # the source rule: a live source with (nearly) no variance in the fit split is not a predictor
    live_source_var = variances[:n_a][~dead_source]
    source_threshold = (
        float(min_variance_fraction * np.median(live_source_var)) if live_source_var.size else 0.0
    )
    weak_source = ~dead_source & (variances[:n_a] < source_threshold)
    unused = dead_source | weak_source  # not predictors: handled as dead sources below

    # correlations with every dead unit zeroed (Moments.corr does so already; be explicit)
    gram = np.where(np.outer(~unused, ~unused), corr[:n_a, :n_a], 0.0)
    np.fill_diagonal(gram, np.where(unused, 0.0, 1.0))
    cross = np.where(np.outer(~unused, ~dead_target), corr[:n_a, n_a:], 0.0)
    yty = np.where(dead_target, 0.0, 1.0)

    alphas = (
        default_penalties(cross, n_penalties, penalty_ratio)
        if penalties is None
        else _as_penalties(penalties)
    )
    if solver not in ("lars", "cd"):
        raise ValueError(
            f"The 'solver' parameter of sparse_prediction must be 'lars' or 'cd'. Got {solver!r} "
            "instead."
        )
    ks = None if refit_k is None else check_k(refit_k, "sparse_prediction")
    homotopy = (
        lars_homotopy(gram, cross, float(alphas[-1]))
        if solver == "lars" or ks is not None
        else None
    )
    coefs = interpolate_path(homotopy, alphas, n_a) if solver == "lars" else None
    sweeps = np.zeros(len(alphas), dtype=np.int64)
    gaps = np.zeros(len(alphas))
    coef = np.zeros((n_a, n_b))
    if coefs is None:
        coefs = np.zeros((len(alphas), n_a, n_b))
    for i, alpha in enumerate(alphas):
        if solver == "lars":
            gap = _duality_gap(cross, coefs[i], cross - gram @ coefs[i], yty, float(alpha))
            if gap.max(initial=0.0) <= tol:
                gaps[i] = gap.max(initial=0.0)
                continue
            coef = coefs[i]  # finish the exact path's rare degenerate targets by descent
        fit_i = lasso_gram(
            gram, cross, float(alpha), yty=yty, coef_init=coef, tol=tol, max_iter=max_iter
        )
        coef = fit_i.coef
        coefs[i], sweeps[i], gaps[i] = coef, fit_i.n_sweeps, fit_i.gap.max(initial=0.0)

    # reference points: the best single source (coefficient = its correlation) and least squares
    best = np.argmax(np.where(unused[:, None], -1.0, np.abs(cross)), axis=0)
    one_coef = np.zeros((n_a, n_b))
    one_coef[best, np.arange(n_b)] = cross[best, np.arange(n_b)]
    one_source = np.where(unused[best] | dead_target, -1, best)
    full_coef = np.linalg.lstsq(gram, cross, rcond=None)[0]
    if ks is not None:
        support, size, support_penalty = choose_supports(homotopy, alphas, coefs, ks, dead_target)
        refit_coef = refit_coefficients(gram, cross, support)

    # training errors: second moment about 0 of the z-scored units is the correlation matrix
    second = np.block([[gram, cross], [cross.T, np.diag(yty)]])
    error = prediction_errors(second, coefs, n_a, yty)
    one_error = prediction_errors(second, one_coef, n_a, yty)
    full_error = prediction_errors(second, full_coef, n_a, yty)
    refit_error = prediction_errors(second, refit_coef, n_a, yty) if ks is not None else None

    held_err = one_held = full_held = refit_held = None
    held_dead = np.zeros(n_b, dtype=bool)
    if held_out is not None:
        _check_moments(held_out, "held_out")
        if held_out.dim != moments.dim:
            raise ValueError(
                f"The 'held_out' parameter of sparse_prediction must describe the same {moments.dim} "
                f"variables as 'moments'. Got moments of {held_out.dim} variables instead."
            )
        unused_all = np.concatenate([unused, dead[n_a:]])
        second_h, var_h, held_dead = _held_out_second_moment(
            fit, held_out.subset(both), unused_all, n_a
        )
        var_h = np.where(dead_target, 0.0, var_h)
        held_err = prediction_errors(second_h, coefs, n_a, var_h)
        one_held = prediction_errors(second_h, one_coef, n_a, var_h)
        full_held = prediction_errors(second_h, full_coef, n_a, var_h)
        if ks is not None:
            refit_held = prediction_errors(second_h, refit_coef, n_a, var_h)

    # the scoring rule: leave out live targets with (nearly) no variance in the fit split
    variance = variances[n_a:]
    live_var = variance[~dead_target]
    threshold = float(min_variance_fraction * np.median(live_var)) if live_var.size else 0.0
    refit = (
        SupportRefit(ks, support, size, support_penalty, refit_coef, refit_error, refit_held)
        if ks is not None
        else None
    )
    return SparsePredictionResult(
        source=src,
        target=tgt,
        penalties=alphas,
        coef=coefs,
        error=error,
        nonzero=np.count_nonzero(coefs, axis=1),
        held_out_error=held_err,
        one_to_one_error=one_error,
        one_to_one_source=one_source,
        one_to_one_held_out_error=one_held,
        full_linear_error=full_error,
        full_linear_held_out_error=full_held,
        full_linear_coef=full_coef,
        dead_source=dead_source,
        dead_target=dead_target,
        held_out_dead_target=held_dead,
        n_sweeps=sweeps,
        duality_gap=gaps,
        refit=refit,
        target_variance=variance,
        min_variance_fraction=float(min_variance_fraction),
        variance_threshold=threshold,
        low_variance_target=~dead_target & (variance < threshold),
        low_variance_source=weak_source,
        source_variance_threshold=source_threshold,
    )


def _held_out_second_moment(
    fit: Any, held: Any, dead: np.ndarray, n_source: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out second moment (about 0) of the fit-standardised units, the targets' held-out
    variances in those units, and which targets are dead on the held-out set."""
    sd = np.where(dead, 1.0, np.asarray(fit.std(0), dtype=np.float64))
    shift = (np.asarray(held.mean, dtype=np.float64) - np.asarray(fit.mean)) / sd
    cov_u = np.asarray(held.cov(0), dtype=np.float64) / np.outer(sd, sd)
    second = cov_u + np.outer(shift, shift)
    held_dead = np.zeros(len(dead), dtype=bool)
    held_dead[np.asarray(held.dead_units(), dtype=np.int64)] = True
    var = np.where(held_dead, 0.0, np.diag(cov_u))[n_source:]
    return second, var, held_dead[n_source:]


def errors_at_nonzero(
    result: SparsePredictionResult, k: Sequence[float] = (1, 2, 4)
) -> dict[float, dict[str, float | None]]:
    """The Lasso error at the penalty whose mean number of non-zero predictors is closest to ``k``.

    Not the headline one-to-many number: this is the *shrunk* Lasso fit, at one penalty for all
    targets, chosen so the *mean* count over targets is near ``k`` (individual targets may have
    far more or fewer predictors, and the mean may be far from ``k`` when the path never gets
    there: with an exact permutation between the nets every target has one predictor at every
    penalty, so ``k = 2`` and ``4`` report ``mean_nonzero`` 1.0 and a shrunk error well above the
    one-to-one error of 0). Report ``result.refit_summary()`` (least squares on the Lasso support
    with at most ``k`` units, per target) instead; this stays for comparison with older results.

    Parameters
    ----------
    result : SparsePredictionResult
    k : sequence of float
        Target mean numbers of non-zero predictors per target unit.

    Returns
    -------
    dict
        ``{k: {"penalty", "mean_nonzero", "error", "held_out_error"}}`` with mean errors over live
        targets (``held_out_error`` is None without held-out moments). Ties go to the larger
        penalty (the sparser model).
    """
    mean_nz = result.mean_nonzero()
    errors = result.mean_error()
    held = result.mean_error(True) if result.held_out_error is not None else None
    out: dict[float, dict[str, float | None]] = {}
    for want in k:
        if not np.isfinite(want) or want < 0:
            raise ValueError(
                "The 'k' parameter of errors_at_nonzero must hold finite numbers >= 0 (mean numbers "
                f"of non-zero predictors). Got {want!r} instead."
            )
        i = int(np.argmin(np.abs(mean_nz - want)))  # first minimum: the larger penalty
        out[want] = {
            "penalty": float(result.penalties[i]),
            "mean_nonzero": float(mean_nz[i]),
            "error": float(errors[i]),
            "held_out_error": None if held is None else float(held[i]),
        }
    return out
