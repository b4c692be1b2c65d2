"""Direct implementations on raw arrays, straight from the papers' formulas (two-pass, float64).

They share no code with ``convergent.similarity``: Gram matrices instead of co-moments, QR / SVD of
the data instead of eigen-decompositions of covariances, explicit zero padding, loops.
"""

from __future__ import annotations

import itertools

import numpy as np


def centred(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0)


def hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h)


def cka_gram(x, y):
    """Kornblith et al. 2019, eq. for linear CKA via centred Gram matrices."""
    k, l = x @ x.T, y @ y.T
    return hsic_biased(k, l) / np.sqrt(hsic_biased(k, k) * hsic_biased(l, l))


def hsic_unbiased(k, l):
    """Song et al. 2012, the unbiased HSIC estimator, O(n^2) with explicit matrices."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def debiased_cka_gram(x, y):
    """Debiased CKA on the *raw* (uncentred) data: the unbiased HSIC needs no centring."""
    k, l = x @ x.T, y @ y.T
    return hsic_unbiased(k, l) / np.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))


def cca_qr(x, y):
    """Canonical correlations and variates: QR of the centred data, SVD of Q_x^T Q_y."""
    qx, _ = np.linalg.qr(centred(x))
    qy, _ = np.linalg.qr(centred(y))
    u, s, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return s, qx @ u, qy @ vt.T


def svcca_svd(x, y, variance=0.99):
    """Raghu et al. 2017: SVD of each centred net, keep the top directions, then CCA."""

    def reduce(a):
        u, s, _ = np.linalg.svd(centred(a), full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(share >= variance - 1e-12)) + 1
        return u[:, :k] * s[:k]

    return cca_qr(reduce(x), reduce(y))[0]


def pwcca_ref(x, y):
    """Morcos et al. 2018: canonical correlations weighted by sum_j |<h_i, x_j>| (net x's)."""
    rho, hx, _ = cca_qr(x, y)
    xc = centred(x)
    alpha = np.array([np.abs(hx[:, i] @ xc).sum() for i in range(rho.size)])
    return float(alpha @ rho / alpha.sum())


def cca_ridge(x, y, eps):
    """Regularised CCA: (S_xx + eps*mean var*I)^-1/2 S_xy (S_yy + ...)^-1/2, via scipy's sqrtm."""
    from scipy.linalg import inv, sqrtm

    xc, yc = centred(x), centred(y)
    n = xc.shape[0]
    sxx, syy, sxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
    sxx = sxx + eps * np.trace(sxx) / sxx.shape[0] * np.eye(sxx.shape[0])
    syy = syy + eps * np.trace(syy) / syy.shape[0] * np.eye(syy.shape[0])
    m = np.real(inv(sqrtm(sxx))) @ sxy @ np.real(inv(sqrtm(syy)))
    return np.linalg.svd(m, compute_uv=False)


def _pad(x, width):
    return np.concatenate([x, np.zeros((x.shape[0], width - x.shape[1]))], axis=1)


def _whiten_netrep(x, alpha, tol=1e-7):
    """netrep's partial whitening (with its variance-preserving rescaling)."""
    if alpha > 1 - tol:
        return x
    lam, v = np.linalg.eigh(x.T @ x)
    lam = np.maximum(lam, tol)
    d = alpha + (1 - alpha) * lam ** (-0.5)
    new_var = np.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * lam**0.5 + (1 - alpha) ** 2)
    d = d * np.sqrt(lam.sum() / new_var)
    return x @ ((v * d) @ v.T)


def shape_ref(x, y, alpha=1.0, group="rotation"):
    """Williams et al. 2021 as netrep computes it: centre, zero-pad, whiten, align; returns
    (angular, procrustes of the unit-norm aligned representations)."""
    width = max(x.shape[1], y.shape[1])
    xw = _whiten_netrep(_pad(centred(x), width), alpha)
    yw = _whiten_netrep(_pad(centred(y), width), alpha)
    if group == "rotation":
        u, _, vt = np.linalg.svd(xw.T @ yw)
        xa, ya = xw @ u, yw @ vt.T
    else:  # brute force over every permutation (small widths only)
        best = max(itertools.permutations(range(width)), key=lambda p: np.sum(xw * yw[:, list(p)]))
        xa, ya = xw, yw[:, list(best)]
    cos = np.sum(xa * ya) / (np.linalg.norm(xa) * np.linalg.norm(ya))
    proc = np.linalg.norm(xa / np.linalg.norm(xa) - ya / np.linalg.norm(ya))
    return float(np.arccos(np.clip(cos, -1, 1))), float(proc)


def rsa_ref(x, y):
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    return float(spearmanr(pdist(x, "correlation"), pdist(y, "correlation"))[0])


def mutual_knn_ref(x, y, k):
    def neighbours(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        out = []
        for i in range(a.shape[0]):
            sims = [(-(a[i] @ a[j]), j) for j in range(a.shape[0]) if j != i]
            out.append({j for _, j in sorted(sims)[:k]})
        return out

    na, nb = neighbours(x), neighbours(y)
    return float(np.mean([len(p & q) / k for p, q in zip(na, nb)]))


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def pair(n=200, d_a=6, d_b=5, seed=0, shared=4, noise=0.5, shift=1.0):
    """Two related representations (a shared latent, different mixings, noise) with nonzero means."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, shared))
    x = z @ rng.normal(size=(shared, d_a)) + noise * rng.normal(size=(n, d_a)) + shift
    y = np.tanh(z @ rng.normal(size=(shared, d_b))) + noise * rng.normal(size=(n, d_b)) - shift
    return x, y
