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

from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError, CorruptFileError
from convergent.stats._state import StateField, Statistic

#: Machine epsilon of the activation dtypes a batch may come in.
EPS = {
    "float64": float(np.finfo(np.float64).eps),
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}
#: A unit is dead when its variance is 0 or its standard deviation is at most ``DEAD_ULPS`` times
#: the resolution of the data at its mean, ``eps * |mean|`` (eps of the coarsest dtype any batch
#: came in). Activations are stored in that dtype: a spread of one or two units in the last place
#: around a constant is the rounding of that constant, not signal. The batch products cannot be
#: the limit: each batch is centred first, so a constant column gives a centred product of
#: order ``eps**3 * mean**2``, far below this threshold, in float32 products as in float64.
DEAD_ULPS = 2.0
#: The dead-unit rule's relative tolerance per activation dtype: ``DEAD_ULPS * eps``.
DEAD_RTOL = {k: DEAD_ULPS * v for k, v in EPS.items()}


class Moments(Statistic):
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

    kind = "convergent.Moments"
    noun = "moments"
    state_fields = (
        StateField("count", "int64", "custom", "(1,) samples seen", what="Moments arrays"),
        StateField("mean", "float64", "custom", "(D,) mean", what="Moments arrays"),
        StateField(
            "comoment", "float64", "custom", "(D, D) centred co-moment", what="Moments arrays"
        ),
        StateField(
            "float32_batches",
            "int64",
            "sum",
            "(1,) batches whose product ran in float32",
            what="Moments arrays",
        ),
        StateField(
            "input_eps",
            "float64",
            "max",
            "(1,) machine epsilon of the coarsest activation dtype seen (the data's resolution)",
            what="Moments arrays",
        ),
    )

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
        self._float32_batches = 0
        self._input_eps = 0.0

    # ------------------------------------------------------------------------------------------
    # state (declared above; see convergent.stats._state)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "exact": self.exact}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.dim
        return {
            "count": (1,),
            "mean": (d,),
            "comoment": (d, d),
            "float32_batches": (1,),
            "input_eps": (1,),
        }

    def state(self) -> dict[str, np.ndarray]:
        empty = self._mean is None
        return {
            "count": np.array([self._count], dtype=np.int64),
            "mean": np.zeros(self.dim) if empty else self._mean,
            "comoment": np.zeros((self.dim, self.dim)) if empty else self._comoment,
            "float32_batches": np.array([self._float32_batches], dtype=np.int64),
            "input_eps": np.array([self._input_eps], dtype=np.float64),
        }

    def _set_state(self, arrays: Any) -> None:
        self._count = int(np.asarray(arrays["count"]).reshape(-1)[0])
        if self._count < 0:
            raise CorruptFileError(f"Moments state has a negative count ({self._count}).")
        self._mean = np.array(arrays["mean"], dtype=np.float64) if self._count else None
        self._comoment = np.array(arrays["comoment"], dtype=np.float64) if self._count else None
        self._float32_batches = int(np.asarray(arrays["float32_batches"]).reshape(-1)[0])
        self._input_eps = float(np.asarray(arrays["input_eps"]).reshape(-1)[0])

    @property
    def product_precision(self) -> str:
        """``"float32"`` if any batch product ran in float32, else ``"float64"``."""
        return "float32" if self._float32_batches else "float64"

    @property
    def input_eps(self) -> float:
        """Machine epsilon of the coarsest dtype any batch came in (0 before the first batch)."""
        return self._input_eps

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
        input_eps = _dtype_eps(x.dtype) if hasattr(x, "dtype") else 0.0
        if isinstance(x, torch.Tensor):
            if x.is_complex():
                raise TypeError("Moments.update does not take complex data.")
            if x.device.type == "cpu":
                # NumPy has no bfloat16: widen it (exactly) to float32 first
                x = (x.float() if x.dtype == torch.bfloat16 else x).detach().numpy()
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
            self._float32_batches += 1
        self._input_eps = max(self._input_eps, input_eps)
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

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, Moments):
            raise TypeError(f"Moments.merge expects a Moments. Got {type(other).__name__} instead.")
        if other.dim != self.dim:
            raise ValueError(
                f"Cannot merge Moments of dim {other.dim} into Moments of dim {self.dim}."
            )

    def _merge_custom(self, other: Moments) -> None:
        """Chan's parallel formula for (count, mean, comoment); the other fields merge as declared."""
        if other._count == 0:
            return
        self._ensure()
        self._combine(other._count, other._mean, other._comoment)

    def merge(self, other: Moments) -> Moments:
        """Fold another ``Moments`` of the same variables into this one (exact); returns ``self``."""
        return super().merge(other)

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
        ``DEAD_ULPS * eps * |mean|``, ``eps`` the machine epsilon of the coarsest dtype the
        activations came in (:attr:`input_eps`): a spread of a unit or two in the last place of a
        constant is its rounding, not signal. This does not depend on the precision of the batch
        products (each batch is centred before its product).
        """
        self._require(1)
        var = np.clip(np.diag(self._comoment) / self._count, 0.0, None)
        std = np.sqrt(var)
        scale = np.abs(self._mean)
        dead = (var == 0) | (std <= DEAD_ULPS * self._input_eps * scale)
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
        out._float32_batches, out._input_eps = self._float32_batches, self._input_eps
        # the parent's metadata (unit ranges, layer) does not describe a subset: start empty
        return out

    def __repr__(self) -> str:
        mode = "exact" if self.exact else "float32 products"
        return f"{type(self).__name__}(dim={self.dim}, count={self._count}, {mode})"

    # ------------------------------------------------------------------------------------------
    # files (save / load / copy / == come from the declared state, convergent.stats._state)

    @classmethod
    def _config_from_file(cls, path: Any, arrays: dict, meta: dict) -> dict[str, Any]:
        if "config" in meta:
            return super()._config_from_file(path, arrays, meta)
        # format 1 (convergent 0.1): dim and exact in the header, precision as a word
        try:
            config = {"dim": int(meta["dim"]), "exact": bool(meta.get("exact", False))}
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path} has no usable Moments dimension ({exc}).") from exc
        precision = meta.get("product_precision", "float32")
        if precision not in ("float32", "float64"):
            raise CorruptFileError(f"{path} has an unknown product_precision {precision!r}.")
        arrays.setdefault("float32_batches", np.array([int(precision == "float32")]))
        arrays.setdefault("input_eps", np.array([EPS[precision]]))
        return config


def _dtype_eps(dtype: Any) -> float:
    """Machine epsilon of an activation dtype (NumPy or torch); 0 for integers and booleans."""
    name = str(dtype).replace("torch.", "")
    if name in EPS:
        return EPS[name]
    return 0.0


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
