"""Canonical correlation analysis from the joint moments: CCA, SVCCA and PWCCA.

- **CCA**: the canonical correlations are the singular values of
  ``C_AA^{-1/2} C_AB C_BB^{-1/2}`` (co-moment blocks). The inverse square roots are taken on each
  net's non-dead units, over the eigen-directions the moments resolve: eigenvalue above ``rtol``
  times the largest *and* above the rounding error of the moments' batch products (see below), so
  rank-deficient blocks, e.g. fewer samples than units, are handled as the data's own subspace:
  there the correlations are those of the sample space and tend to 1; add ``eps``.
  ``eps`` is a ridge: ``C + eps * (mean variance) * I`` (regularised CCA; 0 by default). Widths may
  differ: there are ``min(k_A, k_B)`` correlations, ``k`` being the directions kept per net; the
  mean CCA correlation is their mean (Raghu et al. 2017).
- **SVCCA** (Raghu et al. 2017): each net is first reduced to its top principal directions that
  explain ``variance`` (default 0.99) of its total variance; then CCA.
- **PWCCA** (Morcos et al. 2018): the canonical correlations weighted by how much of the net's
  units each canonical variate accounts for, ``alpha_i = sum_j |<h_i, x_j>|`` with ``h_i`` the unit-
  norm canonical variate and ``x_j`` the centred activations of unit j, i.e. from moments
  ``alpha_i = ||C_AA a_i||_1 / sqrt(a_i^T C_AA a_i)``. Asymmetric: the weights come from one net
  (``weights_from``, A by default).

A net with no live unit gives no correlations: the value is 0, ``defined`` False, never NaN.

Which directions the moments resolve
------------------------------------
``Moments`` computes each batch's centred product ``X^T X`` in the batch's precision (float32 for
float32 activations unless ``exact=True``) and accumulates in float64. A float32 dot product of
length ``m`` is within ``gamma sum_i |x_ij x_ik|`` of the exact one, ``gamma ~ sqrt(m) u`` for
rounding errors that behave as independent (Higham & Mary 2019, probabilistic bound; ``u`` the
unit roundoff, 2^-24 in float32). By Cauchy-Schwarz ``sum_i |x_ij x_ik| <= s_j s_k`` with
``s_j^2 = C_jj`` (also summed over batches), so the error of the co-moment block is ``E = S F S``,
``S = diag(s)``, with ``|F_jk| <= gamma``. Along a unit direction ``v`` the error of the quadratic
form is ``v^T E v = w^T F w`` with ``w = S v``, ``|w|^2 = v^T D v`` (``D = diag(C)``). ``F`` is a
symmetric matrix of ``d`` x ``d`` rounding errors of random sign, whose spectral norm (also on any
subspace) is at most about ``2 sqrt(d) gamma`` (the edge of the semicircle law). So an
eigen-direction ``v`` with eigenvalue ::

    lambda <= tau * v^T D v,    tau = 2 sqrt(d) sqrt(n) u[product_precision]

may be rounding alone and is left out. The batch length is not recorded in the moments; ``n``
(the sample count, the longest any batch can be) stands in for ``m``, which errs on the side of
cutting. The test is scale-free: a direction along a unit of small variance is compared with that
unit's own variance, so near-dead units keep their directions. Measured (random activations with
100-20000 samples, and the digits convnet's layers): directions that are pure rounding (rank-
deficient blocks, e.g. 100 samples of 256 units: 157 of them) sit below ``2 sqrt(d) u v^T D v``,
true directions above ``1600 u v^T D v``. Float64 products (``u = 2^-53``) resolve everything
``rtol`` keeps in practice, so their results are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergent.analysis._joint import PairBlocks, pair_blocks
from convergent.stats._scores import _jsonable

CCA_METHODS = ("cca", "svcca", "pwcca")


@dataclass(frozen=True)
class CCAResult:
    """Canonical correlations of two nets.

    Attributes
    ----------
    method : {'cca', 'svcca', 'pwcca'}
    value : float
        Mean canonical correlation (``cca``, ``svcca``) or the projection-weighted mean (``pwcca``).
    correlations : ndarray, shape (k,)
        The canonical correlation spectrum, highest first (signed on held-out data).
    nets : (str, str)
    samples : int
    dims : (int, int)
        Directions kept per net (its live, non-degenerate directions; the SVCCA subspace).
    weights_a, weights_b : ndarray, shapes (d_A, k), (d_B, k)
        Canonical weights on the units (columns: canonical directions; dead units 0).
    projection_weights : ndarray of shape (k,) or None
        PWCCA's normalised ``alpha`` (summing to 1).
    defined : bool
    note : str
    settings : dict
    """

    method: str
    value: float
    correlations: np.ndarray
    nets: tuple[str, str]
    samples: int
    dims: tuple[int, int]
    weights_a: np.ndarray
    weights_b: np.ndarray
    projection_weights: np.ndarray | None = None
    defined: bool = True
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "metric": self.method,
            "value": self.value,
            "spectrum": self.correlations,
            "nets": list(self.nets),
            "samples": self.samples,
            "dims": list(self.dims),
            "defined": self.defined,
            "note": self.note,
            **self.settings,
        }
        if self.projection_weights is not None:
            out["projection_weights"] = self.projection_weights
        return _jsonable(out)


def _check_reg(eps: float, rtol: float) -> None:
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"The 'eps' parameter must be a finite number >= 0. Got {eps!r} instead.")
    if not (0 < rtol < 1):
        raise ValueError(f"The 'rtol' parameter must be in (0, 1). Got {rtol!r} instead.")


#: Unit roundoff of each product precision (half the distance from 1 to the next number).
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


def rounding_tolerance(precision: str, count: int, dim: int) -> float:
    """``tau = 2 sqrt(dim) sqrt(count) u[precision]``: an eigen-direction ``v`` of a co-moment
    block over ``dim`` units whose eigenvalue is at most ``tau v^T diag(C) v`` is not resolved by
    batch products in ``precision`` (derivation in the module notes).

    Raises
    ------
    ValueError
        For a precision other than "float32" or "float64".
    """
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(
            f"The 'product_precision' of the moments must be one of {sorted(UNIT_ROUNDOFF)}. Got "
            f"{precision!r} instead; Moments set it while updating (rebuild the statistics)."
        )
    return float(2.0 * np.sqrt(max(dim, 1) * max(count, 1)) * UNIT_ROUNDOFF[precision])


def _whitener(
    c: np.ndarray, alive: np.ndarray, eps: float, rtol: float, tau: float = 0.0
) -> np.ndarray:
    """(d, k) W with W^T (C + ridge) W = I on the kept eigen-directions of the live units: those
    with eigenvalue (after the ridge) above ``rtol`` times the largest and (before it) above
    ``tau`` times the direction's share of the units' variances ``v^T diag(C) v``."""
    idx = np.flatnonzero(alive)
    if idx.size == 0:
        return np.zeros((c.shape[0], 0))
    sub = c[np.ix_(idx, idx)]
    raw, vec = np.linalg.eigh(sub)
    lam = raw + eps * max(float(np.trace(sub)) / idx.size, 0.0)
    top = float(lam.max())
    if top <= 0:
        return np.zeros((c.shape[0], 0))
    spread = np.einsum("jk,j,jk->k", vec, np.diag(sub), vec)  # v^T diag(C) v per direction
    keep = (lam > rtol * top) & (raw > tau * spread)
    out = np.zeros((c.shape[0], int(keep.sum())))
    out[idx] = vec[:, keep] / np.sqrt(lam[keep])
    return out


def _cca_core(
    c_aa: np.ndarray,
    c_bb: np.ndarray,
    c_ab: np.ndarray,
    alive_a: np.ndarray,
    alive_b: np.ndarray,
    eps: float,
    rtol: float,
    taus: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    w_a = _whitener(c_aa, alive_a, eps, rtol, taus[0])
    w_b = _whitener(c_bb, alive_b, eps, rtol, taus[1])
    dims = (w_a.shape[1], w_b.shape[1])
    if min(dims) == 0:
        k = 0
        return np.zeros(0), np.zeros((c_aa.shape[0], k)), np.zeros((c_bb.shape[0], k)), dims
    u, s, vt = np.linalg.svd(w_a.T @ c_ab @ w_b, full_matrices=False)
    return np.clip(s, 0.0, 1.0), w_a @ u, w_b @ vt.T, dims


def _top_directions(c: np.ndarray, variance: float) -> np.ndarray:
    """(d, k): the fewest principal directions explaining ``variance`` of the total."""
    lam, vec = np.linalg.eigh(c)
    lam, vec = np.clip(lam[::-1], 0.0, None), vec[:, ::-1]
    total = float(lam.sum())
    if total <= 0:
        return np.zeros((c.shape[0], 0))
    k = int(np.searchsorted(np.cumsum(lam) / total, variance - 1e-12)) + 1
    return vec[:, : min(k, lam.size)]


def _projection_weights(c: np.ndarray, weights: np.ndarray) -> np.ndarray:
    proj = c @ weights  # (d, k): <h_i, x_j> * ||X a_i|| for every unit j, variate i
    norms = np.sqrt(np.clip(np.einsum("dk,dk->k", weights, proj), 0.0, None))
    alpha = np.zeros(weights.shape[1])
    ok = norms > 0
    alpha[ok] = np.abs(proj[:, ok]).sum(axis=0) / norms[ok]
    return alpha


def cca_from_blocks(
    blocks: PairBlocks,
    *,
    method: str = "cca",
    eps: float = 0.0,
    rtol: float = 1e-10,
    variance: float = 0.99,
    weights_from: str = "a",
) -> CCAResult:
    """CCA, SVCCA or PWCCA from a pair's blocks (see the module docstring)."""
    if method not in CCA_METHODS:
        raise ValueError(f"The 'method' parameter must be one of {CCA_METHODS}. Got {method!r}.")
    _check_reg(eps, rtol)
    n = blocks.count
    c_aa, c_bb, c_ab = blocks.c_aa / n, blocks.c_bb / n, blocks.c_ab / n
    # what the rounding of the moments' batch products leaves unresolved, per net (live units)
    taus = tuple(
        rounding_tolerance(blocks.product_precision, n, int(alive.sum()))
        for alive in (blocks.alive_a, blocks.alive_b)
    )
    settings: dict[str, Any] = {"eps": eps, "product_precision": blocks.product_precision}
    if method == "svcca":
        if not 0 < variance <= 1:
            raise ValueError(f"The 'variance' parameter must be in (0, 1]. Got {variance!r}.")
        p_a, p_b = _top_directions(c_aa, variance), _top_directions(c_bb, variance)
        rho, a, b, dims = _cca_core(
            p_a.T @ c_aa @ p_a,
            p_b.T @ c_bb @ p_b,
            p_a.T @ c_ab @ p_b,
            np.ones(p_a.shape[1], dtype=bool),
            np.ones(p_b.shape[1], dtype=bool),
            eps,
            rtol,
            taus,
        )
        a, b = p_a @ a, p_b @ b
        settings["variance"] = variance
    else:
        rho, a, b, dims = _cca_core(
            c_aa, c_bb, c_ab, blocks.alive_a, blocks.alive_b, eps, rtol, taus
        )
    if method == "pwcca":
        base = _result("cca", rho, a, b, dims, blocks, None, settings)
        return pwcca_from_cca(base, blocks, weights_from=weights_from)
    return _result(method, rho, a, b, dims, blocks, None, settings)


def pwcca_from_cca(fitted: CCAResult, blocks: PairBlocks, *, weights_from: str = "a") -> CCAResult:
    """PWCCA from an already fitted CCA of the same pair (no second decomposition)."""
    if weights_from not in ("a", "b"):
        raise ValueError(
            f"The 'weights_from' parameter must be 'a' or 'b'. Got {weights_from!r} instead."
        )
    n = blocks.count
    a, b = fitted.weights_a, fitted.weights_b
    alpha = (
        _projection_weights(blocks.c_aa / n, a)
        if weights_from == "a"
        else _projection_weights(blocks.c_bb / n, b)
    )
    settings = dict(fitted.settings, weights_from=blocks.names[0 if weights_from == "a" else 1])
    return _result("pwcca", fitted.correlations, a, b, fitted.dims, blocks, alpha, settings)


def _result(
    method: str,
    rho: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    dims: tuple[int, int],
    blocks: PairBlocks,
    alpha: np.ndarray | None,
    settings: dict[str, Any],
) -> CCAResult:
    if rho.size == 0:
        note = "undefined: a net has no live unit (all dead or constant); reported as 0"
        return CCAResult(
            method, 0.0, rho, blocks.names, blocks.count, dims, a, b, alpha, False, note, settings
        )
    if alpha is not None:
        total = float(alpha.sum())
        if total <= 0:
            note = "undefined: zero projection weights; reported as 0"
            return CCAResult(
                method,
                0.0,
                rho,
                blocks.names,
                blocks.count,
                dims,
                a,
                b,
                alpha,
                False,
                note,
                settings,
            )
        alpha = alpha / total
        value = float(alpha @ rho)
    else:
        value = float(rho.mean())
    return CCAResult(
        method, value, rho, blocks.names, blocks.count, dims, a, b, alpha, True, "", settings
    )


def cca(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
    eps: float = 0.0,
    rtol: float = 1e-10,
) -> CCAResult:
    """Canonical correlation spectrum and mean CCA correlation of two nets.

    Parameters
    ----------
    x, y, nets, unit_ranges
        Joint moments (and which two nets), or two (n, d) arrays; as in :func:`linear_cka`.
    eps : float
        Ridge added to each net's covariance, relative to its mean variance (0: none).
    rtol : float
        Eigen-directions with eigenvalue at most ``rtol`` times the largest are left out (the
        pseudo-inverse; handles dead units, collinear units and fewer samples than units), and so
        are those the rounding of the moments' batch products leaves unresolved (module notes).
    """
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    return cca_from_blocks(blocks, method="cca", eps=eps, rtol=rtol)


def svcca(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
    variance: float = 0.99,
    eps: float = 0.0,
    rtol: float = 1e-10,
) -> CCAResult:
    """SVCCA: keep each net's top principal directions explaining ``variance``, then CCA."""
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    return cca_from_blocks(blocks, method="svcca", eps=eps, rtol=rtol, variance=variance)


def pwcca(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
    weights_from: str = "a",
    eps: float = 0.0,
    rtol: float = 1e-10,
) -> CCAResult:
    """Projection-weighted CCA (Morcos et al. 2018); weights from net A (``weights_from='a'``)
    or B. With ``eps == 0`` the canonical variates are orthogonal, so the unit-norm variates equal
    the QR-orthonormalised ones of the reference implementation."""
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    return cca_from_blocks(blocks, method="pwcca", eps=eps, rtol=rtol, weights_from=weights_from)


def cca_held_out(
    fitted: CCAResult,
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> CCAResult:
    """Score canonical directions fitted on one data set on another (e.g. a held-out split).

    The correlation of each fitted pair of directions on the new data,
    ``a_i^T C'_AB b_i / sqrt(a_i^T C'_AA a_i  b_i^T C'_BB b_i)`` (signed; 0 where a direction has
    no variance there). The value is their mean (PWCCA: weighted by the fitted weights).

    Raises
    ------
    ValueError
        If the new data's widths differ from the fitted ones.
    """
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    a, b = fitted.weights_a, fitted.weights_b
    if blocks.widths != (a.shape[0], b.shape[0]):
        raise ValueError(
            f"The held-out data have widths {blocks.widths}; the CCA was fitted on widths "
            f"{(a.shape[0], b.shape[0])}. Score on the same nets' units."
        )
    n = blocks.count
    cross = np.sum(a * (blocks.c_ab @ b), axis=0) / n  # a_i^T C_AB b_i for every i
    var_a = np.sum(a * (blocks.c_aa @ a), axis=0) / n
    var_b = np.sum(b * (blocks.c_bb @ b), axis=0) / n
    denom = np.sqrt(np.clip(var_a, 0.0, None) * np.clip(var_b, 0.0, None))
    rho = np.zeros(cross.size)
    ok = denom > 0
    rho[ok] = np.clip(cross[ok] / denom[ok], -1.0, 1.0)
    settings = dict(fitted.settings, held_out=True)
    alpha = fitted.projection_weights
    if rho.size == 0:
        return _result(fitted.method, rho, a, b, fitted.dims, blocks, None, settings)
    value = float(alpha @ rho) if alpha is not None else float(rho.mean())
    return CCAResult(
        fitted.method, value, rho, blocks.names, n, fitted.dims, a, b, alpha, True, "", settings
    )
