"""``KernelMoments``: joint moments plus the fourth-order sums that make debiased CKA exact in one pass.

The unbiased HSIC estimator of Song et al. (2012) for linear kernels ``K = X X^T`` (net A's samples
as rows) and ``L = Y Y^T`` (net B's) is, with ``K~``, ``L~`` the kernels with their diagonals set to 0::

    HSIC_1 = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n(n-3))

It is a U-statistic whose kernel only involves differences of samples, so it does not change when a
constant is added to X or Y: compute it on the centred ``x_i - mean_A``. With ``a_i = |x_i - mean_A|^2``
and ``b_i = |y_i - mean_B|^2`` (the kernels' diagonals) and the centred sums ``sum x = sum y = 0``::

    tr(K~ L~)    = ||C_AB||_F^2 - sum_i a_i b_i       (C_AB: the centred co-moment block)
    1^T K~ 1     = -sum_i a_i = -tr(C_AA)              (1^T K 1 = |sum x|^2 = 0)
    1^T K~ L~ 1  = sum_i (x_i.sum x - a_i)(y_i.sum y - b_i) = sum_i a_i b_i

So beyond the co-moment matrix one scalar per pair of blocks is needed, ``S_AB = sum_i a_i b_i``.
To keep ``S`` centred on the running mean while batches and shards are merged, each block ``k`` also
keeps ``W_k = sum_i a_ki (z_i - mean)`` (a (D,) vector over all joint units ``z``). Moving the centre
by ``c`` (``w -> w - c`` with ``sum w = 0``), with ``T_k = tr(C_kk)``, ``G_k = C[:, k] c_k``::

    W_k' = W_k - T_k c - 2 G_k - n |c_k|^2 c
    S_kl' = S_kl - 2 c_l.W_k[l] - 2 c_k.W_l[k] + |c_l|^2 T_k + |c_k|^2 T_l + 4 c_l.G_k[l]
            + n |c_k|^2 |c_l|^2

Two shards (or the running state and a batch, itself summed about its own mean) are moved to the
merged mean and added. Everything is float64 and exact up to rounding; the extra state is O(K D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from convergent._errors import CorruptFileError
from convergent.stats._moments import Moments
from convergent.stats._state import StateField

#: Rows of a batch turned to float64 at a time (bounds the extra memory of an update).
CHUNK_ROWS = 2048


def _check_ranges(unit_ranges: Any, dim: int, owner: str) -> dict[str, tuple[int, int]]:
    if not isinstance(unit_ranges, Mapping) or not unit_ranges:
        raise ValueError(
            f"The 'unit_ranges' parameter of {owner} must be a non-empty mapping of name to "
            f"(start, stop). Got {unit_ranges!r} instead."
        )
    out = {}
    for name, rng in unit_ranges.items():
        try:
            start, stop = (int(v) for v in rng)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"The unit range of {name!r} must be a pair (start, stop). Got {rng!r} instead."
            ) from exc
        if not 0 <= start < stop <= dim:
            raise ValueError(
                f"The unit range of {name!r} must satisfy 0 <= start < stop <= {dim}. Got "
                f"({start}, {stop}) instead."
            )
        out[str(name)] = (start, stop)
    return out


class KernelMoments(Moments):
    """A :class:`~convergent.stats.Moments` that also keeps the sums the unbiased HSIC needs.

    It *is* a ``Moments`` (every analysis of moments takes it; ``Moments.load`` reads its file
    back as a ``KernelMoments``) with, per block of units (a net, or a net's layer), the centred
    fourth-order sums ``S_kl = sum_i |x_ik - mean_k|^2 |x_il - mean_l|^2`` and the third-order
    ``W_k`` that keep them exactly mergeable (see the module docstring for the algebra).

    Parameters
    ----------
    dim : int
        Number of joint units D.
    unit_ranges : mapping of str to (int, int)
        The blocks: name -> (start, stop) of its units among the D. Stored in ``metadata``.
    exact : bool
        As for ``Moments`` (the co-moment's batch products in float64). The extra sums are always
        computed in float64.
    """

    kind = "convergent.KernelMoments"
    state_fields = Moments.state_fields + (
        StateField(
            "kernel.norm_cross",
            "float64",
            "custom",
            "(K, D) W_k = sum_i |x_ik - mean_k|^2 (z_i - mean)",
            what="kernel sums",
            noun="kernel sums",
        ),
        StateField(
            "kernel.norm_products",
            "float64",
            "custom",
            "(K, K) S_kl = sum_i |x_ik - mean_k|^2 |x_il - mean_l|^2",
            what="kernel sums",
            noun="kernel sums",
        ),
    )

    def __init__(
        self, dim: int, unit_ranges: Mapping[str, tuple[int, int]], *, exact: bool = False
    ) -> None:
        super().__init__(dim, exact=exact)
        self.unit_ranges = _check_ranges(unit_ranges, self.dim, "KernelMoments")
        self.metadata["unit_ranges"] = {k: list(v) for k, v in self.unit_ranges.items()}
        k = len(self.unit_ranges)
        self._kernel_norm_cross = np.zeros((k, self.dim))
        self._kernel_norm_products = np.zeros((k, k))

    # ------------------------------------------------------------------------------------------
    # declared state

    def config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "unit_ranges": {k: list(v) for k, v in self.unit_ranges.items()},
            "exact": self.exact,
        }

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        k = len(self.unit_ranges)
        return {
            **super()._shapes(),
            "kernel.norm_cross": (k, self.dim),
            "kernel.norm_products": (k, k),
        }

    def state(self) -> dict[str, np.ndarray]:
        return {
            **super().state(),
            "kernel.norm_cross": self._kernel_norm_cross,
            "kernel.norm_products": self._kernel_norm_products,
        }

    def _set_state(self, arrays: Any) -> None:
        super()._set_state(arrays)
        self._kernel_norm_cross = np.array(arrays["kernel.norm_cross"], dtype=np.float64)
        self._kernel_norm_products = np.array(arrays["kernel.norm_products"], dtype=np.float64)

    # ------------------------------------------------------------------------------------------
    # read-outs

    @property
    def blocks(self) -> list[str]:
        """Block names in order (the rows of :attr:`norm_products`)."""
        return list(self.unit_ranges)

    @property
    def norm_products(self) -> np.ndarray:
        """(K, K) ``S_kl = sum_i |x_ik - mean_k|^2 |x_il - mean_l|^2`` (read-only copy)."""
        self._require(1)
        out = self._kernel_norm_products.copy()
        out.setflags(write=False)
        return out

    @property
    def norm_cross(self) -> np.ndarray:
        """(K, D) ``W_k = sum_i |x_ik - mean_k|^2 (z_i - mean)`` (read-only copy)."""
        self._require(1)
        out = self._kernel_norm_cross.copy()
        out.setflags(write=False)
        return out

    # ------------------------------------------------------------------------------------------
    # update / merge

    def update(self, x: np.ndarray | torch.Tensor) -> KernelMoments:
        """Add a batch (n, D): the moments as in ``Moments.update``, then the extra sums (float64)."""
        n_old = self._count
        mean_old = self._mean.copy() if n_old else None
        comoment_old = self._comoment.copy() if n_old else None
        super().update(x)  # validates; on error nothing has changed
        if self._count == n_old:
            return self
        ranges = list(self.unit_ranges.values())
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            # CPU data: one BLAS thread pool (NumPy's), as Moments does
            x = (x.float() if x.dtype == torch.bfloat16 else x).detach().numpy()
        batch = _batch_sums(x, ranges, self._mean)
        if n_old:
            old = _recentre(
                n_old,
                self._kernel_norm_cross,
                self._kernel_norm_products,
                comoment_old,
                self._mean - mean_old,
                ranges,
            )
            self._kernel_norm_cross = old[0] + batch[0]
            self._kernel_norm_products = old[1] + batch[1]
        else:
            self._kernel_norm_cross, self._kernel_norm_products = batch
        return self

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, KernelMoments):
            raise TypeError(
                "KernelMoments.merge expects a KernelMoments (plain Moments lack the kernel sums). "
                f"Got {type(other).__name__} instead."
            )
        if other.unit_ranges != self.unit_ranges or other.dim != self.dim:
            raise ValueError(
                f"Cannot merge KernelMoments over blocks {other.unit_ranges} (dim {other.dim}) into "
                f"KernelMoments over blocks {self.unit_ranges} (dim {self.dim})."
            )

    def _merge_custom(self, other: KernelMoments) -> None:
        """Both shards' sums moved to the merged mean and added; then the moments (Chan)."""
        if other._count == 0:
            return
        if self._count == 0:
            super()._merge_custom(other)
            self._kernel_norm_cross = other._kernel_norm_cross.copy()
            self._kernel_norm_products = other._kernel_norm_products.copy()
            return
        ranges = list(self.unit_ranges.values())
        n_a, n_b = self._count, other._count
        target = self._mean + (other._mean - self._mean) * (n_b / (n_a + n_b))
        mine = _recentre(
            n_a,
            self._kernel_norm_cross,
            self._kernel_norm_products,
            self._comoment,
            target - self._mean,
            ranges,
        )
        theirs = _recentre(
            n_b,
            other._kernel_norm_cross,
            other._kernel_norm_products,
            other._comoment,
            target - other._mean,
            ranges,
        )
        super()._merge_custom(other)
        self._kernel_norm_cross = mine[0] + theirs[0]
        self._kernel_norm_products = mine[1] + theirs[1]

    def merge(self, other: Moments) -> KernelMoments:
        """Fold another ``KernelMoments`` over the same blocks into this one (exact); returns ``self``."""
        return super().merge(other)

    def __repr__(self) -> str:
        return f"KernelMoments(dim={self.dim}, count={self._count}, blocks={self.blocks})"

    # ------------------------------------------------------------------------------------------
    # files

    @classmethod
    def _wrong_kind(cls, path: Any, kind: Any) -> None:
        if kind == Moments.kind:
            raise CorruptFileError(
                f"{path} holds plain Moments without kernel sums; collect with kernel_sums=True "
                "(or load it with Moments.load)."
            )
        super()._wrong_kind(path, kind)

    @classmethod
    def _config_from_file(cls, path: Any, arrays: dict, meta: dict) -> dict[str, Any]:
        if "config" in meta:
            return super()._config_from_file(path, arrays, meta)
        # format 1: the block layout under "kernel_sums"
        base = Moments._config_from_file(path, arrays, meta)
        extra = meta.get("kernel_sums") or {}
        if "unit_ranges" not in extra:
            raise CorruptFileError(f"{path} lacks the kernel sums' block layout.")
        return {**base, "unit_ranges": extra["unit_ranges"]}


def _recentre(
    count: int,
    cross: np.ndarray,
    prods: np.ndarray,
    comoment: np.ndarray,
    c: np.ndarray,
    ranges: list[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """The sums (W, S) of a state centred on its own mean, re-centred on ``mean + c``."""
    traces = np.array([np.trace(comoment[s:e, s:e]) for s, e in ranges])
    g = np.stack([comoment[:, s:e] @ c[s:e] for s, e in ranges])  # G_k = C[:, k] c_k: (K, D)
    return _shift(count, cross, prods, traces, g, c, ranges)


def _shift(
    count: int,
    cross: np.ndarray,
    prods: np.ndarray,
    traces: np.ndarray,
    g: np.ndarray,
    c: np.ndarray,
    ranges: list[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's centre move, given T_k = tr(C_kk) and G_k = C[:, k] c_k."""
    c_blocks = [c[s:e] for s, e in ranges]
    c_sq = np.array([v @ v for v in c_blocks])
    w_dot = np.stack([cross[:, s:e] @ v for (s, e), v in zip(ranges, c_blocks)], axis=1)
    g_dot = np.stack([g[:, s:e] @ v for (s, e), v in zip(ranges, c_blocks)], axis=1)
    new_cross = cross - np.outer(traces, c) - 2.0 * g - count * np.outer(c_sq, c)
    new_prods = (
        prods
        - 2.0 * w_dot
        - 2.0 * w_dot.T
        + np.outer(traces, c_sq)
        + np.outer(c_sq, traces)
        + 4.0 * g_dot
        + count * np.outer(c_sq, c_sq)
    )
    return new_cross, new_prods


def _batch_sums(
    x: np.ndarray | torch.Tensor, ranges: list[tuple[int, int]], target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(W, S) of a batch, summed about its own float64 mean and re-centred on ``target``.

    Rows go through in chunks of ``CHUNK_ROWS`` in float64; NumPy arrays are summed with NumPy,
    tensors on their device with torch, and only the (K, D) results come back.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach()

        def centre(a: Any) -> Any:
            return a.to(torch.float64) - mean

        def rowdot(a: Any) -> Any:
            return (a * a).sum(1)

        def stack(parts: list[Any]) -> Any:
            return torch.stack(parts, dim=1)

        def host(a: Any) -> np.ndarray:
            return a.cpu().numpy()

        mean = x.sum(0, dtype=torch.float64) / x.shape[0]
    else:

        def centre(a: Any) -> Any:
            return np.subtract(a, mean, dtype=np.float64)  # one pass, float64 result

        def rowdot(a: Any) -> Any:
            return np.einsum("ij,ij->i", a, a)

        def stack(parts: list[Any]) -> Any:
            return np.stack(parts, axis=1)

        def host(a: Any) -> np.ndarray:
            return np.asarray(a)

        mean = x.sum(0, dtype=np.float64) / x.shape[0]
    n = int(x.shape[0])
    c = target - host(mean)
    c_dev = torch.as_tensor(c, device=x.device) if isinstance(x, torch.Tensor) else c
    cross: Any = 0.0
    prods: Any = 0.0
    g: Any = 0.0
    traces: Any = 0.0
    k = len(ranges)
    for start in range(0, n, CHUNK_ROWS):
        z = centre(x[start : start + CHUNK_ROWS])
        # per row and block: |z_ik|^2 (first K columns) and c_k . z_ik (last K), one GEMM for both
        weights = stack(
            [rowdot(z[:, s:e]) for s, e in ranges] + [z[:, s:e] @ c_dev[s:e] for s, e in ranges]
        )
        both = weights.T @ z  # (2K, D): W_k and G_k
        sq = weights[:, :k]
        cross = cross + both[:k]
        g = g + both[k:]
        prods = prods + sq.T @ sq
        traces = traces + sq.sum(0)
    # the batch's G_k = C_batch[:, k] c_k came from the data (no co-moment matrix needed)
    return _shift(n, host(cross), host(prods), host(traces), host(g), c, ranges)
