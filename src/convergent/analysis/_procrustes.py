"""Shape metrics (Williams et al. 2021, "Generalized shape metrics") from the joint moments, with
rotations or with unit permutations, and the gap between the two ("basis alignment").

Each net's centred activations ``X`` are partially whitened with netrep's ``alpha`` convention,
``X_w = X Z`` with ``Z = V diag(alpha + (1 - alpha) lam^{-1/2}) V^T`` from the eigen-decomposition
of ``X^T X = V diag(lam) V^T`` (the centred co-moment, not divided by n; eigenvalues clipped at
``eig_tol = 1e-7``): ``alpha = 1`` aligns by rotations only (Procrustes), ``alpha = 0`` by any
invertible linear map (a CCA-like metric); for 0 < alpha < 1 the mixing depends on the data's scale
exactly as in netrep. netrep's variance-preserving rescaling of ``Z`` is a scalar and cancels below.

The alignment ``Q`` maximises ``<X_w, Y_w Q>``:

- ``group='rotation'``: the best orthogonal map, ``<.> = ||X_w^T Y_w||_*`` (nuclear norm);
- ``group='permutation'``: the best one-to-one matching of units, ``linear_sum_assignment`` on
  ``X_w^T Y_w`` (:func:`~convergent.analysis.bipartite_matching`), or a given matching.

With ``cos = <X_w, Y_w Q> / (||X_w||_F ||Y_w||_F)`` the **angular shape metric** is ``arccos(cos)``
in [0, pi] (a metric: zero self-distance, symmetric, triangle inequality) and the **Procrustes
distance** is ``||X_w/||X_w|| - Y_w Q/||Y_w|| ||_F = sqrt(2 - 2 cos)`` in [0, 2]: both are invariant
to shifts and isotropic scaling; to rotations of either net for the rotation group; to permutations
of units for the permutation group. Unequal widths are zero-padded as netrep does; that padding
changes neither quantity, so it is implicit (rectangular blocks, rectangular matching: the wider
net's unmatched units are matched to padded zeros). Dead units are exactly zero, so with
permutations they act like that padding (a unit may be matched with a dead unit rather than with
a live one it anti-correlates with). A net with no
variance has ``cos = 0`` (``defined=False``), never NaN. Near 0 the angle is accurate to ~1e-8
(``arccos`` of ``1 - 1e-16``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convergent.analysis._joint import PairBlocks, pair_blocks
from convergent.analysis._one_to_one import MatchResult, bipartite_matching
from convergent.stats._scores import _jsonable

GROUPS = ("rotation", "permutation")
EIG_TOL = 1e-7


@dataclass(frozen=True)
class ShapeAlignment:
    """A fitted alignment: whitening of each net, then the rotation or matching.

    ``rotation_a`` / ``rotation_b`` (d, r) for the rotation group; ``partner`` (d_A,) for the
    permutation group (the B unit each A unit is matched with, -1 if none).
    """

    group: str
    alpha: float
    whiten_a: np.ndarray
    whiten_b: np.ndarray
    rotation_a: np.ndarray | None = None
    rotation_b: np.ndarray | None = None
    partner: np.ndarray | None = None

    def overlap(self, blocks: PairBlocks) -> tuple[float, float, float]:
        """(aligned inner product, ||X_w||_F, ||Y_w||_F) of ``blocks`` under this alignment."""
        if blocks.widths != (self.whiten_a.shape[0], self.whiten_b.shape[0]):
            raise ValueError(
                f"The data have widths {blocks.widths}; the alignment was fitted on widths "
                f"{(self.whiten_a.shape[0], self.whiten_b.shape[0])}. Score on the same nets' units."
            )
        n = blocks.count
        cross = self.whiten_a @ (blocks.c_ab / n) @ self.whiten_b
        if self.group == "rotation":
            inner = float(np.sum(self.rotation_a * (cross @ self.rotation_b)))
        else:
            rows = np.flatnonzero(self.partner >= 0)
            inner = float(cross[rows, self.partner[rows]].sum())
        norm_a = _norm(self.whiten_a, blocks.c_aa / n)
        norm_b = _norm(self.whiten_b, blocks.c_bb / n)
        return inner, norm_a, norm_b


def _norm(z: np.ndarray, c: np.ndarray) -> float:
    # ||X Z||_F^2 = tr(Z^T C Z)
    return float(np.sqrt(max(np.sum(z * (c @ z)), 0.0)))


@dataclass(frozen=True)
class ShapeResult:
    """Shape distances of two nets under one alignment group.

    Attributes
    ----------
    group : {'rotation', 'permutation'}
    alpha : float
    angular : float
        ``arccos(cos)``, radians in [0, pi].
    procrustes : float
        ``sqrt(2 - 2 cos)``, in [0, 2].
    cosine : float
        Normalised inner product of the aligned (whitened) representations.
    alignment : ShapeAlignment
        What was fitted (score it on other data with :func:`shape_held_out`).
    """

    group: str
    alpha: float
    angular: float
    procrustes: float
    cosine: float
    nets: tuple[str, str]
    samples: int
    alignment: ShapeAlignment
    defined: bool = True
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "group": self.group,
                "alpha": self.alpha,
                "angular": self.angular,
                "procrustes": self.procrustes,
                "cosine": self.cosine,
                "nets": list(self.nets),
                "samples": self.samples,
                "defined": self.defined,
                "note": self.note,
                **self.settings,
            }
        )


def _whitening(c: np.ndarray, alpha: float) -> np.ndarray:
    """netrep's partial whitening matrix of a centred co-moment block (without its scalar)."""
    if alpha > 1 - EIG_TOL:
        return np.eye(c.shape[0])
    lam, vec = np.linalg.eigh(c)
    lam = np.maximum(lam, EIG_TOL)
    d = alpha + (1 - alpha) / np.sqrt(lam)
    return (vec * d) @ vec.T


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float, np.floating)) and 0 <= alpha <= 1):
        raise ValueError(f"The 'alpha' parameter must be in [0, 1]. Got {alpha!r} instead.")
    return float(alpha)


def _partner_of(matching: Any, widths: tuple[int, int]) -> np.ndarray:
    partner = matching.partner if isinstance(matching, MatchResult) else np.asarray(matching)
    partner = np.asarray(partner)
    if partner.shape != (widths[0],) or not np.issubdtype(partner.dtype, np.integer):
        raise ValueError(
            f"The 'matching' parameter must be a MatchResult or an integer array of shape "
            f"({widths[0]},) giving each A unit's B partner (-1: none). Got {partner.shape} "
            f"{partner.dtype} instead."
        )
    taken = partner[partner >= 0]
    if (partner >= widths[1]).any() or (partner < -1).any() or taken.size != np.unique(taken).size:
        raise ValueError(
            f"The 'matching' parameter must match each A unit to a distinct B unit in "
            f"[0, {widths[1]}) or to -1."
        )
    return partner.astype(np.int64)


def fit_shape(
    blocks: PairBlocks, *, alpha: float = 1.0, group: str = "rotation", matching: Any = None
) -> ShapeAlignment:
    """Fit the whitening and the alignment of a pair (see :func:`shape_distance`)."""
    alpha = _check_alpha(alpha)
    if group not in GROUPS:
        raise ValueError(f"The 'group' parameter must be one of {GROUPS}. Got {group!r} instead.")
    if matching is not None and group != "permutation":
        raise ValueError("A 'matching' only applies to group='permutation'.")
    z_a, z_b = _whitening(blocks.c_aa, alpha), _whitening(blocks.c_bb, alpha)
    cross = z_a @ (blocks.c_ab / blocks.count) @ z_b
    if group == "rotation":
        u, _, vt = np.linalg.svd(cross, full_matrices=False)
        return ShapeAlignment(group, alpha, z_a, z_b, rotation_a=u, rotation_b=vt.T)
    if matching is None:
        partner = bipartite_matching(cross).partner
    elif isinstance(matching, str):
        if matching != "corr":
            raise ValueError(
                f"The 'matching' parameter must be None, 'corr', a MatchResult or a partner "
                f"array. Got {matching!r} instead."
            )
        partner = bipartite_matching(_corr_block(blocks)).partner
    else:
        partner = _partner_of(matching, blocks.widths)
    return ShapeAlignment(group, alpha, z_a, z_b, partner=partner)


def _corr_block(blocks: PairBlocks) -> np.ndarray:
    sd_a = np.sqrt(np.clip(np.diag(blocks.c_aa), 0.0, None))
    sd_b = np.sqrt(np.clip(np.diag(blocks.c_bb), 0.0, None))
    inv_a = np.divide(1.0, sd_a, out=np.zeros_like(sd_a), where=sd_a > 0)
    inv_b = np.divide(1.0, sd_b, out=np.zeros_like(sd_b), where=sd_b > 0)
    return np.clip(blocks.c_ab * np.outer(inv_a, inv_b), -1.0, 1.0)


def score_shape(alignment: ShapeAlignment, blocks: PairBlocks, **settings: Any) -> ShapeResult:
    """Distances of ``blocks`` under a fitted alignment."""
    inner, norm_a, norm_b = alignment.overlap(blocks)
    common = (blocks.names, blocks.count, alignment)
    if norm_a <= 0 or norm_b <= 0:
        note = "undefined: a net has no variance (all its units dead or constant); cos taken as 0"
        return ShapeResult(
            alignment.group,
            alignment.alpha,
            float(np.pi / 2),
            float(np.sqrt(2.0)),
            0.0,
            *common,
            False,
            note,
            settings,
        )
    cos = float(np.clip(inner / (norm_a * norm_b), -1.0, 1.0))
    return ShapeResult(
        alignment.group,
        alignment.alpha,
        float(np.arccos(cos)),
        float(np.sqrt(max(2.0 - 2.0 * cos, 0.0))),
        cos,
        *common,
        True,
        "",
        settings,
    )


def shape_distance(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
    alpha: float = 1.0,
    group: str = "rotation",
    matching: Any = None,
) -> ShapeResult:
    """Angular shape metric and Procrustes distance of two nets (module docstring).

    Parameters
    ----------
    x, y, nets, unit_ranges
        Joint moments (and which two nets), or two (n, d) arrays; as in :func:`linear_cka`.
    alpha : float in [0, 1]
        netrep's regularisation: 1 = rotations only (orthogonal Procrustes), 0 = full whitening.
    group : {'rotation', 'permutation'}
        Align by the best rotation or by a one-to-one matching of units.
    matching : None, 'corr', MatchResult or int array (d_A,), optional
        For the permutation group: None fits the best matching of the whitened units (the
        minimum over permutations); 'corr' uses Li et al.'s bipartite matching of correlations;
        a fitted matching (e.g. from other data) is used as given.
    """
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    alignment = fit_shape(blocks, alpha=alpha, group=group, matching=matching)
    return score_shape(alignment, blocks)


def shape_held_out(
    fitted: ShapeResult,
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
) -> ShapeResult:
    """Distances on other data under the whitening and alignment fitted in ``fitted``."""
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    return score_shape(fitted.alignment, blocks, held_out=True)


@dataclass(frozen=True)
class BasisAlignment:
    """How much of two nets' rotation-invariant similarity their units' own basis carries.

    Attributes
    ----------
    rotation, permutation : ShapeResult
        The same distance under the best rotation and under the unit matching.
    angular_gap, procrustes_gap : float
        Permutation-constrained minus rotation-invariant distance (>= 0 with the best matching):
        0 when matching units already achieves the best rotation (a shared, aligned basis).
    ratio : float
        ``cos_perm / cos_rot``: the share of the rotation-aligned overlap a matching of units
        reaches (1: aligned basis; 0 when undefined).
    """

    rotation: ShapeResult
    permutation: ShapeResult

    @property
    def angular_gap(self) -> float:
        return self.permutation.angular - self.rotation.angular

    @property
    def procrustes_gap(self) -> float:
        return self.permutation.procrustes - self.rotation.procrustes

    @property
    def ratio(self) -> float:
        rot = self.rotation.cosine
        return float(self.permutation.cosine / rot) if rot > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "alpha": self.rotation.alpha,
                "angular_rotation": self.rotation.angular,
                "angular_permutation": self.permutation.angular,
                "angular_gap": self.angular_gap,
                "procrustes_rotation": self.rotation.procrustes,
                "procrustes_permutation": self.permutation.procrustes,
                "procrustes_gap": self.procrustes_gap,
                "ratio": self.ratio,
                "defined": self.rotation.defined and self.permutation.defined,
            }
        )


def basis_alignment(
    x: Any,
    y: Any = None,
    *,
    nets: tuple[str, str] | None = None,
    unit_ranges: Mapping[str, Any] | None = None,
    alpha: float = 1.0,
    matching: Any = None,
) -> BasisAlignment:
    """The rotation-invariant and the permutation-constrained shape distances and their gap."""
    blocks = pair_blocks(x, y, nets=nets, unit_ranges=unit_ranges)
    rot = score_shape(fit_shape(blocks, alpha=alpha, group="rotation"), blocks)
    perm = score_shape(
        fit_shape(blocks, alpha=alpha, group="permutation", matching=matching), blocks
    )
    return BasisAlignment(rot, perm)
