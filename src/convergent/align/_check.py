"""`convergent align --check`: the permutation self-test of architectures and of trained nets."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convergent.align._groups import check_permutation_invariance, find_permutation_groups
from convergent.models import available_architectures, build_model


def _perturbed(model: nn.Module, seed: int) -> nn.Module:
    """A copy whose biases and normalisation parameters and statistics (every 1-D float tensor) are
    jittered, variances kept positive, so a missed axis cannot hide behind a zero bias or an identity
    BatchNorm; weight matrices, random already, are left as they are."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in out.state_dict().items():
            if not torch.is_floating_point(tensor) or tensor.ndim != 1:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype) + 0.5)
            else:
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))
    return out.eval()


def check_model(
    model: nn.Module,
    example: torch.Tensor,
    *,
    name: str = "model",
    seeds: int = 3,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Self-test of one model: for ``seeds`` random permutations of every group (on a jittered copy),
    the outputs change by at most ``atol``. Returns a summary row; raises on failure."""
    t0 = time.perf_counter()
    work = _perturbed(model, 0)
    spec = find_permutation_groups(work, example)
    worst = 0.0
    for seed in range(seeds):
        worst = max(worst, check_permutation_invariance(work, example, seed=seed, atol=atol))
    permuted_params = sorted({a[0] for g in spec.groups.values() for a in g.axes})
    return {
        "model": name,
        "groups": len(spec.groups),
        "units": sum(g.size for g in spec.groups.values()),
        "permuted tensors": len(permuted_params),
        "fixed tensors": len(spec.fixed_parameters),
        "max |diff|": float(worst),
        "tolerance": atol,
        "ok": "yes" if worst <= atol else "NO",
        "seconds": round(time.perf_counter() - t0, 2),
    }


def check_run(
    archs: Sequence[str] | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
    seeds: int = 3,
    atol: float = 1e-5,
) -> list[dict[str, Any]]:
    """`convergent align --check`: :func:`check_model` for each architecture (default: every
    built-in one), built for ``input_shape`` inputs."""
    archs = list(archs or available_architectures())
    c, h, w = input_shape
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = build_model(
            arch,
            in_channels=c,
            input_size=(h, w),
            num_classes=num_classes,
            **dict(model_kwargs or {}),
        )
        example = torch.randn(4, c, h, w, generator=torch.Generator().manual_seed(1))
        rows.append(check_model(model, example, name=arch, seeds=seeds, atol=atol))
    return rows
