"""Per-unit top-k inputs: which inputs (and where in them) drive each unit most strongly."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from convergent.stats._state import StateField, Statistic


class TopK(Statistic):
    """For each of ``units`` units, the ``k`` largest activations seen, with the dataset index of the
    input and the flat spatial position (``-1`` where a unit has seen fewer than ``k`` samples).

    Pure data: :meth:`update` with a batch, :meth:`merge` with another shard. Ties are broken by the
    smaller dataset index, then the smaller position, so the result does not depend on batching.
    """

    kind = "convergent.TopK"
    noun = "top-k values"
    state_fields = (
        StateField(
            "value", "float64", "custom", "(units, k) largest activations, -inf if unfilled"
        ),
        StateField(
            "index", "int64", "custom", "(units, k) dataset index of each input, -1 if none"
        ),
        StateField(
            "position", "int64", "custom", "(units, k) flat position in the map, -1 if none"
        ),
    )

    def __init__(self, units: int, k: int = 9) -> None:
        if int(k) != k or k < 1:
            raise ValueError(
                f"The 'k' parameter of TopK must be an integer >= 1. Got {k!r} instead."
            )
        if isinstance(units, bool) or int(units) != units or units < 1:
            raise ValueError(
                f"The 'units' parameter of TopK must be an integer >= 1. Got {units!r} instead."
            )
        self.units, self.k = int(units), int(k)
        self.metadata: dict[str, Any] = {}
        self.value = np.full((self.units, self.k), -np.inf)
        self.index = np.full((self.units, self.k), -1, dtype=np.int64)
        self.position = np.full((self.units, self.k), -1, dtype=np.int64)

    def config(self) -> dict[str, Any]:
        return {"units": self.units, "k": self.k}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: (self.units, self.k) for name in ("value", "index", "position")}

    def state(self) -> dict[str, np.ndarray]:
        return {"value": self.value, "index": self.index, "position": self.position}

    def _set_state(self, arrays: Any) -> None:
        self.value = np.array(arrays["value"], dtype=np.float64)
        self.index = np.array(arrays["index"], dtype=np.int64)
        self.position = np.array(arrays["position"], dtype=np.int64)

    def _keep_best(self, value: np.ndarray, index: np.ndarray, position: np.ndarray) -> None:
        # empty slots carry index -1: push them behind real entries of equal value (-inf)
        idx_key = np.where(index < 0, np.iinfo(np.int64).max, index)
        order = np.lexsort((position, idx_key, -value), axis=-1)[:, : self.k]
        self.value = np.take_along_axis(value, order, axis=1)
        self.index = np.take_along_axis(index, order, axis=1)
        self.position = np.take_along_axis(position, order, axis=1)

    def update(
        self, values: torch.Tensor | np.ndarray, input_index: np.ndarray, position: np.ndarray
    ) -> TopK:
        """Add a batch: ``values`` (n, units); ``input_index`` and ``position`` (n,) per sample.

        Rows must be in (input index, position) order within the batch, as :func:`to_samples` makes
        them; this is what lets ties resolve exactly as a global sort would.
        """
        values = torch.as_tensor(values)
        n = values.shape[0]
        if values.ndim != 2 or values.shape[1] != self.units:
            raise ValueError(
                f"TopK.update expects values of shape (n, {self.units}). Got {tuple(values.shape)}."
            )
        if n == 0:
            return self
        # candidates: per unit, the batch's best k; among samples tied with the k-th value the
        # earliest rows win, which (rows being in input-then-position order) is what a one-pass sort
        # by (-value, index, position) would keep
        m = min(self.k, n)
        kth = torch.topk(values, m, dim=0).values[-1]
        above = values > kth
        tied = values == kth
        room = m - above.sum(dim=0)
        chosen = above | (tied & (torch.cumsum(tied, dim=0) <= room))
        unit_ids, rows = torch.nonzero(chosen.T, as_tuple=True)
        rows = rows.reshape(self.units, m).cpu().numpy()
        cand_val = (
            values.T.gather(1, torch.as_tensor(rows, device=values.device)).double().cpu().numpy()
        )
        input_index = np.asarray(input_index, dtype=np.int64)
        position = np.asarray(position, dtype=np.int64)
        self._keep_best(
            np.concatenate([self.value, cand_val], axis=1),
            np.concatenate([self.index, input_index[rows]], axis=1),
            np.concatenate([self.position, position[rows]], axis=1),
        )
        return self

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, TopK):
            raise TypeError(f"TopK.merge expects a TopK. Got {type(other).__name__} instead.")
        if (other.units, other.k) != (self.units, self.k):
            raise ValueError(
                f"Cannot merge TopK of {other.units} units (k={other.k}) into {self.units} units "
                f"(k={self.k})."
            )

    def _merge_custom(self, other: TopK) -> None:
        self._keep_best(
            np.concatenate([self.value, other.value], axis=1),
            np.concatenate([self.index, other.index], axis=1),
            np.concatenate([self.position, other.position], axis=1),
        )

    def merge(self, other: TopK) -> TopK:
        """Combine with another shard's TopK (same units and k); returns ``self``."""
        return super().merge(other)

    def arrays(self) -> dict[str, np.ndarray]:
        return self.state()

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TopK:
        units, k = np.asarray(arrays["value"]).shape
        return cls.from_state({"units": units, "k": k}, arrays)

    @classmethod
    def _from_file(cls, path: Any, arrays: dict, meta: dict) -> TopK:
        # -inf marks an unfilled slot: the one non-finite value a TopK may hold
        checked = dict(arrays)
        if "value" in checked:
            checked["value"] = np.where(np.isneginf(checked["value"]), 0.0, checked["value"])
        out = super()._from_file(path, checked, meta)
        out.value = np.array(arrays["value"], dtype=np.float64)
        return out
