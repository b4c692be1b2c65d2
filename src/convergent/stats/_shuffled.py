"""``ShuffledPairs``: joint moments of K nets with net k's samples paired with *other* inputs (the
shuffled-input null level of every similarity metric), streaming and mergeable.

Net k's rows are taken from k inputs further along in the same batch (cyclically), so every pair of
nets is mispaired and positions within a map stay aligned; batches with fewer inputs than nets are
skipped (counted). Within-batch pairing assumes batches hold unrelated inputs (shuffled data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from convergent.stats._kernel import KernelMoments
from convergent.stats._state import StateField


class ShuffledPairs(KernelMoments):
    """Joint moments of K nets with net k's samples paired with other inputs (pure data).

    A :class:`KernelMoments` (give it, or its alias :attr:`moments`, to any metric) whose
    ``update`` mispairs the nets first, plus the count of skipped batches.

    Parameters
    ----------
    unit_ranges : mapping of net to (start, stop)
        The nets' units among the joint units (in order; net k is rolled by k inputs).
    exact : bool
        As for ``Moments``.

    Attributes
    ----------
    skipped : int
        Batches with fewer inputs than nets.
    """

    kind = "convergent.ShuffledPairs"
    state_fields = KernelMoments.state_fields + (
        StateField("skipped", "int64", "sum", "(1,) batches with fewer inputs than nets"),
    )

    def __init__(
        self, unit_ranges: Mapping[str, Any], *, exact: bool = False, dim: int | None = None
    ) -> None:
        ranges = {str(k): (int(v[0]), int(v[1])) for k, v in unit_ranges.items()}
        if not ranges:
            raise ValueError("The 'unit_ranges' parameter of ShuffledPairs must name the nets.")
        top = max(stop for _, stop in ranges.values())
        super().__init__(top if dim is None else int(dim), ranges, exact=exact)
        self.skipped = 0

    @property
    def moments(self) -> ShuffledPairs:
        """The mispaired joint moments (this object; kept for readability at call sites)."""
        return self

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super()._shapes(), "skipped": (1,)}

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "skipped": np.array([self.skipped], dtype=np.int64)}

    def _set_state(self, arrays: Any) -> None:
        super()._set_state(arrays)
        self.skipped = int(np.asarray(arrays["skipped"]).reshape(-1)[0])

    def update(self, x: Any, samples_per_input: int = 1) -> ShuffledPairs:
        """Add a batch of joint samples (n, D), input-major: rows ``i * P + p`` are input i."""
        n = int(x.shape[0])
        if samples_per_input < 1 or n % samples_per_input:
            raise ValueError(
                f"A batch of {n} samples is not a whole number of inputs of {samples_per_input} "
                "samples each."
            )
        ranges = list(self.unit_ranges.values())
        if n // samples_per_input < len(ranges):
            self.skipped += 1
            return self
        parts = []
        for k, (start, stop) in enumerate(ranges):
            shift = k * samples_per_input
            if isinstance(x, torch.Tensor):
                parts.append(torch.roll(x[:, start:stop], shift, dims=0))
            else:
                parts.append(np.roll(np.asarray(x)[:, start:stop], shift, axis=0))
        joint = torch.cat(parts, 1) if isinstance(x, torch.Tensor) else np.concatenate(parts, 1)
        super().update(joint)
        return self

    def _check_mergeable(self, other: Any) -> None:
        if not isinstance(other, ShuffledPairs):
            raise TypeError(
                f"ShuffledPairs.merge expects a ShuffledPairs. Got {type(other).__name__}."
            )
        super()._check_mergeable(other)

    def merge(self, other: ShuffledPairs) -> ShuffledPairs:
        """Fold in another shard (same nets); returns ``self``."""
        return super().merge(other)
