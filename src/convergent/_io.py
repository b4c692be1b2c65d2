"""Small, safe file helpers shared by every stage: JSON, safetensors, checksums, atomic writes.

Nothing here unpickles anything: arrays are safetensors, metadata is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convergent._errors import ConvergentError, CorruptFileError

_METADATA_KEY = "convergent"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


class WriteError(ConvergentError, OSError):
    """A file could not be written (read-only or full file system, no permission); the message
    names the path and the cause, and no partial file is left under the final name."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves
    a half-written file under the final name. The file gets the permissions any new file would
    (``0o666`` less the process umask: 0644 under the usual 022), not ``mkstemp``'s private 0600.

    Raises
    ------
    WriteError
        The directory or file cannot be written (the message names the path and the cause);
        nothing is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with _suppress():
                os.unlink(tmp)
        cause = exc.strerror or str(exc)
        raise WriteError(f"cannot write {path}: {cause}") from exc
    except BaseException:
        if tmp is not None:
            with _suppress():
                os.unlink(tmp)
        raise


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps_json(obj: Any) -> str:
    """JSON text, keys in insertion order (a layer table keeps the model's forward order), NumPy
    scalars/arrays converted; NaN is not allowed (missing values are ``null``)."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    atomic_write_bytes(path, (dumps_json(obj) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a malformed file raises :class:`CorruptFileError` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{path} is not valid JSON ({exc}). The file is damaged: delete it and re-run the "
            "command that produced it."
        ) from exc


def save_arrays(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Atomically save NumPy arrays as safetensors, with ``metadata`` stored as JSON in the header."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = {_METADATA_KEY: dumps_json(dict(metadata or {}))}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a safetensors file written by :func:`save_arrays`: (arrays, metadata).

    A truncated or otherwise unreadable file raises :class:`CorruptFileError` naming the file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        arrays: dict[str, np.ndarray] = {}
        with safe_open(str(path), framework="numpy") as fh:
            raw_meta = fh.metadata() or {}
            for key in fh.keys():
                arrays[key] = fh.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}). It may be "
            "truncated or damaged: delete it and re-run the command that produced it."
        ) from exc
    try:
        metadata = json.loads(raw_meta.get(_METADATA_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path} has a damaged metadata header ({exc}).") from exc
    return arrays, metadata
