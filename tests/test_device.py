"""Devices named by users: accepted names, and one clear line for each device this machine lacks."""

from __future__ import annotations

import pytest
import torch

from convergent._device import resolve_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a machine: ``machine(cuda_built, gpus, mps_built, mps_available)``."""

    def pretend(cuda_built=True, gpus=0, mps_built=False, mps_available=False):
        monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: cuda_built)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_built and gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda_built else 0)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mps_built)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps_available)

    return pretend


def test_accepted_names(machine):
    machine(gpus=2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CUDA ") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    machine(mps_built=True, mps_available=True)
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("auto") == torch.device("mps")
    machine(cuda_built=False)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    ("pretend", "device", "match"),
    [
        (
            {},
            "gpu",
            r"^Unknown device 'gpu' \(for an NVIDIA GPU, use cuda\)\. Accepted: cpu, cuda, ",
        ),
        ({}, "tpu", r"^Unknown device 'tpu'\. Accepted: cpu, cuda, cuda:N .*, mps .* or auto\.$"),
        ({}, "cuda:x", "Unknown device 'cuda:x'"),
        ({}, "cuda:-1", "Unknown device 'cuda:-1'"),
        (
            {"cuda_built": False},
            "cuda",
            r"^Device 'cuda' cannot be used here: this PyTorch \(.*\) was built without CUDA\. "
            r"Install a CUDA build of PyTorch .* or use cpu\.$",
        ),
        ({"gpus": 0}, "cuda:0", "PyTorch has CUDA support but sees no GPU .*nvidia-smi"),
        ({"gpus": 1}, "cuda:1", r"'cuda:1' cannot be used here: only 1 GPU is visible \(cuda:0\)"),
        ({"gpus": 2}, "cuda:2", r"only 2 GPUs are visible \(cuda:0 to cuda:1\)"),
        ({}, "mps", "Device 'mps' cannot be used here: this PyTorch .* built without MPS"),
        ({"mps_built": True}, "mps", "'mps' cannot be used here: no Apple GPU is available"),
    ],
)
def test_unusable_devices_are_one_clear_line(machine, pretend, device, match):
    machine(**pretend)
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


def test_device_must_be_named_by_a_string():
    with pytest.raises(TypeError, match="named by a string such as 'cpu'.*Got int instead"):
        resolve_device(0)


def test_this_machine_can_use_its_cpu():
    assert resolve_device("cpu").type == "cpu"
    if not torch.backends.cuda.is_built():
        with pytest.raises(ValueError, match="built without CUDA"):
            resolve_device("cuda")
