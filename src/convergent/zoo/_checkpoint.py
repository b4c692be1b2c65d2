"""Checkpoint files: load (safetensors, or a ``.pt`` state dict read with ``weights_only=True``),
save with convergent's metadata, verify against a recorded SHA-256. Nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._errors import CorruptFileError
from convergent._io import atomic_write_bytes, sha256_file

#: States of a checkpoint checked against its manifest record (see :func:`inspect_checkpoint`).
CHECK_STATES = ("ok", "missing", "unreadable", "altered", "intact", "unverifiable")


@dataclass(frozen=True)
class CheckpointCheck:
    """A checkpoint file compared with the SHA-256 its zoo manifest records, and with itself.

    ``state`` is one of
    - ``"ok"``: the file's SHA-256 is the recorded one;
    - ``"missing"``: there is no file;
    - ``"unreadable"``: the file is not a readable safetensors file (truncated, overwritten);
    - ``"altered"``: readable, but its tensors no longer match the checksum written into the file
      when it was saved: the file changed after it was written;
    - ``"intact"``: its tensors match the checksum written into it, but its SHA-256 is not the
      recorded one: the file is whole, so the record (or which file sits under this name) is what
      differs;
    - ``"unverifiable"``: readable, SHA-256 differs, and the file predates embedded checksums, so
      convergent cannot tell which side changed.
    """

    path: Path
    state: str
    expected_sha256: str
    actual_sha256: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def damaged(self) -> bool:
        """The file itself is missing or provably damaged (retraining it deletes nothing good)."""
        return self.state in ("missing", "unreadable", "altered")


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in sorted name order.

    Written into every checkpoint's metadata, so that a file can be checked against itself: a file
    whose tensors still give its embedded checksum is intact whatever a manifest says about it.
    """
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def inspect_checkpoint(path: str | os.PathLike, expected_sha256: str) -> CheckpointCheck:
    """Compare a checkpoint with the SHA-256 its manifest records and with its embedded checksum."""
    path = Path(path)
    if not path.is_file():
        return CheckpointCheck(path, "missing", expected_sha256)
    actual = sha256_file(path)
    if actual == expected_sha256:
        return CheckpointCheck(path, "ok", expected_sha256, actual)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("convergent", "{}")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(raw)
    except Exception:  # noqa: BLE001 - safetensors raises its own types for damaged files
        return CheckpointCheck(path, "unreadable", expected_sha256, actual)
    embedded = meta.get("tensors_sha256") if isinstance(meta, dict) else None
    if embedded is None:
        return CheckpointCheck(path, "unverifiable", expected_sha256, actual, meta)
    state = "intact" if tensors_sha256(tensors) == embedded else "altered"
    return CheckpointCheck(path, state, expected_sha256, actual, meta)


def retrain_advice(zoo: Path) -> str:
    return (
        f"Re-run the `convergent train` command that made this zoo (same settings, --out {zoo}): "
        "it retrains exactly the missing or damaged nets and leaves the good ones untouched."
    )


def describe_check(
    check: CheckpointCheck, *, net: str | None = None, manifest_edited: bool | None = None
) -> str:
    """What is wrong with a checkpoint that is not ``ok``, which side is wrong, and what to do.

    ``manifest_edited`` says whether the manifest's net records still match the manifest's own
    checksum (False), do not (True), or the manifest has none (None).
    """
    what = f"Checkpoint {check.path}" + (f" of net {net!r}" if net else "")
    zoo = check.path.parent
    if check.state == "missing":
        return f"{what}, listed in the zoo manifest, is missing. {retrain_advice(zoo)}"
    head = (
        f"{what} does not match the manifest: SHA-256 {check.actual_sha256} (the file) instead "
        f"of {check.expected_sha256} (the manifest's record)."
    )
    if check.state == "unreadable":
        return (
            f"{head} The file is damaged: it is not a readable safetensors file, so it was changed "
            f"or truncated after training. {retrain_advice(zoo)}"
        )
    if check.state == "altered":
        return (
            f"{head} The file is damaged: its tensors no longer match the checksum written into it "
            f"when it was saved, so it was changed or truncated after training. "
            f"{retrain_advice(zoo)}"
        )
    keep = (
        "Do not delete the file. Re-run the `convergent train` command that made this zoo: it "
        "retrains this net and compares: if the retrained weights are the file's, it corrects the "
        "manifest record; if they are the recorded ones, it sets the current file aside (renamed, "
        "not deleted) and writes them."
    )
    if check.state == "unverifiable":
        return (
            f"{head} The file predates embedded checksums, so convergent cannot tell whether the "
            f"file or the manifest changed. {keep}"
        )
    # intact: the file matches its own embedded checksum
    if manifest_edited:
        side = (
            "The file is intact (its tensors match the checksum written into it at training), "
            "while the manifest's net records no longer match the manifest's own checksum: the "
            "manifest was edited after training and is the side that is wrong."
        )
    else:
        other = check.metadata.get("name")
        named = f" (its own metadata names net {other!r})" if other and other != net else ""
        seal = "" if manifest_edited is None else " and the manifest matches its own checksum"
        side = (
            f"The file is intact (its tensors match the checksum written into it at training)"
            f"{seal}: the file is a whole checkpoint, but not the one recorded for this "
            f"net{named}."
        )
    return f"{head} {side} {keep}"


def verify_checkpoint(
    path: Path,
    expected_sha256: str,
    *,
    net: str | None = None,
    manifest_edited: bool | None = None,
) -> None:
    """Refuse a missing, truncated or altered checkpoint (its SHA-256 differs from the manifest's).

    The message says which side disagrees (see :func:`describe_check`) and never advises deleting
    a file that matches its own embedded checksum.
    """
    check = inspect_checkpoint(path, expected_sha256)
    if not check.ok:
        raise CorruptFileError(describe_check(check, net=net, manifest_edited=manifest_edited))


#: A prefix some trainers put before every key (a wrapper module holding the net as ``.model``).
_WRAPPER_PREFIX = "model."


def _unwrap(state: Mapping[str, Any], own: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` itself when its keys are the model's; else, when every key carries the wrapper
    prefix and the keys without it are the model's, those (a model whose own top-level submodule
    is called ``model`` keeps its keys)."""
    if set(state) == set(own) or not state:
        return state
    if not all(k.startswith(_WRAPPER_PREFIX) for k in state):
        return state
    stripped = {k[len(_WRAPPER_PREFIX) :]: v for k, v in state.items()}
    return stripped if set(stripped) == set(own) else state


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights into ``model`` from a safetensors file, or a ``.pt``/``.pth`` state dict read with
    ``torch.load(weights_only=True)`` (never unpickling arbitrary objects).

    The keys must be the model's ``state_dict()`` keys. A file whose keys all carry a ``model.``
    prefix (a training wrapper's) loads when the keys without it fit and the keys as written do
    not; nothing in convergent writes such files (the ``model.``-prefixed partial checkpoints of
    ``convergent train`` are read by the training loop only)."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CorruptFileError(
                f"Could not read {path} as a PyTorch state dict with weights_only=True ({exc}). "
                "Save a plain state_dict (tensors only), or convert it to safetensors."
            ) from exc
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CorruptFileError(
                f"{path} is not a readable safetensors checkpoint ({type(exc).__name__}: {exc})."
            ) from exc
    if not isinstance(state, Mapping):
        raise CorruptFileError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    own = model.state_dict()
    state = _unwrap(state, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CorruptFileError(
            f"Checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}. Check the architecture and its arguments."
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CorruptFileError(
                f"Checkpoint {path}: tensor {k!r} has shape {tuple(state[k].shape)}, the model "
                f"expects {tuple(v.shape)}. Check the architecture's width/depth arguments."
            )
    model.load_state_dict(dict(state))
    return model


def checkpoint_bytes(
    model: nn.Module, meta: Mapping[str, Any], *, embed_checksum: bool = True
) -> bytes:
    """A model's state dict as safetensors bytes with convergent's metadata (deterministic).

    With ``embed_checksum`` the metadata also carries ``tensors_sha256`` (see
    :func:`tensors_sha256`); without it the bytes are those of checkpoints written before that.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if embed_checksum:
        meta["tensors_sha256"] = tensors_sha256(tensors)
    return save(tensors, metadata={"convergent": json.dumps(meta)})


def save_checkpoint(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> str:
    """Write ``model``'s checkpoint atomically (see :func:`checkpoint_bytes`); returns its SHA-256."""
    data = checkpoint_bytes(model, meta)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict bytes (names and values), for determinism checks."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()
