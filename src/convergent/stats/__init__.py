"""Statistics as pure data: streaming, exactly mergeable moments of activations."""

from convergent.stats._comoments import DEAD_RTOL, Moments
from convergent.stats._distributed import all_merge, merge_all

__all__ = ["DEAD_RTOL", "Moments", "all_merge", "merge_all"]
