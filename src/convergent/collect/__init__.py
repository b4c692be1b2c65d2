"""Collection: forward hooks, layer outputs as (samples, units), the one pass over the data that
feeds every statistic (:func:`collect`), observers that add statistics to that pass, and
:func:`collect_run`, which turns nets + a dataset split into a statistics directory."""

from convergent.collect._hooks import capture, resolve_layers
from convergent.collect._loop import BatchView, LayerAccumulator, collect, iter_batches
from convergent.collect._mi_pass import collect_mutual_information
from convergent.collect._observers import (
    FlatMinibatchCKA,
    LayerSampleBuffers,
    MutualInformationObserver,
    PooledLayerMoments,
    ScoresObserver,
    ShuffledLayerPairs,
)
from convergent.collect._patches import crop, receptive_box, receptive_boxes, topk_patches
from convergent.collect._run import MI_PAIRS, collect_run, stats_summary
from convergent.collect._samples import SPATIAL_MODES, is_channels_first, to_samples
from convergent.stats import block_name

__all__ = [
    "MI_PAIRS",
    "SPATIAL_MODES",
    "BatchView",
    "FlatMinibatchCKA",
    "LayerAccumulator",
    "LayerSampleBuffers",
    "MutualInformationObserver",
    "PooledLayerMoments",
    "ScoresObserver",
    "ShuffledLayerPairs",
    "block_name",
    "capture",
    "collect",
    "collect_mutual_information",
    "collect_run",
    "crop",
    "is_channels_first",
    "iter_batches",
    "receptive_box",
    "receptive_boxes",
    "resolve_layers",
    "stats_summary",
    "to_samples",
    "topk_patches",
]
