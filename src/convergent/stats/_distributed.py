"""Exact, deterministic merging of statistic shards: in a list, or across torch.distributed ranks.

One rank merge serves every statistic: the state each one declares (``state_fields``) is gathered
from every rank and the shards are folded with the statistic's own exact ``merge``, in rank order
0..W-1, so every rank ends with the identical result, equal to a single-process pass up to rounding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch

from convergent._errors import ConvergentError
from convergent.stats._state import Statistic

S = TypeVar("S", bound=Statistic)


def merge_all(shards: Iterable[S]) -> S:
    """Merge shards in the given order into a new statistic (the shards are left unchanged)."""
    shards = list(shards)
    if not shards:
        raise ValueError("merge_all needs at least one Moments.")
    first = shards[0]
    out = type(first).from_state(first.config(), first.state(), first.metadata)
    for shard in shards[1:]:
        out.merge(shard)
    return out


def _device(group: Any) -> torch.device:
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":  # nccl moves only CUDA tensors, gloo only CPU ones
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(array: np.ndarray, group: Any, device: torch.device) -> list[np.ndarray]:
    """Every rank's version of one array (shapes may differ between ranks; dtypes may not)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    array = np.ascontiguousarray(array)
    ndim = torch.tensor([array.ndim], dtype=torch.int64, device=device)
    ndims = [torch.zeros_like(ndim) for _ in range(world)]
    dist.all_gather(ndims, ndim, group=group)
    if len({int(t.item()) for t in ndims}) != 1:
        raise ConvergentError("Ranks hold state arrays of different ranks (number of dimensions).")
    shape = torch.tensor(array.shape or (1,), dtype=torch.int64, device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    sizes = [int(np.prod(s.cpu().numpy())) if array.ndim else 1 for s in shapes]
    longest = max(sizes + [1])
    flat = torch.zeros(longest, dtype=torch.from_numpy(array[:0].reshape(-1)).dtype, device=device)
    flat[: array.size] = torch.from_numpy(array.reshape(-1)).to(device)
    parts = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(parts, flat, group=group)
    out = []
    for part, s, n in zip(parts, shapes, sizes):
        values = part[:n].cpu().numpy()
        out.append(values.reshape(tuple(s.cpu().tolist())) if array.ndim else values.reshape(()))
    return out


def _same_everywhere(text: str, group: Any, device: torch.device, what: str) -> None:
    """Refuse when ranks disagree on ``text`` (a statistic's kind and config)."""
    code = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)
    seen = {bytes(v.astype(np.uint8)).decode() for v in _gather(code, group, device)}
    if len(seen) > 1:
        raise ConvergentError(
            f"Ranks hold different {what}: {sorted(seen)}; every rank must collect the same layers "
            "of the same nets with the same settings."
        )


def all_merge(stat: S, group: Any = None) -> S:
    """Merge every rank's shard of ``stat`` on every rank, in rank order 0..W-1.

    Works for any :class:`~convergent.stats.Statistic` (``Moments``, ``KernelMoments``, ``TopK``,
    ``JointHistogram``, ...) with gloo (CPU tensors) and nccl (the state goes through the current
    CUDA device for the exchange). Every array travels in its declared dtype (float64 / int64).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ConvergentError(
            "all_merge needs an initialised torch.distributed process group (run under torchrun)."
        )
    device = _device(group)
    world = dist.get_world_size(group)
    header = json.dumps({"kind": stat.kind, "config": stat.config()}, sort_keys=True)
    _same_everywhere(header, group, device, f"{type(stat).__name__} setups")
    shards: list[dict[str, np.ndarray]] = [{} for _ in range(world)]
    for name, array in stat.state().items():  # the declared order, the same on every rank
        for rank, value in enumerate(_gather(array, group, device)):
            shards[rank][name] = value
    out = type(stat).from_state(stat.config(), shards[0], stat.metadata)
    for shard in shards[1:]:
        out.merge(type(stat).from_state(stat.config(), shard, stat.metadata))
    return out
