"""Recording activations: forward hooks, (samples, units) reshaping, top-k inputs, the collection loop
(:func:`collect`) and the statistics directory it produces."""

from convergent.record._collect import collect, iter_batches
from convergent.record._hooks import capture, resolve_layers
from convergent.record._mi_pass import collect_mutual_information
from convergent.record._run import collect_run, stats_summary
from convergent.record._samples import SPATIAL_MODES, to_samples
from convergent.record._statistics import LayerStatistics, Statistics
from convergent.record._topk import TopK

__all__ = [
    "SPATIAL_MODES",
    "LayerStatistics",
    "Statistics",
    "TopK",
    "capture",
    "collect",
    "collect_mutual_information",
    "collect_run",
    "iter_batches",
    "resolve_layers",
    "stats_summary",
    "to_samples",
]
