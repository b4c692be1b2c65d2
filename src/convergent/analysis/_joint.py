"""The one entry point of every metric: a pair of nets' blocks of the joint moments.

A metric takes either a joint :class:`~convergent.stats.Moments` (over the units of several nets,
with each net's unit range) or two plain arrays (n, d_A), (n, d_B). Arrays are first folded into a
float64 :class:`KernelMoments` (exact products), so both inputs run through the same code:
``arrays -> moments -> PairBlocks -> metric``. The arrays are streamed through in blocks of rows
(about ``CHUNK_BYTES`` of float64 at a time), so the memory above the arrays is bounded whatever
the number of samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError
from convergent.stats import Moments
from convergent.stats._kernel import KernelMoments

#: Bytes of float64 rows folded into the moments at a time by :func:`joint_moments` (the extra
#: memory of the arrays API is a small multiple of this plus O(D^2), independent of n).
CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class PairBlocks:
    """The parts of the joint moments one pair of nets needs.

    Attributes
    ----------
    names : (str, str)
        Net A and net B.
    count : int
        Samples n.
    c_aa, c_bb, c_ab : ndarray
        Blocks of the centred co-moment ``sum_i (z_i - mean)(z_i - mean)^T`` (not divided by n),
        shapes (d_A, d_A), (d_B, d_B), (d_A, d_B). Rows and columns of dead units are exactly 0.
    alive_a, alive_b : ndarray of bool
        Units that are not dead (``Moments.dead_units``).
    norm_products : ndarray of shape (3,) or None
        ``(S_AA, S_BB, S_AB)``, ``S_AB = sum_i |x_i - mean_A|^2 |y_i - mean_B|^2``: only from a
        :class:`KernelMoments` whose blocks are these two nets (debiased CKA needs them).
    product_precision : {"float32", "float64"}
        The lowest precision any batch product of the moments ran in (``Moments.product_precision``;
        "float64" for objects that do not say): how finely the co-moment blocks resolve small
        directions (see :func:`convergent.analysis._cca.rounding_tolerance`).
    """

    names: tuple[str, str]
    count: int
    c_aa: np.ndarray
    c_bb: np.ndarray
    c_ab: np.ndarray
    alive_a: np.ndarray
    alive_b: np.ndarray
    norm_products: np.ndarray | None = None
    product_precision: str = "float64"

    @property
    def widths(self) -> tuple[int, int]:
        return self.c_aa.shape[0], self.c_bb.shape[0]

    def dead(self) -> dict[str, int]:
        return {
            self.names[0]: int((~self.alive_a).sum()),
            self.names[1]: int((~self.alive_b).sum()),
        }


def _as_2d(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """``x`` itself (no copy) after checking it is a 2-D NumPy array or torch tensor."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(
            f"The '{name}' parameter must be a NumPy array, a torch tensor or a Moments. "
            f"Got {type(x).__name__} instead."
        )
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"The '{name}' parameter must be a 2-D (samples, units) array. Got shape {x.shape} "
            "instead."
        )
    return x


def _rows64(x: np.ndarray | torch.Tensor, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``x`` as a float64 host array (only those rows are copied)."""
    if isinstance(x, torch.Tensor):
        return x[start:stop].detach().to("cpu", torch.float64).numpy()
    return np.asarray(x[start:stop], dtype=np.float64)


def joint_moments(arrays: Mapping[str, Any] | Sequence[Any]) -> KernelMoments:
    """Fold several nets' activations on the same inputs into one exact float64 ``KernelMoments``.

    Parameters
    ----------
    arrays : mapping of net name to (n, d_net) array, or a sequence (named ``"a"``, ``"b"``, ...)
        NumPy arrays or torch tensors with the same number of rows.

    Returns
    -------
    KernelMoments
        Over the nets' units concatenated, with ``unit_ranges`` per net.

    Notes
    -----
    The rows are folded in blocks of about ``CHUNK_BYTES`` (float64 products, exact merges), so the
    memory above the arrays is O(block + D^2), not a float64 copy of the arrays.
    """
    if not isinstance(arrays, Mapping):
        arrays = {chr(ord("a") + i) if i < 26 else f"net{i}": x for i, x in enumerate(arrays)}
    if not arrays:
        raise ValueError("The 'arrays' parameter of joint_moments must hold at least one array.")
    parts = {str(k): _as_2d(v, str(k)) for k, v in arrays.items()}
    rows = {k: v.shape[0] for k, v in parts.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(
            f"The arrays must hold the same inputs (equal numbers of rows). Got rows {rows} instead."
        )
    if next(iter(rows.values())) < 1:
        raise ValueError("The arrays hold no samples.")
    ranges, start = {}, 0
    for k, v in parts.items():
        ranges[k] = (start, start + v.shape[1])
        start += v.shape[1]
    moments = KernelMoments(start, ranges, exact=True)
    n = next(iter(rows.values()))
    step = max(1, CHUNK_BYTES // (8 * start))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        moments.update(np.concatenate([_rows64(v, lo, hi) for v in parts.values()], axis=1))
    return moments


def resolve_ranges(moments: Moments, unit_ranges: Mapping[str, Any] | None) -> dict:
    """Unit ranges given, else the moments' own (``KernelMoments.unit_ranges`` or metadata)."""
    if unit_ranges is None:
        unit_ranges = getattr(moments, "unit_ranges", None) or moments.metadata.get("unit_ranges")
    if not unit_ranges:
        raise ValueError(
            "The joint moments carry no unit ranges; pass unit_ranges={net: (start, stop)} "
            "(collect() stores them in metadata['unit_ranges'])."
        )
    out = {}
    for k, v in unit_ranges.items():
        start, stop = (int(i) for i in v)
        if not 0 <= start < stop <= moments.dim:
            raise ValueError(
                f"The unit range of {k!r} must satisfy 0 <= start < stop <= {moments.dim}. Got "
                f"({start}, {stop}) instead."
            )
        out[str(k)] = (start, stop)
    return out


def pair_blocks(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> PairBlocks:
    """The :class:`PairBlocks` of two nets, from joint moments or from two arrays.

    Parameters
    ----------
    x : Moments, PairBlocks or (n, d_A) array
    y : (n, d_B) array, optional
        Net B's activations on the same inputs (only with an array ``x``).
    nets : (str, str), optional
        Which nets of the joint moments (default: the two nets, when there are exactly two).
    unit_ranges : mapping, optional
        Each net's (start, stop) among the joint units (default: those the moments carry).
    """
    if isinstance(x, PairBlocks):
        return x
    if isinstance(x, Moments):
        if y is not None:
            raise ValueError(
                "Pass either joint moments (and nets=...) or two arrays, not moments and an array."
            )
        moments = x
    else:
        if y is None:
            raise ValueError(
                "With an array as the first argument, pass net B's activations as the second."
            )
        moments = joint_moments({"a": x, "b": y})
        nets = ("a", "b") if nets is None else nets
        unit_ranges = {nets[0]: moments.unit_ranges["a"], nets[1]: moments.unit_ranges["b"]}
    ranges = resolve_ranges(moments, unit_ranges)
    if nets is None:
        if len(ranges) != 2:
            raise ValueError(
                f"The moments hold {len(ranges)} nets {list(ranges)}; say which two with "
                "nets=(a, b)."
            )
        nets = tuple(ranges)
    if len(nets) != 2:
        raise ValueError(f"The 'nets' parameter must name two nets. Got {nets!r} instead.")
    for net in nets:
        if net not in ranges:
            raise ValueError(f"No net {net!r} in the moments. Nets: {list(ranges)}.")
    moments._require(1)
    comoment = moments._comoment
    alive = np.ones(moments.dim, dtype=bool)
    alive[moments.dead_units()] = False
    sa, sb = (slice(*ranges[n]) for n in nets)
    c_aa, c_bb, c_ab = (comoment[p, q].copy() for p, q in ((sa, sa), (sb, sb), (sa, sb)))
    alive_a, alive_b = alive[sa].copy(), alive[sb].copy()
    for block, rows, cols in ((c_aa, alive_a, alive_a), (c_bb, alive_b, alive_b)):
        block[~rows, :] = 0.0
        block[:, ~cols] = 0.0
    c_ab[~alive_a, :] = 0.0
    c_ab[:, ~alive_b] = 0.0
    return PairBlocks(
        (str(nets[0]), str(nets[1])),
        moments.count,
        c_aa,
        c_bb,
        c_ab,
        alive_a,
        alive_b,
        _kernel_products(moments, ranges, nets),
        str(getattr(moments, "product_precision", "float64")),
    )


def _kernel_products(moments: Moments, ranges: dict, nets: Sequence[str]) -> np.ndarray | None:
    if not isinstance(moments, KernelMoments):
        return None
    index = {}
    for net in nets:
        hits = [i for i, (k, r) in enumerate(moments.unit_ranges.items()) if r == ranges[net]]
        if not hits:
            return None
        index[net] = hits[0]
    s = moments.norm_products
    i, j = index[nets[0]], index[nets[1]]
    return np.array([s[i, i], s[j, j], s[i, j]])


def require_kernel(blocks: PairBlocks, what: str) -> np.ndarray:
    if blocks.norm_products is None:
        raise ConvergentError(
            f"{what} needs the kernel sums of a KernelMoments (per-sample |x|^2 |y|^2), which plain "
            "Moments lack: collect with kernel_sums=True, build KernelMoments yourself, or pass "
            "the two activation arrays."
        )
    return blocks.norm_products
