"""One-to-many: predict every unit of net B from the units of net A with a sparse linear model
(Li et al. 2016, section 4), from the collected moments alone.

On z-scored units (mean 0, population std 1) scikit-learn's Lasso objective for a target ``y``,
``(1/2n) ||y - X w||^2 + alpha ||w||_1`` with an unpenalised intercept, depends on the data only through
``G = X^T X / n`` (the source units' correlation matrix) and ``c = X^T y / n`` (their correlations with
the target), and the intercept is 0. So the whole regularisation path comes from the joint correlation
matrix: no second pass, no stored activations. The solver runs over all targets at once,
warm-started from the previous penalty, and stops on the duality gap (accelerated proximal gradient,
one matrix product per iteration for all targets, with an exact polish once the support is found).
Penalties follow ``sklearn.linear_model.Lasso(alpha)`` and coefficients are in standardised units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergent._errors import ConvergentError

#: Duality-gap tolerance, in units of the target's variance (1 after z-scoring).
DEFAULT_TOL = 1e-6


def _soft(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.sign(z) * np.maximum(np.abs(z) - alpha, 0.0)


def lasso_gram(
    gram: np.ndarray,
    cross: np.ndarray,
    alpha: float,
    *,
    coef: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = 20000,
    lipschitz: float | None = None,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Lasso for many targets from Gram form: minimise, per column t of ``cross``,
    ``1/2 - c_t^T w + 1/2 w^T G w + alpha ||w||_1``.

    Accelerated proximal gradient (FISTA with gradient-based adaptive restart) on all targets at
    once: every iteration is one (p, p) x (p, T) matrix product, so the whole path runs at BLAS speed
    however many targets there are. Stops when every target's duality gap is below ``tol``.

    Parameters
    ----------
    gram : (p, p) source correlation (z-scored Gram / n)
    cross : (p, T) source-target correlations
    alpha : float
        Penalty (scikit-learn's ``Lasso(alpha)``).
    coef : (p, T), optional
        Warm start.
    tol : float
        Duality-gap tolerance, in units of each target's variance (1 after z-scoring).
    lipschitz : float, optional
        The largest eigenvalue of ``gram`` (computed if not given).

    Returns
    -------
    coef : (p, T)
    iterations : int
    gap : (T,) final duality gaps
    """
    p, t = cross.shape
    if lipschitz is None:
        lipschitz = float(np.linalg.eigvalsh(gram)[-1]) if p else 1.0
    step = 1.0 / max(lipschitz, 1e-12)
    w = np.zeros((p, t)) if coef is None else coef.copy()
    y = w.copy()
    momentum = 1.0
    gap = _duality_gap(gram, cross, w, cross - gram @ w, alpha)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - returned
        grad = gram @ y - cross
        new = _soft(y - step * grad, alpha * step)
        # restart the momentum when it points uphill (O'Donoghue and Candes 2015)
        if np.sum((y - new) * (new - w)) > 0:
            momentum = 1.0
            y = new
        else:
            nxt = (1.0 + np.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
            y = new + ((momentum - 1.0) / nxt) * (new - w)
            momentum = nxt
        w = new
        if it % 10 == 0:
            gap = _duality_gap(gram, cross, w, cross - gram @ w, alpha)
            if np.all(gap < tol):
                break
        if it % 50 == 0:
            # once the support is found, the optimum is closed-form: polish and check optimality
            polished = _polish(gram, cross, w, alpha)
            pgap = _duality_gap(gram, cross, polished, cross - gram @ polished, alpha)
            better = pgap < gap
            if better.any():
                w[:, better] = polished[:, better]
                y[:, better] = polished[:, better]
                gap = np.where(better, pgap, gap)
            if np.all(gap < tol):
                break
    return w, it, gap


def _polish(gram: np.ndarray, cross: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """For each target, the exact Lasso solution on the current support and signs,
    ``w_S = G_SS^-1 (c_S - alpha sign(w_S))``, kept where it satisfies the optimality conditions
    (signs unchanged, ``|c_j - G_j,S w_S| <= alpha`` off the support); elsewhere ``w`` unchanged."""
    out = w.copy()
    for t in range(cross.shape[1]):
        support = np.flatnonzero(w[:, t])
        if support.size == 0:
            continue
        signs = np.sign(w[support, t])
        g = gram[np.ix_(support, support)]
        try:
            ws = np.linalg.solve(g, cross[support, t] - alpha * signs)
        except np.linalg.LinAlgError:
            continue
        if np.any(np.sign(ws) != signs):
            continue
        r = cross[:, t] - gram[:, support] @ ws
        off = np.ones(len(r), dtype=bool)
        off[support] = False
        if np.all(np.abs(r[off]) <= alpha * (1 + 1e-12)):
            out[:, t] = 0.0
            out[support, t] = ws
    return out


def _duality_gap(
    gram: np.ndarray, cross: np.ndarray, w: np.ndarray, resid: np.ndarray, alpha: float
) -> np.ndarray:
    # per target, in units of 1/n: ||r||^2/n = 1 - 2 c^T w + w^T G w ;  r^T y / n = 1 - c^T w
    cw = np.einsum("pt,pt->t", cross, w)
    wgw = np.einsum("pt,pt->t", w, cross - resid)
    r2 = np.maximum(1.0 - 2.0 * cw + wgw, 0.0)
    dual_norm = np.abs(resid).max(axis=0)
    scale = np.where(dual_norm > alpha, alpha / np.maximum(dual_norm, 1e-300), 1.0)
    gap = 0.5 * r2 * (1.0 + scale**2) + alpha * np.abs(w).sum(axis=0) - scale * (1.0 - cw)
    return np.abs(gap)


@dataclass
class SparsePredictionResult:
    """Sparse prediction of target units from source units, over a path of penalties.

    Attributes
    ----------
    penalties : (L,) penalties, largest first
    coef : (L, p, T) standardised coefficients per penalty
    error : (L, T) normalised training error 1 - R^2 per penalty and target
    nonzero : (L, T) number of non-zero predictors per penalty and target
    held_out_error : (L, T) or None, 1 - R^2 on the held-out moments
    one_to_one_error : (T,) error of the best single source unit (1 - max_j corr^2)
    full_error : (T,) error of the unpenalised least squares on all sources
    dead_targets : indices (into targets) of zero-variance targets (error reported as 0)
    """

    penalties: np.ndarray
    coef: np.ndarray
    error: np.ndarray
    nonzero: np.ndarray
    held_out_error: np.ndarray | None
    one_to_one_error: np.ndarray
    full_error: np.ndarray
    held_out_one_to_one_error: np.ndarray | None
    held_out_full_error: np.ndarray | None
    dead_targets: np.ndarray
    iterations: np.ndarray

    def mean_error(self, held_out: bool = False) -> np.ndarray:
        """(L,) error per penalty averaged over live targets."""
        err = self.held_out_error if held_out and self.held_out_error is not None else self.error
        return _live_mean(err, self.dead_targets, axis=1)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "penalties": self.penalties.tolist(),
            "mean_error": self.mean_error().tolist(),
            "mean_nonzero": self.nonzero.mean(axis=1).tolist(),
            "one_to_one_error": float(_live_mean(self.one_to_one_error, self.dead_targets)),
            "full_error": float(_live_mean(self.full_error, self.dead_targets)),
            "dead_targets": len(self.dead_targets),
            "at_nonzero": errors_at_nonzero(self),
        }
        if self.held_out_error is not None:
            out["held_out_mean_error"] = self.mean_error(held_out=True).tolist()
            out["held_out_one_to_one_error"] = float(
                _live_mean(self.held_out_one_to_one_error, self.dead_targets)
            )
            out["held_out_full_error"] = float(
                _live_mean(self.held_out_full_error, self.dead_targets)
            )
        return out


def _live_mean(values: np.ndarray, dead: np.ndarray, axis: int = -1) -> Any:
    mask = np.ones(values.shape[axis], dtype=bool)
    mask[dead] = False
    if not mask.any():
        return np.zeros(values.shape[:-1]) if values.ndim > 1 else 0.0
    return np.compress(mask, values, axis=axis).mean(axis=axis)


def errors_at_nonzero(
    result: SparsePredictionResult, k: Sequence[int] = (1, 2, 4)
) -> dict[str, Any]:
    """For each k, the mean error at the penalty whose mean number of non-zero predictors per target
    is closest to k (the paper's "prediction from about k units")."""
    mean_nz = result.nonzero.mean(axis=1)
    errors = result.mean_error()
    out = {}
    for kk in k:
        i = int(np.argmin(np.abs(mean_nz - kk)))
        entry = {
            "penalty": float(result.penalties[i]),
            "mean_nonzero": float(mean_nz[i]),
            "error": float(errors[i]),
        }
        if result.held_out_error is not None:
            entry["held_out_error"] = float(result.mean_error(held_out=True)[i])
        out[str(kk)] = entry
    return out


def _standardised(moments: Any, source: np.ndarray, target: np.ndarray):
    mean = np.asarray(moments.mean)
    cov = np.asarray(moments.cov(ddof=0))
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    dead = set(int(i) for i in moments.dead_units())
    live = np.array([i not in dead for i in range(len(std))])
    inv = np.where(live, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    corr = cov * inv[:, None] * inv[None, :]
    return mean, cov, std, inv, live, corr


def _held_out_error(
    held: Any,
    mean: np.ndarray,
    inv: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    coef: np.ndarray,
    live_t: np.ndarray,
) -> np.ndarray:
    """1 - R^2 on held-out moments of predictions standardised with the fit set's mean and std.

    Residual ``e = z_t - sum_j w_j z_j`` with ``z = (x - mean_fit) * inv_fit`` is ``a^T x + b``;
    ``E_h[e^2] = a^T Cov_h a + (a^T mean_h + b)^2``, divided by ``Var_h(z_t)``.
    """
    h_mean = np.asarray(held.mean)
    h_cov = np.asarray(held.cov(ddof=0))
    ns, nt = len(source), len(target)
    # a over [source, target] variables for every target at once: (ns + nt, T)
    a_src = -coef * inv[source][:, None]
    a_tgt = np.diag(inv[target])
    idx = np.concatenate([source, target])
    a = np.vstack([a_src, a_tgt])
    b = -(a * mean[idx][:, None]).sum(axis=0)
    sub_cov = h_cov[np.ix_(idx, idx)]
    var_e = np.einsum("it,ij,jt->t", a, sub_cov, a)
    bias = a.T @ h_mean[idx] + b
    var_t = np.diag(h_cov)[target] * inv[target] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(
            live_t & (var_t > 0), (var_e + bias**2) / np.where(var_t > 0, var_t, 1.0), 0.0
        )
    del ns, nt
    return err


def sparse_prediction(
    moments: Any,
    source: Sequence[int] | np.ndarray,
    target: Sequence[int] | np.ndarray,
    penalties: Sequence[float] | np.ndarray | None = None,
    *,
    held_out: Any = None,
    n_penalties: int = 20,
    tol: float = DEFAULT_TOL,
    max_iter: int = 20000,
) -> SparsePredictionResult:
    """L1-penalised linear prediction of every ``target`` unit from the ``source`` units.

    Parameters
    ----------
    moments : Moments-like
        Joint moments over (at least) the source and target variables: needs ``mean``,
        ``cov(ddof)`` and ``dead_units()``.
    source, target : index arrays into the moments' variables (e.g. net A's and net B's ranges).
    penalties : sequence of float, optional
        Lasso penalties (scikit-learn convention on z-scored units); solved from the largest down,
        each warm-started from the previous. Default: ``n_penalties`` log-spaced values from
        ``alpha_max = max |corr(source, target)|`` (every coefficient 0) down to ``alpha_max / 100``.
    held_out : Moments-like, optional
        Moments of the same variables on other data; errors are also evaluated there.

    Returns
    -------
    SparsePredictionResult
    """
    source = np.asarray(source, dtype=np.int64).ravel()
    target = np.asarray(target, dtype=np.int64).ravel()
    if len(source) == 0 or len(target) == 0:
        raise ValueError("The 'source' and 'target' parameters must each name at least one unit.")
    if moments.count < 2:
        raise ConvergentError("Sparse prediction needs moments of at least 2 samples.")
    mean, cov, std, inv, live, corr = _standardised(moments, source, target)
    gram = corr[np.ix_(source, source)]
    cross = corr[np.ix_(source, target)]
    live_t = live[target]
    dead_targets = np.flatnonzero(~live_t)
    if penalties is None:
        alpha_max = float(np.abs(cross).max()) if np.abs(cross).max() > 0 else 1.0
        penalties = np.geomspace(alpha_max, alpha_max / 100, n_penalties)
    penalties = np.asarray(penalties, dtype=np.float64)
    if (
        penalties.ndim != 1
        or len(penalties) == 0
        or np.any(penalties <= 0)
        or not np.isfinite(penalties).all()
    ):
        raise ValueError(
            f"The 'penalties' parameter must be positive finite numbers. Got {penalties!r}."
        )
    lipschitz = 1.0
    order = np.argsort(-penalties, kind="stable")
    penalties = penalties[order]
    coefs, errors, nonzero, iters = [], [], [], []
    # dead sources get coefficient 0 and dead targets error 0: solve on the live block only
    live_s = np.flatnonzero(live[source])
    live_tt = np.flatnonzero(live_t)
    sub_gram = gram[np.ix_(live_s, live_s)]
    sub_cross = cross[np.ix_(live_s, live_tt)]
    if live_s.size:
        lipschitz = float(np.linalg.eigvalsh(sub_gram)[-1])
    w_sub = None
    for alpha in penalties:
        it = 0
        if live_s.size and live_tt.size:
            w_sub, it, _ = lasso_gram(
                sub_gram,
                sub_cross,
                float(alpha),
                coef=w_sub,
                tol=tol,
                max_iter=max_iter,
                lipschitz=lipschitz,
            )
        w = np.zeros_like(cross)
        if w_sub is not None:
            w[np.ix_(live_s, live_tt)] = w_sub
        err = 1.0 - 2.0 * np.einsum("pt,pt->t", cross, w) + np.einsum("pt,pt->t", w, gram @ w)
        coefs.append(w.copy())
        errors.append(np.where(live_t, np.maximum(err, 0.0), 0.0))
        nonzero.append((w != 0).sum(axis=0))
        iters.append(it)
    coef = np.stack(coefs)
    # reference points: the best single source unit, and unpenalised least squares on all sources
    one = np.where(live_t, 1.0 - (cross**2).max(axis=0), 0.0)
    full_w = np.linalg.lstsq(gram, cross, rcond=None)[0]
    full = np.where(live_t, np.maximum(1.0 - np.einsum("pt,pt->t", cross, full_w), 0.0), 0.0)
    held_err = held_one = held_full = None
    if held_out is not None:
        if held_out.dim != moments.dim:
            raise ValueError(
                f"The held-out moments have {held_out.dim} variables, the fit moments {moments.dim}."
            )
        held_err = np.stack(
            [_held_out_error(held_out, mean, inv, source, target, c, live_t) for c in coef]
        )
        best = np.abs(cross).argmax(axis=0)
        one_w = np.zeros_like(cross)
        one_w[best, np.arange(len(target))] = cross[best, np.arange(len(target))]
        held_one = _held_out_error(held_out, mean, inv, source, target, one_w, live_t)
        held_full = _held_out_error(held_out, mean, inv, source, target, full_w, live_t)
    return SparsePredictionResult(
        penalties=penalties,
        coef=coef,
        error=np.stack(errors),
        nonzero=np.stack(nonzero),
        held_out_error=held_err,
        one_to_one_error=one,
        full_error=full,
        held_out_one_to_one_error=held_one,
        held_out_full_error=held_full,
        dead_targets=dead_targets,
        iterations=np.asarray(iters),
    )
