"""Checkpoint files: load (safetensors, or a ``.pt`` state dict read with ``weights_only=True``),
save with convergent's metadata, verify against a recorded SHA-256. Nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._errors import CorruptFileError
from convergent._io import atomic_write_bytes, sha256_file


def verify_checkpoint(path: Path, expected_sha256: str) -> None:
    """Refuse a missing, truncated or altered checkpoint (its SHA-256 differs from the manifest's)."""
    if not path.is_file():
        raise CorruptFileError(
            f"Checkpoint {path} listed in the zoo manifest is missing. Re-run `convergent train` "
            "with the same settings to retrain that net."
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise CorruptFileError(
            f"Checkpoint {path} does not match the manifest: SHA-256 {actual} instead of "
            f"{expected_sha256}. The file was changed or truncated after training; delete it and "
            "re-run `convergent train` with the same settings to retrain that net."
        )


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


def save_checkpoint(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"convergent": json.dumps(dict(meta))}))


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict bytes (names and values), for determinism checks."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()
