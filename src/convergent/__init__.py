"""convergent: do different neural networks learn the same representations?

Public API (re-exported here; implementations live in private modules of the stage folders):

- statistics: :class:`Moments`, :func:`collect` (one pass over data, joint moments per layer)
- one-to-one: :func:`semi_matching`, :func:`bipartite_matching`, :func:`mutual_information`
- one-to-many: :func:`sparse_prediction`
- many-to-many: :func:`spectral_clustering`
"""

from convergent._errors import ConvergentError, CorruptFileError, DataNotFoundError
from convergent._version import __version__
from convergent.analysis import (
    bipartite_matching,
    mutual_information,
    semi_matching,
    sparse_prediction,
    spectral_clustering,
)
from convergent.collect import collect
from convergent.stats import Moments, Statistics

__all__ = [
    "ConvergentError",
    "CorruptFileError",
    "DataNotFoundError",
    "Moments",
    "Statistics",
    "__version__",
    "bipartite_matching",
    "collect",
    "mutual_information",
    "semi_matching",
    "sparse_prediction",
    "spectral_clustering",
]
