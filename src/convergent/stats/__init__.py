"""Statistics as pure data: every streaming, exactly mergeable statistic of activations, and the
statistics directory (``stats/``) that holds them.

- :class:`Moments` (count, mean, centred co-moment), :class:`KernelMoments` (+ the sums that make
  debiased CKA exact), :class:`TopK` (each unit's strongest inputs), :class:`JointHistogram` (mutual
  information), :class:`SampleBuffer` (a bounded, deterministic input sample), :class:`MinibatchCKA`,
  :class:`ShuffledPairs` (the shuffled-input null);
- :class:`Statistics` / :class:`LayerStatistics`: what one collection pass produces, saved as a
  directory;
- :func:`merge_all` / :func:`all_merge`: exact merges in a list or across ``torch.distributed`` ranks.
"""

from convergent.stats._accuracy import ClassifierScores
from convergent.stats._buffer import SampleBuffer
from convergent.stats._directory import (
    FIT_DIR,
    STATS_FORMAT,
    LayerStatistics,
    Statistics,
    block_name,
    file_stem,
    pair_key,
)
from convergent.stats._distributed import all_merge, merge_all
from convergent.stats._histogram import (
    DEFAULT_MAX_BYTES,
    JointHistogram,
    digitize,
    quantile_edges,
)
from convergent.stats._kernel import KernelMoments
from convergent.stats._minibatch import MinibatchCKA, unbiased_hsic_matrix
from convergent.stats._moments import DEAD_RTOL, Moments
from convergent.stats._scores import PairScore, ScoreMatrix
from convergent.stats._shuffled import ShuffledPairs
from convergent.stats._state import StateField, Statistic, load_statistic
from convergent.stats._topk import TopK

__all__ = [
    "DEAD_RTOL",
    "STATS_FORMAT",
    "ClassifierScores",
    "DEFAULT_MAX_BYTES",
    "FIT_DIR",
    "JointHistogram",
    "KernelMoments",
    "LayerStatistics",
    "MinibatchCKA",
    "Moments",
    "PairScore",
    "SampleBuffer",
    "ScoreMatrix",
    "ShuffledPairs",
    "StateField",
    "Statistic",
    "Statistics",
    "TopK",
    "all_merge",
    "block_name",
    "digitize",
    "file_stem",
    "load_statistic",
    "merge_all",
    "pair_key",
    "quantile_edges",
    "unbiased_hsic_matrix",
]
