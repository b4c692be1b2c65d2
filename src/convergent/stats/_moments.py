"""Streaming first and second moments of a D-dimensional variable, merged exactly.

``Moments`` is pure data (no model, no hook, no file besides its own save/load): ``update`` with a
batch, ``merge`` with another shard, and read-outs. State is the sample count, the mean and the
*centred* co-moment matrix ``sum_i (x_i - mean)(x_i - mean)^T``, all float64. Each batch is centred on
its own mean first, so its product can run in the batch's precision (float32) without the
cancellation that raw sums of squares suffer; batches are combined with the exact parallel formula of
Chan, Golub and LeVeque (1979)::

    n = n_a + n_b,  delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    C    = C_a + C_b + delta delta^T * n_a n_b / n
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import load_arrays, save_arrays

_KIND = "convergent.Moments"
#: A unit is dead when its standard deviation is at most this fraction of its |mean| (or exactly 0),
#: by the lowest precision any batch product ran in: float32 resolves about 6e-8 of a value, so a
#: smaller spread is rounding of a constant, not signal; float64 products resolve about 1e-16.
DEAD_RTOL = {"float32": 1e-6, "float64": 1e-12}


class Moments:
    """Streaming count, mean and centred co-moment matrix of a D-dimensional variable.

    Parameters
    ----------
    dim : int
        Number of variables (units) D.
    exact : bool
        Compute each batch's product in float64 too (default: in the batch's precision, float32 for
        float32 activations, after centring on the batch mean; accumulators are always float64).

    Attributes
    ----------
    metadata : dict
        Free JSON-able description (collection stores the layer and unit ranges here); saved with
        the moments.

    Examples
    --------
    >>> m = Moments(3).update(np.random.default_rng(0).normal(size=(100, 3)))
    >>> m.count, m.corr().shape
    (100, (3, 3))
    """

    def __init__(self, dim: int, *, exact: bool = False) -> None:
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(
                f"The 'dim' parameter of Moments must be an integer >= 1. Got {dim!r} instead."
            )
        self.dim = int(dim)
        self.exact = bool(exact)
        self.metadata: dict[str, Any] = {}
        self._count = 0
        self._batches = 0
        # float64 state, in host memory as NumPy arrays (batch products may run on a GPU)
        self._mean: np.ndarray | None = None
        self._comoment: np.ndarray | None = None
        self._work: np.ndarray | None = None  # reused buffer for the centred batch (CPU)
        self.product_precision = "float64"  # lowest precision a batch product has run in

    # ------------------------------------------------------------------------------------------
    # state

    def _ensure(self) -> None:
        if self._mean is None:
            self._mean = np.zeros(self.dim)
            self._comoment = np.zeros((self.dim, self.dim))

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64 mean (a read-only copy)."""
        self._require(1)
        return _readonly(self._mean)

    @property
    def comoment(self) -> np.ndarray:
        """(D, D) float64 centred co-moment ``sum_i (x_i - mean)(x_i - mean)^T`` (read-only copy)."""
        self._require(1)
        return _readonly(self._comoment)

    def _require(self, n: int) -> None:
        if self._count < n:
            raise ConvergentError(
                f"Moments have seen {self._count} samples; this read-out needs at least {n}. "
                "Feed data with update() first."
            )

    # ------------------------------------------------------------------------------------------
    # update / merge

    def update(self, x: np.ndarray | torch.Tensor) -> Moments:
        """Add a batch of samples.

        Parameters
        ----------
        x : (n, D) array or tensor
            NumPy array or torch tensor on any device. Integer input is converted to float64.

        Raises
        ------
        ValueError
            If a value is NaN or infinite (naming the columns and the batch); the state is unchanged.
        """
        if isinstance(x, torch.Tensor):
            if x.is_complex():
                raise TypeError("Moments.update does not take complex data.")
            if x.device.type == "cpu":
                x = x.detach().numpy()
        elif isinstance(x, np.ndarray):
            if (
                x.dtype == object
                or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool)
                or np.iscomplexobj(x)
            ):
                raise TypeError(
                    f"Moments.update expects real numeric data. Got dtype {x.dtype} instead."
                )
        else:
            raise TypeError(
                f"Moments.update expects a NumPy array or a torch tensor. Got {type(x).__name__} instead."
            )
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"Moments.update expects an array of shape (n, {self.dim}). Got {tuple(x.shape)} instead."
            )
        self._batches += 1
        n = int(x.shape[0])
        if n == 0:
            return self
        # centre on the batch mean, product in the batch's precision, then correct exactly for the
        # rounding of the centre: sum (x-c)(x-c)^T - s s^T / n with s = sum (x-c).
        if isinstance(x, np.ndarray):
            # CPU: all in NumPy, whose matmul runs x^T x as a symmetric rank-k update (BLAS syrk,
            # half the flops of a general product); one BLAS thread pool (mixing torch's OpenMP
            # pool with NumPy's in one update makes each spin while the other works)
            want = (
                np.float64
                if (self.exact or x.dtype == np.float64 or not np.issubdtype(x.dtype, np.floating))
                else np.float32
            )
            x = np.ascontiguousarray(x, dtype=want)
            if self._work is None or self._work.shape[0] < n or self._work.dtype != x.dtype:
                self._work = np.empty((n, self.dim), dtype=x.dtype)
            centre, resid, prod = _centred_product_numpy(x, self._work[:n])
            precision = "float64" if x.dtype == np.float64 else "float32"
        else:
            # GPU: the batch product runs on the device; the float64 state stays in host memory
            if not torch.is_floating_point(x) or self.exact or x.dtype == torch.float64:
                x = x.to(torch.float64)
            elif x.dtype != torch.float32:
                x = x.to(torch.float32)
            centre, resid, prod = (t.cpu().numpy() for t in _centred_product_torch(x))
            precision = "float64" if x.dtype == torch.float64 else "float32"
        if not np.isfinite(resid).all():
            # NaN or inf anywhere in a column makes its sum non-finite: find and report them
            bad = np.flatnonzero(
                ~np.isfinite(np.asarray(x.cpu().numpy() if isinstance(x, torch.Tensor) else x)).all(
                    axis=0
                )
            ).tolist()
            if bad:
                self._reject(bad)
            raise ValueError(
                f"Batch {self._batches} overflows {x.dtype} sums (values around "
                f"{float(abs(x).max()):.3g}); nothing from this batch was added. Use "
                "Moments(..., exact=True) for float64 products."
            )
        if not np.isfinite(np.diagonal(prod)).all():
            raise ValueError(
                f"Batch {self._batches} overflows {x.dtype} products (values around "
                f"{float(abs(x).max()):.3g}); nothing from this batch was added. Use "
                "Moments(..., exact=True) for float64 products."
            )
        prod -= np.outer(resid / n, resid)
        batch_mean = centre.astype(np.float64) + resid / n
        self._ensure()
        self._combine(n, batch_mean, prod)
        if precision == "float32":
            self.product_precision = "float32"
        return self

    def _reject(self, bad: list[int]) -> None:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"Non-finite values (NaN or inf) in column(s) {shown} of batch {self._batches} "
            f"({len(bad)} column(s) affected); nothing from this batch was added. Check the "
            "inputs or the model producing them."
        )

    def _combine(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        n_a = self._count
        n = n_a + n_b
        if n_a == 0:
            self._mean[:] = mean_b
            self._comoment[:] = comoment_b
        else:
            delta = mean_b - self._mean
            self._mean += delta * (n_b / n)
            self._comoment += comoment_b
            self._comoment += np.outer(delta * (n_a * n_b / n), delta)
        self._count = n

    def merge(self, other: Moments) -> Moments:
        """Fold another ``Moments`` of the same variables into this one (exact); returns ``self``."""
        if not isinstance(other, Moments):
            raise TypeError(f"Moments.merge expects a Moments. Got {type(other).__name__} instead.")
        if other.dim != self.dim:
            raise ValueError(
                f"Cannot merge Moments of dim {other.dim} into Moments of dim {self.dim}."
            )
        if other._count == 0:
            return self
        self._ensure()
        self._combine(other._count, other._mean, other._comoment)
        if other.product_precision == "float32":
            self.product_precision = "float32"
        return self

    # ------------------------------------------------------------------------------------------
    # read-outs

    def var(self, ddof: int = 0) -> np.ndarray:
        """(D,) variance with ``ddof`` delta degrees of freedom."""
        return np.diag(self.cov(ddof)).copy()

    def std(self, ddof: int = 0) -> np.ndarray:
        """(D,) standard deviation."""
        return np.sqrt(self.var(ddof))

    def cov(self, ddof: int = 1) -> np.ndarray:
        """(D, D) covariance ``comoment / (count - ddof)``."""
        self._require(ddof + 1)
        return self._comoment / (self._count - ddof)

    def dead_units(self) -> np.ndarray:
        """Indices of zero-variance (dead or constant) units.

        A unit is dead when its variance is exactly 0 or its standard deviation is at most
        ``DEAD_RTOL[product_precision]`` times its |mean| (1e-6 if any batch product ran in float32,
        else 1e-12): a smaller spread is the rounding of a constant, not signal.
        """
        self._require(1)
        var = np.clip(np.diag(self._comoment) / self._count, 0.0, None)
        std = np.sqrt(var)
        scale = np.abs(self._mean)
        dead = (var == 0) | (std <= DEAD_RTOL[self.product_precision] * scale)
        return np.flatnonzero(dead).astype(np.int64)

    def corr(self) -> np.ndarray:
        """(D, D) Pearson correlation. Dead units (see :meth:`dead_units`) have correlation 0 with
        every other unit and 1 with themselves; the result never holds NaN. Values are clipped to
        [-1, 1] against rounding."""
        self._require(1)
        cov = self._comoment / self._count
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        alive = np.ones(self.dim, dtype=bool)
        alive[self.dead_units()] = False
        inv = np.zeros(self.dim)
        inv[alive] = 1.0 / std[alive]
        corr = cov * np.outer(inv, inv)
        np.clip(corr, -1.0, 1.0, out=corr)
        np.fill_diagonal(corr, 1.0)
        return corr

    # ------------------------------------------------------------------------------------------
    # helpers

    def subset(self, index: Any) -> Moments:
        """The moments of a subset (or reordering) of the variables: slices of mean and comoment."""
        self._require(1)
        idx = np.arange(self.dim)[index]
        idx = np.atleast_1d(idx)
        out = Moments(int(idx.size), exact=self.exact)
        out._count = self._count
        out._mean = self._mean[idx].copy()
        out._comoment = self._comoment[np.ix_(idx, idx)].copy()
        out.product_precision = self.product_precision
        # the parent's metadata (unit ranges, layer) does not describe a subset: start empty
        return out

    def copy(self) -> Moments:
        out = Moments(self.dim, exact=self.exact)
        out.metadata = dict(self.metadata)
        out.product_precision = self.product_precision
        out._count, out._batches = self._count, self._batches
        if self._mean is not None:
            out._mean = self._mean.copy()
            out._comoment = self._comoment.copy()
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Moments):
            return NotImplemented
        if (self.dim, self._count) != (other.dim, other._count):
            return False
        if self._count == 0:
            return True
        return bool(
            np.array_equal(self.mean, other.mean) and np.array_equal(self.comoment, other.comoment)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        mode = "exact" if self.exact else "float32 products"
        return f"Moments(dim={self.dim}, count={self._count}, {mode})"

    # ------------------------------------------------------------------------------------------
    # files

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file (count, mean, comoment) with JSON metadata."""
        self._require(0)
        mean = self._mean if self._mean is not None else np.zeros(self.dim)
        comoment = self._comoment if self._comoment is not None else np.zeros((self.dim,) * 2)
        save_arrays(
            path,
            {"count": np.array([self._count], dtype=np.int64), "mean": mean, "comoment": comoment},
            {
                "kind": _KIND,
                "format_version": 1,
                "dim": self.dim,
                "exact": self.exact,
                "product_precision": self.product_precision,
                "metadata": self.metadata,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Moments:
        """Read a file written by :meth:`save`; refuses damaged or foreign files."""
        arrays, meta = load_arrays(path)
        if meta.get("kind") != _KIND:
            raise CorruptFileError(
                f"{path} is not a convergent Moments file (kind {meta.get('kind')!r})."
            )
        try:
            dim = int(meta["dim"])
            count = arrays["count"]
            mean, comoment = arrays["mean"], arrays["comoment"]
        except KeyError as exc:
            raise CorruptFileError(f"{path} lacks {exc} and cannot be read as Moments.") from exc
        if (
            count.shape != (1,)
            or mean.shape != (dim,)
            or comoment.shape != (dim, dim)
            or mean.dtype != np.float64
            or comoment.dtype != np.float64
            or int(count[0]) < 0
        ):
            raise CorruptFileError(
                f"{path} has inconsistent Moments arrays (count {count.shape}, mean {mean.shape} "
                f"{mean.dtype}, comoment {comoment.shape} {comoment.dtype} for dim {dim})."
            )
        if not (np.isfinite(mean).all() and np.isfinite(comoment).all()):
            raise CorruptFileError(f"{path} holds non-finite moments.")
        out = cls(dim, exact=bool(meta.get("exact", False)))
        out.metadata = dict(meta.get("metadata", {}))
        precision = meta.get("product_precision", "float32")
        if precision not in DEAD_RTOL:
            raise CorruptFileError(f"{path} has an unknown product_precision {precision!r}.")
        out.product_precision = precision
        out._count = int(count[0])
        if out._count > 0:
            out._mean = mean.copy()
            out._comoment = comoment.copy()
        return out


def _centred_product_numpy(
    x: np.ndarray, work: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, sum of centred rows, centred product) of a CPU batch; the last two in float64.
    ``work`` is a buffer of x's shape and dtype that receives the centred batch."""
    n = x.shape[0]
    with np.errstate(all="ignore"):  # non-finite input is reported by the caller
        ones = np.ones(n, dtype=x.dtype)
        centre = (ones @ x) / n
        xc = np.subtract(x, centre, out=work)
        resid = (ones @ xc).astype(np.float64)
        prod = (xc.T @ xc).astype(np.float64)
    return centre, resid, prod


def _centred_product_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    centre = (x.T @ ones).squeeze(1) / x.shape[0]
    xc = x - centre
    resid = (xc.T @ ones).squeeze(1).to(torch.float64)
    return centre, resid, (xc.T @ xc).to(torch.float64)


def _readonly(t: np.ndarray) -> np.ndarray:
    arr = t.copy()
    arr.setflags(write=False)
    return arr
