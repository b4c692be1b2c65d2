"""Token inputs for text models: named integer arrays (``input_ids``, ``attention_mask``, ...) from
a ``.npz`` file or a directory of ``.npy`` files, read with ``allow_pickle=False``.

Every array but ``labels`` is one keyword argument of the models' forward, with one row per input
(N, T); ``labels`` (N,), when present, scores the nets. An optional vocabulary file (one token per
line, as BERT's ``vocab.txt``) lets reports show tokens rather than ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convergent._errors import CorruptFileError, DataNotFoundError
from convergent._io import sha256_file

LABELS = "labels"


@dataclass
class TokenInputs:
    """Named input arrays for text models.

    Attributes
    ----------
    arrays : dict of str to ndarray
        (N, T) integer arrays (or (N,) / (N, ...) of any numeric dtype), the models' keyword
        arguments.
    labels : ndarray or None
        (N,) int64 class labels.
    source : str
        The file or directory read.
    sha256 : str
        Checksum of what was read (of the ``.npz``, or of the ``.npy`` files in name order).
    vocab : list of str, optional
        Token strings by id.
    """

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    sha256: str
    vocab: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def tensors(self, max_inputs: int | None = None) -> dict[str, torch.Tensor]:
        """The named inputs as tensors (the first ``max_inputs`` rows)."""
        return {
            k: torch.from_numpy(np.ascontiguousarray(v[:max_inputs]))
            for k, v in self.arrays.items()
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": "tokens",
            "source": self.source,
            "sha256": self.sha256,
            "inputs": len(self),
            "arrays": {k: [str(v.dtype), list(v.shape[1:])] for k, v in self.arrays.items()},
            "labels": self.labels is not None,
            "vocab": len(self.vocab) if self.vocab is not None else None,
        }


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CorruptFileError(
            f"{path} cannot be read without unpickling ({exc}); save plain numeric arrays."
        ) from exc
    except OSError as exc:
        raise CorruptFileError(f"{path} is not a readable .npy file ({exc}).") from exc


def load_tokens(path: str | os.PathLike, *, vocab: str | os.PathLike | None = None) -> TokenInputs:
    """Read named token arrays from a ``.npz`` file or a directory of ``.npy`` files.

    Raises
    ------
    DataNotFoundError
        Nothing at ``path``.
    CorruptFileError
        An unreadable file, pickled contents, arrays that do not share their first dimension,
        non-numeric arrays, labels that are not one integer per input.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise DataNotFoundError(f"{path} holds no .npy files (one per named input).")
        arrays = {f.stem: _read_npy(f) for f in files}
        digest = "+".join(sha256_file(f) for f in files)
    elif path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except ValueError as exc:
            raise CorruptFileError(
                f"{path} cannot be read without unpickling ({exc}); save plain numeric arrays "
                "with numpy.savez."
            ) from exc
        except Exception as exc:  # noqa: BLE001 - zip or format errors of a damaged file
            raise CorruptFileError(f"{path} is not a readable .npz file ({exc}).") from exc
        digest = sha256_file(path)
    else:
        raise DataNotFoundError(
            f"{path} does not exist: give a .npz file (numpy.savez(path, input_ids=..., "
            "attention_mask=...)) or a directory of .npy files, one per named input."
        )
    if not arrays:
        raise CorruptFileError(f"{path} holds no arrays.")
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise CorruptFileError(f"{path} holds only labels; the models need named inputs.")
    sizes = {k: (v.shape[0] if v.ndim else -1) for k, v in arrays.items()}
    bad = [k for k, v in arrays.items() if not np.issubdtype(v.dtype, np.number) or v.ndim == 0]
    if bad:
        raise CorruptFileError(
            f"{path}: arrays {bad} are not numeric arrays with one row per input."
        )
    if len(set(sizes.values())) != 1:
        raise CorruptFileError(
            f"{path}: the named inputs must share their first dimension. Got {sizes}."
        )
    n = next(iter(sizes.values()))
    if labels is not None and (labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer)):
        raise CorruptFileError(
            f"{path}: 'labels' must hold one integer per input ({n},). Got {labels.dtype} "
            f"{labels.shape} instead."
        )
    arrays = {
        k: v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v
        for k, v in arrays.items()
    }
    words = None
    if vocab is not None:
        words = Path(vocab).read_text(encoding="utf-8").splitlines()
    return TokenInputs(
        arrays,
        labels.astype(np.int64) if labels is not None else None,
        str(path),
        digest,
        words,
    )
