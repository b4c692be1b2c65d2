"""Alignment of whole networks: permutation groups found by tracing (attention heads included),
matching (activations or weights), portable permutation files, interpolation and its barrier,
REPAIR, merging several nets, and ZipIt!-style merging within and across two nets."""

from convergent.align._activations import activation_matching, matching_layers
from convergent.align._groups import (
    PermutationGroup,
    PermutationSpec,
    UnsupportedOperationError,
    apply_permutation,
    check_permutation_invariance,
    find_permutation_groups,
)
from convergent.align._interpolate import (
    BARRIER_DEFINITIONS,
    BarrierResult,
    barrier,
    interpolate_state,
    interpolation_curve,
    repair,
    reset_batchnorm,
)
from convergent.align._match import (
    Alignment,
    match_from_similarities,
    similarity_from_moments,
    weight_matching,
    weight_objective,
)
from convergent.align._merge import (
    MergeResult,
    align_zoo,
    average_states,
    evaluate_ensemble,
    match_pair,
    merge_models,
)
from convergent.align._permfile import (
    PermutationFile,
    PermutationMismatchError,
    apply_permutation_file,
    check_fits,
    load_permutation,
    permutation_file,
    save_permutation,
)
from convergent.align._plot import plot_interpolation
from convergent.align._repair import RepairPoint, point_statistics, repair_points
from convergent.align._run import align_run, interpolate_run, merge_run
from convergent.align._zip import ZippedNets, ZipResult, greedy_pairs, zip_models

__all__ = [
    "BARRIER_DEFINITIONS",
    "Alignment",
    "BarrierResult",
    "MergeResult",
    "PermutationFile",
    "PermutationGroup",
    "PermutationMismatchError",
    "PermutationSpec",
    "RepairPoint",
    "UnsupportedOperationError",
    "ZipResult",
    "ZippedNets",
    "activation_matching",
    "align_run",
    "align_zoo",
    "apply_permutation",
    "apply_permutation_file",
    "average_states",
    "barrier",
    "check_fits",
    "check_permutation_invariance",
    "evaluate_ensemble",
    "find_permutation_groups",
    "interpolate_run",
    "greedy_pairs",
    "interpolate_state",
    "interpolation_curve",
    "load_permutation",
    "match_from_similarities",
    "match_pair",
    "matching_layers",
    "merge_models",
    "merge_run",
    "permutation_file",
    "plot_interpolation",
    "point_statistics",
    "repair",
    "repair_points",
    "reset_batchnorm",
    "save_permutation",
    "similarity_from_moments",
    "weight_matching",
    "weight_objective",
    "zip_models",
]
