"""Alignment of whole networks: permutation groups found by tracing, applying permutations."""

from convergent.align._groups import (
    PermutationGroup,
    PermutationSpec,
    UnsupportedOperationError,
    apply_permutation,
    check_permutation_invariance,
    find_permutation_groups,
)

__all__ = [
    "PermutationGroup",
    "PermutationSpec",
    "UnsupportedOperationError",
    "apply_permutation",
    "check_permutation_invariance",
    "find_permutation_groups",
]
