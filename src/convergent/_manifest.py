"""The one manifest every run folder carries (zoo/, stats/, results/, report/ ...).

- :func:`header`: what produced a folder (format, versions);
- inputs are recorded as paths RELATIVE to the folder (:func:`relative_ref` / :func:`resolve_ref`), so a
  run folder copied or moved as a whole keeps working;
- a folder's *identity* (its settings and the checksums of its inputs, never their paths) decides
  :func:`reuse_or_refuse`: the same identity reuses a finished folder, another one is refused with
  the keys that differ, and nothing is overwritten;
- :func:`file_entry` / :func:`verify_entry`: each file a folder holds, with its SHA-256.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convergent._errors import ConvergentError, CorruptFileError
from convergent._io import dumps_json, read_json, sha256_file
from convergent._version import __version__

MANIFEST = "manifest.json"


def header(fmt: str, version: int) -> dict[str, Any]:
    """The first keys of every manifest: the folder's format and what produced it."""
    return {
        "format": fmt,
        "format_version": int(version),
        "convergent_version": __version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "torch_version": torch.__version__,
    }


def relative_ref(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` as seen from the folder ``base`` (POSIX separators), e.g. ``../zoo``."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def resolve_ref(ref: str, base: str | os.PathLike) -> Path:
    """The path a manifest's relative ``ref`` names, seen from the folder ``base``."""
    path = Path(ref)
    return path if path.is_absolute() else Path(base) / path


def file_entry(path: str | os.PathLike) -> dict[str, str]:
    """``{"file": name, "sha256": ...}`` of a file inside the folder that lists it."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path)}


def verify_entry(directory: str | os.PathLike, entry: Mapping[str, str], fix: str) -> Path:
    """The path of a listed file after checking its SHA-256; ``fix`` is the advice on failure."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise CorruptFileError(f"{path} listed in {Path(directory) / MANIFEST} is missing. {fix}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise CorruptFileError(
            f"{path} does not match {Path(directory) / MANIFEST} (SHA-256 {actual} instead of "
            f"{entry['sha256']}); it was changed or truncated. {fix}"
        )
    return path


def identity_of(value: Any) -> Any:
    """A JSON round trip: what a stored identity compares equal to."""
    return json.loads(dumps_json(value))


def read_manifest(
    directory: str | os.PathLike,
    fmt: str,
    *,
    what: str,
    fix: str,
    noun: str | None = None,
    version: int | None = None,
    rerun: str = "",
) -> dict[str, Any]:
    """A folder's manifest, refusing a folder without one, of another format, or (with
    ``version``) of another format version (``what``: the folder, e.g. "statistics directory";
    ``noun``: its manifest's kind, e.g. "statistics"; ``rerun``: how to remake an old one)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ConvergentError(f"{directory} is not a {what}: {path} does not exist. {fix}")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ConvergentError(f"{path} is not a convergent {noun or what} manifest. {fix}")
    if version is not None and manifest.get("format_version") != version:
        raise CorruptFileError(
            f"{directory} holds {noun or what} of format {manifest.get('format_version')} (made "
            f"by convergent {manifest.get('convergent_version')}); this version reads format "
            f"{version}. {rerun}".rstrip()
        )
    return manifest


def reuse_or_refuse(
    directory: str | os.PathLike,
    fmt: str,
    identity: Mapping[str, Any],
    *,
    what: str,
    version: int | None = None,
) -> dict[str, Any] | None:
    """The one rule for an output folder that already exists (``what``: what it holds, e.g.
    "statistics", "results").

    Returns the existing manifest when the folder holds a finished ``fmt`` made with the same
    ``identity`` (settings and input checksums; never paths, so a copied run folder is reused),
    and None when there is nothing there yet. Anything else is refused, naming what differs.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ConvergentError(
            f"{directory} already holds something other than {what} ({path}). Choose another "
            "output directory (--out); nothing was overwritten."
        )
    if version is not None and manifest.get("format_version") != version:
        raise ConvergentError(
            f"{directory} holds {what} of format {manifest.get('format_version')} (this "
            f"convergent writes format {version}). Choose another output directory (--out), or "
            "delete it to redo it; nothing was overwritten."
        )
    old = manifest.get("identity", {})
    new = identity_of(dict(identity))
    if old == new:
        return manifest
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ConvergentError(
        f"{directory} already holds {what} made from other inputs or settings ({', '.join(differ)} "
        "differ). Choose another output directory (--out); nothing was overwritten."
    )
