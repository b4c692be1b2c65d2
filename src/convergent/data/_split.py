"""A deterministic, stratified train/test split for data that comes without one."""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def stratified_split(
    labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split, the same for the same labels and seed.

    The test split gets ``ceil(N * test_fraction)`` examples (as in scikit-learn), shared out over
    the classes in proportion to their sizes (largest remainder first, ties to the smaller label);
    which examples of a class go to test is drawn with ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    labels : np.ndarray, shape (N,)
        Class labels (any sortable values).
    test_fraction : float
        Fraction of the examples held out, in (0, 1).
    seed : int
        Seed of the draw.

    Returns
    -------
    train, test : np.ndarray of int64
        Sorted indices into ``labels``; together they are ``0 .. N-1`` exactly once.
    """
    labels = np.asarray(labels)
    if not 0 < test_fraction < 1:
        raise ValueError(f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction}.")
    n = len(labels)
    n_test = int(np.ceil(n * test_fraction))
    if n_test == 0 or n_test == n:
        raise ValueError(
            f"Cannot hold out a test fraction of {test_fraction} from {n} examples: one split "
            "would be empty. Give more examples or an explicit test split."
        )
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * test_fraction
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(-(quota - take), kind="stable")
    extra = min(max(n_test - int(take.sum()), 0), len(classes))  # clip guards float rounding
    take[by_remainder[:extra]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(inverse == k))[: take[k]] for k in range(len(classes))]
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
