"""Exact, deterministic merging of ``Moments`` shards: in a list, or across torch.distributed ranks."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from convergent._errors import ConvergentError
from convergent.stats._moments import Moments


def merge_all(shards: Iterable[Moments]) -> Moments:
    """Merge shards in the given order into a new ``Moments`` (the shards are left unchanged)."""
    shards = list(shards)
    if not shards:
        raise ValueError("merge_all needs at least one Moments.")
    out = Moments(shards[0].dim, exact=shards[0].exact)
    out.metadata = dict(shards[0].metadata)
    for shard in shards:
        out.merge(shard)
    return out


def all_merge(moments: Moments, group: object = None) -> Moments:
    """Merge every rank's ``moments`` on every rank, in rank order 0..W-1.

    Each rank contributes its (count, mean, comoment); all ranks gather all of them (float64
    ``all_gather``) and merge them in the same fixed order, so every rank ends with the identical,
    deterministic result, equal to a single-process pass up to rounding. Works with gloo (CPU
    tensors) and nccl (the state is moved to the current CUDA device for the exchange).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ConvergentError(
            "all_merge needs an initialised torch.distributed process group (run under torchrun)."
        )
    world = dist.get_world_size(group)
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend(group) == "nccl"
        else torch.device("cpu")
    )
    dim = moments.dim
    count = torch.tensor([float(moments.count)], dtype=torch.float64, device=device)
    if moments.count:
        mean = torch.as_tensor(moments.mean, device=device)
        comoment = torch.as_tensor(moments.comoment, device=device)
    else:
        mean = torch.zeros(dim, dtype=torch.float64, device=device)
        comoment = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    dims = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(world)]
    dist.all_gather(
        dims, torch.tensor([float(dim)], dtype=torch.float64, device=device), group=group
    )
    if any(int(d.item()) != dim for d in dims):
        raise ConvergentError(
            f"Ranks hold Moments of different dims {[int(d.item()) for d in dims]}; every rank "
            "must collect the same layers of the same nets."
        )
    counts = [torch.zeros_like(count) for _ in range(world)]
    means = [torch.zeros_like(mean) for _ in range(world)]
    comoments = [torch.zeros_like(comoment) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    dist.all_gather(means, mean, group=group)
    dist.all_gather(comoments, comoment, group=group)
    out = Moments(dim, exact=moments.exact)
    out.metadata = dict(moments.metadata)
    out.product_precision = moments.product_precision
    for c, m, cm in zip(counts, means, comoments):
        n = int(c.item())
        if n:
            out._ensure()
            out._combine(n, m.cpu().numpy(), cm.cpu().numpy())
    return out
