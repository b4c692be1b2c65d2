"""Devices named by users: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``, checked before any work.

A device this machine cannot use (a CPU-only build of PyTorch, no visible GPU, a GPU index out of
range) raises one ``ValueError`` line that names what was given, what is accepted and why it cannot
be used here, instead of a traceback from deep inside PyTorch after the data has been loaded.
"""

from __future__ import annotations

import re

import torch

#: What ``resolve_device`` accepts, for help texts and error messages.
ACCEPTED_DEVICES = "cpu, cuda, cuda:N (GPU number N, from 0), mps (Apple GPU) or auto"

#: Help text of a ``--device`` option whose default is ``cpu``.
DEVICE_HELP = (
    "where to compute: cpu, cuda (the first NVIDIA GPU), cuda:N (GPU number N), mps (Apple GPU) "
    "or auto (cuda if available, else mps, else cpu) (default: cpu)"
)

_CUDA = re.compile(r"cuda(?::(\d+))?")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device) -> torch.device:
    """The :class:`torch.device` named by ``device``, checked to be usable on this machine.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` (GPU 0), ``"cuda:N"``, ``"mps"`` or ``"auto"`` (the first of cuda, mps,
        cpu that is available). Case and surrounding spaces are ignored.

    Returns
    -------
    torch.device

    Raises
    ------
    TypeError
        ``device`` is neither a string nor a ``torch.device``.
    ValueError
        An unknown name (``gpu``), a malformed index, or a device this machine cannot use; the
        message says which and why.
    """
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        raise TypeError(
            f"A device is named by a string such as 'cpu' or 'cuda'. Got {type(device).__name__} "
            "instead."
        )
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            why = f"this PyTorch ({torch.__version__}) was built without MPS (Apple GPU) support"
        elif not mps.is_available():
            why = "no Apple GPU is available (MPS needs macOS 12.3+ on Apple silicon or an AMD GPU)"
        else:
            return torch.device("mps")
        raise ValueError(f"Device 'mps' cannot be used here: {why}. Use cpu instead.")
    match = _CUDA.fullmatch(text)
    if match is None:
        hint = " (for an NVIDIA GPU, use cuda)" if text in ("gpu", "nvidia", "cuda0") else ""
        raise ValueError(f"Unknown device {device!r}{hint}. Accepted: {ACCEPTED_DEVICES}.")
    index = int(match.group(1) or 0)
    if not torch.backends.cuda.is_built():
        raise ValueError(
            f"Device {text!r} cannot be used here: this PyTorch ({torch.__version__}) was built "
            "without CUDA. Install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/) "
            "or use cpu."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"Device {text!r} cannot be used here: PyTorch has CUDA support but sees no GPU "
            "(torch.cuda.is_available() is False; check the NVIDIA driver with nvidia-smi, and "
            "CUDA_VISIBLE_DEVICES). Use cpu instead."
        )
    count = torch.cuda.device_count()
    if index >= count:
        visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ValueError(
            f"Device {text!r} cannot be used here: only {count} GPU"
            f"{'' if count == 1 else 's'} {'is' if count == 1 else 'are'} visible ({visible})."
        )
    return torch.device("cuda", index)


def module_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither. Inputs
    are moved there batch by batch, so data can stay on the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
