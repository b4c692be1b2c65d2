"""The analyses as pure functions of statistics (or arrays): the paper's one-to-one matching, mutual
information, sparse one-to-many prediction, many-to-many spectral clustering and mean activations,
and the whole-layer similarity metrics (CKA, CCA family, shape metrics, RSA, null levels)."""

from convergent.analysis._cca import CCAResult, cca, cca_held_out, pwcca, svcca
from convergent.analysis._cka import debiased_cka, layer_by_layer_cka, layer_cka_matrix, linear_cka
from convergent.analysis._joint import PairBlocks, joint_moments, pair_blocks
from convergent.analysis._layer import (
    AnalysisSettings,
    Clusters,
    LayerAnalysis,
    MutualInformationMatching,
    OneToMany,
    OneToOne,
    PairAnalysis,
    SparseAtK,
    analyze_layer,
    array_field,
    net_pairs,
    pair_key,
)
from convergent.analysis._means import MeanActivations, compare_means
from convergent.analysis._mi import (
    JointHistogram,
    MutualInformation,
    mutual_information,
    mutual_information_matrix,
    quantile_edges,
)
from convergent.analysis._null import held_out_similarity, init_null, shuffled_null
from convergent.analysis._one_to_one import (
    MatchResult,
    PairMatching,
    bipartite_matching,
    compare_pair,
    rotation_control,
    semi_matching,
    summarize_pairs,
    within_net_baseline,
)
from convergent.analysis._procrustes import (
    BasisAlignment,
    ShapeResult,
    basis_alignment,
    shape_distance,
    shape_held_out,
)
from convergent.analysis._refit import REFIT_CONVENTION, REFIT_LABEL, SupportRefit
from convergent.analysis._rsa import correlation_rdm, mutual_knn, rsa
from convergent.analysis._similarity import (
    METRICS,
    SimilaritySettings,
    layer_similarity,
    pair_similarity,
    pairwise_matrix,
    similarity_from_pairs,
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

#: the former name of :class:`LayerAnalysis`
LayerResult = LayerAnalysis

__all__ = [
    "METRICS",
    "REFIT_CONVENTION",
    "REFIT_LABEL",
    "AnalysisSettings",
    "BasisAlignment",
    "CCAResult",
    "ClusterPairResult",
    "Clusters",
    "JointHistogram",
    "LassoFit",
    "LayerAnalysis",
    "LayerResult",
    "MatchResult",
    "MeanActivations",
    "MutualInformation",
    "MutualInformationMatching",
    "OneToMany",
    "OneToOne",
    "PairAnalysis",
    "PairBlocks",
    "PairClustering",
    "PairMatching",
    "ShapeResult",
    "SimilaritySettings",
    "SparseAtK",
    "SparsePredictionResult",
    "SupportRefit",
    "affinity_matrix",
    "analyze_layer",
    "array_field",
    "basis_alignment",
    "bipartite_matching",
    "cca",
    "cca_held_out",
    "cluster_pair",
    "compare_means",
    "compare_pair",
    "correlation_rdm",
    "debiased_cka",
    "default_penalties",
    "errors_at_nonzero",
    "held_out_similarity",
    "init_null",
    "joint_moments",
    "lasso_gram",
    "layer_by_layer_cka",
    "layer_cka_matrix",
    "layer_similarity",
    "linear_cka",
    "mutual_information",
    "mutual_information_matrix",
    "mutual_knn",
    "net_pairs",
    "pair_blocks",
    "pair_key",
    "pair_similarity",
    "pairwise_matrix",
    "pwcca",
    "quantile_edges",
    "rsa",
    "rotation_control",
    "semi_matching",
    "shape_distance",
    "shape_held_out",
    "shuffled_null",
    "similarity_from_pairs",
    "sparse_prediction",
    "spectral_clustering",
    "summarize_pairs",
    "svcca",
    "within_net_baseline",
]
