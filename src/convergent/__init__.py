"""convergent: do different neural networks learn the same representations?

Public API (re-exported here; implementation lives in private modules of the stage folders).
"""

from convergent._errors import ConvergentError, CorruptFileError, DataNotFoundError
from convergent._version import __version__

__all__ = [
    "ConvergentError",
    "CorruptFileError",
    "DataNotFoundError",
    "__version__",
]
