"""The paper's analyses as pure functions of statistics (or arrays): one-to-one matching, mutual
information, sparse one-to-many prediction, many-to-many spectral clustering, mean activations."""

from convergent.analysis._layer import (
    AnalysisSettings,
    LayerResult,
    analyze_layer,
    layer_summary_table,
    net_pairs,
    pair_key,
    summary_row,
)
from convergent.analysis._means import MeanActivations, compare_means
from convergent.analysis._mi import (
    JointHistogram,
    MutualInformation,
    mutual_information,
    mutual_information_matrix,
    quantile_edges,
)
from convergent.analysis._one_to_one import (
    MatchResult,
    PairMatching,
    bipartite_matching,
    compare_pair,
    semi_matching,
    summarize_pairs,
    within_net_baseline,
)
from convergent.analysis._sparse import (
    LassoFit,
    SparsePredictionResult,
    default_penalties,
    errors_at_nonzero,
    lasso_gram,
    sparse_prediction,
)
from convergent.analysis._spectral import (
    ClusterPairResult,
    PairClustering,
    affinity_matrix,
    cluster_pair,
    spectral_clustering,
)

__all__ = [
    "AnalysisSettings",
    "ClusterPairResult",
    "JointHistogram",
    "LassoFit",
    "LayerResult",
    "MatchResult",
    "MeanActivations",
    "MutualInformation",
    "PairClustering",
    "PairMatching",
    "SparsePredictionResult",
    "affinity_matrix",
    "analyze_layer",
    "bipartite_matching",
    "cluster_pair",
    "compare_means",
    "compare_pair",
    "default_penalties",
    "errors_at_nonzero",
    "lasso_gram",
    "layer_summary_table",
    "mutual_information",
    "mutual_information_matrix",
    "net_pairs",
    "pair_key",
    "quantile_edges",
    "semi_matching",
    "sparse_prediction",
    "spectral_clustering",
    "summarize_pairs",
    "summary_row",
    "within_net_baseline",
]
