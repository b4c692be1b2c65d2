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
#: A unit is dead when its standard deviation is at most this fraction of its |mean| (or exactly 0).
#: float32 products resolve about 1e-7 of a value, so a smaller spread is rounding, not signal.
DEAD_RTOL = {False: 1e-6, True: 1e-12}


class Moments:
    """Streaming count, mean and centred co-moment matrix of a D-dimensional variable.

    Parameters
    ----------
    dim : int
        Number of variables (units) D.
    exact : bool
        Compute each batch's product in float64 too (default: in the batch's precision, float32 for
        float32 activations, after centring on the batch mean; accumulators are always float64).
    device : str or torch.device, optional
        Where the float64 state lives (default: the device of the first batch; CPU for NumPy).

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

    def __init__(self, dim: int, *, exact: bool = False, device: str | torch.device | None = None) -> None:
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"The 'dim' parameter of Moments must be an integer >= 1. Got {dim!r} instead.")
        self.dim = int(dim)
        self.exact = bool(exact)
        self.metadata: dict[str, Any] = {}
        self._device = torch.device(device) if device is not None else None
        self._count = 0
        self._batches = 0
        self._mean: torch.Tensor | None = None
        self._comoment: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------
    # state

    def _ensure(self, device: torch.device) -> None:
        if self._mean is None:
            self._device = self._device or device
            self._mean = torch.zeros(self.dim, dtype=torch.float64, device=self._device)
            self._comoment = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self._device)

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
        if isinstance(x, np.ndarray):
            if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise TypeError(f"Moments.update expects numeric data. Got dtype {x.dtype} instead.")
            x = torch.from_numpy(np.ascontiguousarray(x))
        elif not isinstance(x, torch.Tensor):
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
        if x.is_complex():
            raise TypeError("Moments.update does not take complex data.")
        if not torch.is_floating_point(x):
            x = x.to(torch.float64)
        elif self.exact or x.dtype == torch.float64:
            x = x.to(torch.float64)
        elif x.dtype != torch.float32:  # half precision: product in float32
            x = x.to(torch.float32)
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite.all(dim=0)).flatten().tolist()
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            raise ValueError(
                f"Non-finite values (NaN or inf) in column(s) {shown} of batch {self._batches} "
                f"({len(bad)} column(s) affected); nothing from this batch was added. Check the "
                "inputs or the model producing them."
            )
        self._ensure(x.device)
        # centre on the batch mean (computed in float64), product in the batch's precision, then
        # correct exactly for the rounding of the centre: sum (x-c)(x-c)^T - s s^T / n, s = sum(x-c)
        centre64 = x.sum(dim=0, dtype=torch.float64) / n
        xc = x - centre64.to(x.dtype)
        prod = (xc.T @ xc).to(torch.float64)
        resid = xc.sum(dim=0, dtype=torch.float64)
        prod -= torch.outer(resid, resid) / n
        batch_mean = centre64.to(x.dtype).to(torch.float64) + resid / n
        self._combine(n, batch_mean.to(self._device), prod.to(self._device))
        return self

    def _combine(self, n_b: int, mean_b: torch.Tensor, comoment_b: torch.Tensor) -> None:
        n_a = self._count
        n = n_a + n_b
        if n_a == 0:
            self._mean.copy_(mean_b)
            self._comoment.copy_(comoment_b)
        else:
            delta = mean_b - self._mean
            self._mean.add_(delta, alpha=n_b / n)
            self._comoment.add_(comoment_b)
            self._comoment.add_(torch.outer(delta, delta), alpha=n_a * n_b / n)
        self._count = n

    def merge(self, other: Moments) -> Moments:
        """Fold another ``Moments`` of the same variables into this one (exact); returns ``self``."""
        if not isinstance(other, Moments):
            raise TypeError(f"Moments.merge expects a Moments. Got {type(other).__name__} instead.")
        if other.dim != self.dim:
            raise ValueError(f"Cannot merge Moments of dim {other.dim} into Moments of dim {self.dim}.")
        if other._count == 0:
            return self
        self._ensure(other._device)
        self._combine(other._count, other._mean.to(self._device), other._comoment.to(self._device))
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
        return self._comoment.cpu().numpy() / (self._count - ddof)

    def dead_units(self) -> np.ndarray:
        """Indices of zero-variance (dead or constant) units.

        A unit is dead when its variance is exactly 0 or its standard deviation is at most
        ``DEAD_RTOL[exact]`` times its |mean| (1e-6 for float32 products, 1e-12 in exact mode): a
        smaller spread is the rounding of a constant, not signal.
        """
        self._require(1)
        var = np.clip(np.diag(self._comoment.cpu().numpy()) / self._count, 0.0, None)
        std = np.sqrt(var)
        scale = np.abs(self._mean.cpu().numpy())
        dead = (var == 0) | (std <= DEAD_RTOL[self.exact] * scale)
        return np.flatnonzero(dead).astype(np.int64)

    def corr(self) -> np.ndarray:
        """(D, D) Pearson correlation. Dead units (see :meth:`dead_units`) have correlation 0 with
        every other unit and 1 with themselves; the result never holds NaN. Values are clipped to
        [-1, 1] against rounding."""
        self._require(1)
        cov = self._comoment.cpu().numpy() / self._count
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        alive = np.ones(self.dim, dtype=bool)
        alive[self.dead_units()] = False
        inv = np.zeros(self.dim)
        inv[alive] = 1.0 / std[alive]
        corr = cov * inv[:, None] * inv[None, :]
        np.clip(corr, -1.0, 1.0, out=corr)
        np.fill_diagonal(corr, 1.0)
        return corr

    # ------------------------------------------------------------------------------------------
    # helpers

    def subset(self, index: Any) -> Moments:
        """The moments of a subset (or reordering) of the variables: slices of mean and comoment."""
        self._require(1)
        idx = torch.as_tensor(np.arange(self.dim)[index], dtype=torch.long, device=self._mean.device)
        out = Moments(int(idx.numel()), exact=self.exact, device=self._device)
        out._ensure(self._mean.device)
        out._count = self._count
        out._mean.copy_(self._mean[idx])
        out._comoment.copy_(self._comoment[idx][:, idx])
        out.metadata = dict(self.metadata)
        return out

    def copy(self) -> Moments:
        out = Moments(self.dim, exact=self.exact, device=self._device)
        out.metadata = dict(self.metadata)
        out._count, out._batches = self._count, self._batches
        if self._mean is not None:
            out._mean = self._mean.clone()
            out._comoment = self._comoment.clone()
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Moments):
            return NotImplemented
        if (self.dim, self._count) != (other.dim, other._count):
            return False
        if self._count == 0:
            return True
        return bool(np.array_equal(self.mean, other.mean) and np.array_equal(self.comoment, other.comoment))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        mode = "exact" if self.exact else "float32 products"
        return f"Moments(dim={self.dim}, count={self._count}, {mode})"

    # ------------------------------------------------------------------------------------------
    # files

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file (count, mean, comoment) with JSON metadata."""
        self._require(0)
        mean = self._mean.cpu().numpy() if self._mean is not None else np.zeros(self.dim)
        comoment = self._comoment.cpu().numpy() if self._comoment is not None else np.zeros((self.dim,) * 2)
        save_arrays(
            path,
            {"count": np.array([self._count], dtype=np.int64), "mean": mean, "comoment": comoment},
            {"kind": _KIND, "format_version": 1, "dim": self.dim, "exact": self.exact,
             "metadata": self.metadata},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Moments:
        """Read a file written by :meth:`save`; refuses damaged or foreign files."""
        arrays, meta = load_arrays(path)
        if meta.get("kind") != _KIND:
            raise CorruptFileError(f"{path} is not a convergent Moments file (kind {meta.get('kind')!r}).")
        try:
            dim = int(meta["dim"])
            count = arrays["count"]
            mean, comoment = arrays["mean"], arrays["comoment"]
        except KeyError as exc:
            raise CorruptFileError(f"{path} lacks {exc} and cannot be read as Moments.") from exc
        if count.shape != (1,) or mean.shape != (dim,) or comoment.shape != (dim, dim) \
                or mean.dtype != np.float64 or comoment.dtype != np.float64 or int(count[0]) < 0:
            raise CorruptFileError(
                f"{path} has inconsistent Moments arrays (count {count.shape}, mean {mean.shape} "
                f"{mean.dtype}, comoment {comoment.shape} {comoment.dtype} for dim {dim})."
            )
        if not (np.isfinite(mean).all() and np.isfinite(comoment).all()):
            raise CorruptFileError(f"{path} holds non-finite moments.")
        out = cls(dim, exact=bool(meta.get("exact", False)), device="cpu")
        out.metadata = dict(meta.get("metadata", {}))
        out._count = int(count[0])
        if out._count > 0:
            out._ensure(torch.device("cpu"))
            out._mean = torch.from_numpy(mean.copy())
            out._comoment = torch.from_numpy(comoment.copy())
        return out


def _readonly(t: torch.Tensor) -> np.ndarray:
    arr = t.detach().cpu().numpy().copy()
    arr.setflags(write=False)
    return arr
