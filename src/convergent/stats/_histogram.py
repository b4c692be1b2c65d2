"""Per-unit percentile bins and the joint histogram of two nets' units: the streaming statistic
behind mutual information (``convergent.analysis.mutual_information_matrix`` reads it).

Each unit's activations are discretised with per-unit percentile bins; a ReLU unit's mass at exactly
zero (more generally, a point mass at its minimum) gets a bin of its own, the rest is split at
percentiles. :class:`JointHistogram` accumulates the joint counts of every (A unit, B unit) pair in a
streaming pass, as one one-hot matrix product per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError
from convergent.stats._state import StateField, Statistic

DEFAULT_MAX_BYTES = 2 * 2**30
#: A point mass at a unit's minimum gets its own bin when it holds at least this share of samples.
POINT_MASS_SHARE = 0.01


def quantile_edges(samples: np.ndarray | torch.Tensor, bins: int = 10) -> np.ndarray:
    """Per-unit bin edges from a sample of activations, padded to shape (d, bins - 1) with +inf.

    A value ``v`` falls in bin ``#{edges < v}``. Where a unit has a point mass at its minimum (a ReLU
    unit's zeros) holding at least 1% of the samples, the minimum is the first edge, so the mass is
    bin 0 alone, and the remaining ``bins - 1`` bins split the rest at percentiles; otherwise
    ``bins`` percentile bins. Duplicate edges are collapsed; a constant (dead) unit has one bin.
    """
    if int(bins) != bins or bins < 2:
        raise ValueError(f"The 'bins' parameter must be an integer >= 2. Got {bins!r} instead.")
    x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"quantile_edges expects a non-empty (n, d) sample. Got shape {x.shape}.")
    x = x.astype(np.float64)
    edges = np.full((x.shape[1], bins - 1), np.inf)
    for j in range(x.shape[1]):
        v = x[:, j]
        low = v.min()
        mass = np.mean(v == low)
        if mass >= 1.0:
            continue  # constant unit: one bin
        if mass >= POINT_MASS_SHARE:
            rest = v[v > low]
            qs = np.quantile(rest, np.linspace(0, 1, bins)[1:-1]) if bins > 2 else np.zeros(0)
            cut = np.concatenate([[low], qs])
        else:
            cut = np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])
        cut = np.unique(cut)
        cut = cut[cut < v.max()]  # an edge at the maximum would leave an empty top bin
        edges[j, : len(cut)] = cut
    return edges


def digitize(x: np.ndarray | torch.Tensor, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value: (n, d) ints, ``#{edges[j] < x[:, j]}``."""
    t = torch.as_tensor(x).double()
    e = torch.as_tensor(edges).double()
    # compare against each edge column: (n, d, bins-1) would be large; loop over edge columns
    out = torch.zeros(t.shape, dtype=torch.int64)
    for k in range(e.shape[1]):
        out += (t > e[:, k]).long()
    return out.numpy()


class JointHistogram(Statistic):
    """Joint counts of every (A unit, B unit) pair over ``bins x bins`` cells; pure data.

    Parameters
    ----------
    edges_a, edges_b : ndarray, shape (d_A, bins - 1), (d_B, bins - 1)
        From :func:`quantile_edges`.
    max_bytes : int
        Refuse (before allocating) when the count array ``d_A * d_B * bins^2 * 8`` bytes would
        exceed this; pick a subset of units or fewer bins.
    """

    kind = "convergent.JointHistogram"
    noun = "histogram counts"
    state_fields = (
        StateField("edges_a", "float64", "same", "(d_A, bins - 1) bin edges of A's units"),
        StateField("edges_b", "float64", "same", "(d_B, bins - 1) bin edges of B's units"),
        StateField("counts", "float64", "sum", "(d_A * bins, d_B * bins) joint counts"),
        StateField("count", "int64", "sum", "(1,) samples counted"),
    )

    def __init__(
        self, edges_a: np.ndarray, edges_b: np.ndarray, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.edges_a = np.asarray(edges_a, dtype=np.float64)
        self.edges_b = np.asarray(edges_b, dtype=np.float64)
        self.max_bytes = int(max_bytes)
        self.metadata: dict[str, Any] = {}
        if (
            self.edges_a.ndim != 2
            or self.edges_b.ndim != 2
            or self.edges_a.shape[1] != self.edges_b.shape[1]
        ):
            raise ValueError("edges_a and edges_b must be (d, bins - 1) arrays with the same bins.")
        self.bins = self.edges_a.shape[1] + 1
        d_a, d_b = len(self.edges_a), len(self.edges_b)
        need = d_a * d_b * self.bins**2 * 8
        if need > self.max_bytes:
            raise ConvergentError(
                f"Mutual information of {d_a} x {d_b} units with {self.bins} bins needs "
                f"{need / 2**30:.2f} GiB of joint counts, more than the {self.max_bytes / 2**30:.2f} "
                "GiB allowed. Pick a subset of units (units_a=..., units_b=...) or fewer bins, or "
                "raise max_bytes."
            )
        self.counts = np.zeros((d_a * self.bins, d_b * self.bins))
        self.count = 0

    def config(self) -> dict[str, Any]:
        return {
            "units_a": len(self.edges_a),
            "units_b": len(self.edges_b),
            "bins": self.bins,
            "max_bytes": self.max_bytes,
        }

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        d_a, d_b, b = len(self.edges_a), len(self.edges_b), self.bins
        return {
            "edges_a": (d_a, b - 1),
            "edges_b": (d_b, b - 1),
            "counts": (d_a * b, d_b * b),
            "count": (1,),
        }

    def state(self) -> dict[str, np.ndarray]:
        return {
            "edges_a": self.edges_a,
            "edges_b": self.edges_b,
            "counts": self.counts,
            "count": np.array([self.count], dtype=np.int64),
        }

    def _set_state(self, arrays: Any) -> None:
        self.edges_a = np.array(arrays["edges_a"], dtype=np.float64)
        self.edges_b = np.array(arrays["edges_b"], dtype=np.float64)
        self.counts = np.array(arrays["counts"], dtype=np.float64)
        self.count = int(np.asarray(arrays["count"]).reshape(-1)[0])

    @classmethod
    def _empty(cls, config: Any, arrays: Any) -> JointHistogram:
        return cls(
            arrays["edges_a"], arrays["edges_b"], int(config.get("max_bytes", DEFAULT_MAX_BYTES))
        )

    @classmethod
    def _from_file(cls, path: Any, arrays: dict, meta: dict) -> JointHistogram:
        # +inf pads the edges of units with fewer distinct bins: the one non-finite value allowed
        checked = {
            k: (np.where(np.isposinf(v), 0.0, v) if k.startswith("edges") else v)
            for k, v in arrays.items()
        }
        out = super()._from_file(path, checked, meta)  # validates shapes, dtypes, finiteness
        out.edges_a = np.array(arrays["edges_a"], dtype=np.float64)
        out.edges_b = np.array(arrays["edges_b"], dtype=np.float64)
        return out

    def _onehot(self, x: np.ndarray | torch.Tensor, edges: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(digitize(x, edges))
        n, d = idx.shape
        flat = idx + torch.arange(d) * self.bins
        out = torch.zeros(n, d * self.bins, dtype=torch.float32)
        out.scatter_(1, flat, 1.0)
        return out

    def update(
        self, xa: np.ndarray | torch.Tensor, xb: np.ndarray | torch.Tensor, chunk: int = 4096
    ) -> JointHistogram:
        """Add paired samples: ``xa`` (n, d_A) and ``xb`` (n, d_B) from the same inputs."""
        if len(xa) != len(xb):
            raise ValueError(
                f"xa and xb must pair up sample by sample: {len(xa)} vs {len(xb)} rows."
            )
        if xa.shape[1] != len(self.edges_a) or xb.shape[1] != len(self.edges_b):
            raise ValueError(
                f"Expected {len(self.edges_a)} and {len(self.edges_b)} units. Got {xa.shape[1]} and "
                f"{xb.shape[1]}."
            )
        for start in range(0, len(xa), chunk):
            oa = self._onehot(xa[start : start + chunk], self.edges_a)
            ob = self._onehot(xb[start : start + chunk], self.edges_b)
            # counts per chunk are exact in float32 (< 2^24)
            self.counts += (oa.T @ ob).double().numpy()
        self.count += len(xa)
        return self

    def _check_mergeable(self, other: Any) -> None:
        super()._check_mergeable(other)
        if not (
            np.array_equal(self.edges_a, other.edges_a)
            and np.array_equal(self.edges_b, other.edges_b)
        ):
            raise ValueError("Cannot merge joint histograms with different bin edges.")

    def table(self) -> np.ndarray:
        """Counts as (d_A, d_B, bins, bins)."""
        d_a, d_b = len(self.edges_a), len(self.edges_b)
        return self.counts.reshape(d_a, self.bins, d_b, self.bins).transpose(0, 2, 1, 3)
