"""Whole-layer similarity from the same single pass: CKA (linear, debiased), CCA / SVCCA / PWCCA,
shape metrics with rotations or unit permutations, RSA and mutual k-NN on a bounded input sample,
null levels and held-out scores.

Every metric is a function of the joint moments (a ``Moments`` over several nets' units with their
unit ranges) or of two plain arrays, through the same code (arrays -> moments -> metric).
:func:`layer_similarity` computes them all for one layer.
"""

from convergent.similarity._accumulate import KernelMoments
from convergent.similarity._buffer import SampleBuffer
from convergent.similarity._cca import CCAResult, cca, cca_held_out, pwcca, svcca
from convergent.similarity._cka import debiased_cka, layer_cka_matrix, linear_cka
from convergent.similarity._joint import PairBlocks, joint_moments, pair_blocks
from convergent.similarity._layer import (
    METRICS,
    SimilaritySettings,
    layer_similarity,
    pair_similarity,
    pairwise_matrix,
)
from convergent.similarity._minibatch import MinibatchCKA, unbiased_hsic_matrix
from convergent.similarity._null import (
    ShuffledPairs,
    held_out_similarity,
    init_null,
    shuffled_null,
)
from convergent.similarity._observers import (
    FlatMinibatchCKA,
    LayerSampleBuffers,
    PooledLayerMoments,
    ShuffledLayerPairs,
    block_name,
)
from convergent.similarity._procrustes import (
    BasisAlignment,
    ShapeResult,
    basis_alignment,
    shape_distance,
    shape_held_out,
)
from convergent.similarity._result import PairScore, ScoreMatrix
from convergent.similarity._rsa import correlation_rdm, mutual_knn, rsa

__all__ = [
    "METRICS",
    "BasisAlignment",
    "CCAResult",
    "FlatMinibatchCKA",
    "KernelMoments",
    "LayerSampleBuffers",
    "MinibatchCKA",
    "PairBlocks",
    "PairScore",
    "PooledLayerMoments",
    "SampleBuffer",
    "ScoreMatrix",
    "ShapeResult",
    "ShuffledLayerPairs",
    "ShuffledPairs",
    "SimilaritySettings",
    "basis_alignment",
    "block_name",
    "cca",
    "cca_held_out",
    "correlation_rdm",
    "debiased_cka",
    "held_out_similarity",
    "init_null",
    "joint_moments",
    "layer_cka_matrix",
    "layer_similarity",
    "linear_cka",
    "mutual_knn",
    "pair_blocks",
    "pair_similarity",
    "pairwise_matrix",
    "pwcca",
    "rsa",
    "shape_distance",
    "shape_held_out",
    "shuffled_null",
    "svcca",
    "unbiased_hsic_matrix",
]
