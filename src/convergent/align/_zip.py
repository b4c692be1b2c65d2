"""Beyond one-to-one: merging features within and across two nets, and partial merging, in the
manner of ZipIt! (Stoica et al. 2024).

For every merged group, the 2n units of nets A and B are paired greedily by the correlation of their
activations on training images -- a pair may join two units of the *same* net (``within=True``, as
ZipIt! does) -- and each pair becomes one unit of the merged net. As matrices: ``merge`` (n, 2n)
averages each pair, ``unmerge`` (2n, n) copies a merged unit back to both members of its pair.

Think of A and B side by side as one wide net (every group 2n units wide, weights block-diagonal, the
output the mean of both outputs). Merging a group replaces its 2n units by n: a parameter axis that
writes the group (a layer's output channels, a bias, a norm's parameters and statistics) is
multiplied by ``merge``, an axis that reads it (a layer's input channels) by ``unmerge``. Merging
every group gives a net of the original architecture (a full zip). Merging only the first groups
(``groups``, in forward order) leaves the last layers unmerged, one copy per net: a shared trunk with
two heads whose outputs are averaged (ZipIt!'s partial zip). It is returned as :class:`ZippedNets`,
two copies of the architecture whose merged parameters are identical (a shared trunk computed twice:
the same function, nothing new to save), each with its own unmerged layers, logits averaged.

Permutation alignment is the special case ``within=False`` solved optimally rather than greedily.
Attention (head-structured) groups are not zipped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from convergent._device import module_device
from convergent.align._activations import matching_layers
from convergent.align._groups import PermutationSpec
from convergent.align._interpolate import check_renormalisation, reset_batchnorm
from convergent.align._repair import point_statistics, repair, repair_points
from convergent.collect import collect


class ZippedNets(nn.Module):
    """Copies of one architecture (a shared merged trunk, each with its own unmerged layers) whose
    logits are averaged: a partial zip. (With every group merged the copies would be identical, and
    :func:`zip_models` returns one of them instead.)"""

    def __init__(self, copies: Sequence[nn.Module]) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.copies]).mean(0)


@dataclass
class ZipResult:
    """A zipped pair of nets and how the features were merged.

    Attributes
    ----------
    model : nn.Module
        The merged net (full zip: the architecture itself) or :class:`ZippedNets` (partial).
    merged : list of str
        The groups merged (the rest are kept, one copy per net).
    within : dict of str to int
        Per merged group, how many pairs join two units of the same net.
    correlations, statistics
        The (2n, 2n) unit correlations per group and the nets' REPAIR statistics that were used
        (pass them back to :func:`zip_models` to zip the same nets again without recomputing).
    """

    model: nn.Module
    merged: list[str]
    within: dict[str, int] = field(default_factory=dict)
    repair: str = "none"
    correlations: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    statistics: list[dict[str, tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=list, repr=False
    )


def greedy_pairs(correlation: np.ndarray, n: int, within: bool = True) -> np.ndarray:
    """ZipIt!'s matching: the ``n`` pairs of the 2n features (A's first, then B's), taken greedily by
    decreasing correlation, each feature in one pair. ``within=False`` allows only A-B pairs.
    Returns (n, 2) indices, the pair of merged unit ``k`` being ``pairs[k]``, ordered by A's unit
    where the pair holds one."""
    c = np.array(correlation, dtype=np.float64)
    np.fill_diagonal(c, -np.inf)
    if not within:
        c[:n, :n] = -np.inf
        c[n:, n:] = -np.inf
    iu = np.triu_indices(2 * n, 1)
    order = np.argsort(-c[iu], kind="stable")
    used = np.zeros(2 * n, dtype=bool)
    pairs = []
    for k in order:
        i, j = int(iu[0][k]), int(iu[1][k])
        if used[i] or used[j] or not np.isfinite(c[i, j]):
            continue
        used[i] = used[j] = True
        pairs.append((i, j))
        if len(pairs) == n:
            break
    return np.array(sorted(pairs), dtype=np.int64)


def merge_matrices(pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``merge`` (n, 2n), averaging each pair, and ``unmerge`` (2n, n), copying it back."""
    merge = np.zeros((n, 2 * n))
    unmerge = np.zeros((2 * n, n))
    for k, (i, j) in enumerate(pairs):
        merge[k, [i, j]] = 0.5
        unmerge[[i, j], k] = 1.0
    return merge, unmerge


def _reads(model: nn.Module) -> set[tuple[str, int]]:
    """(parameter, axis) pairs that read units: the input axis of Conv/Linear weights."""
    out = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out.add((f"{name}.weight" if name else "weight", 1))
    return out


def _correlations(
    models: Sequence[nn.Module], spec: PermutationSpec, images: torch.Tensor, batch_size: int
) -> dict[str, np.ndarray]:
    """Per group, the (2n, 2n) correlation of A's and B's units (mean over its matching layers)."""
    per_group = matching_layers(models[0], spec)
    layers = list(dict.fromkeys(layer for ls in per_group.values() for layer in ls))
    stats = collect(
        {"a": models[0], "b": models[1]},
        images,
        layers,
        batch_size=batch_size,
        topk=None,
        exact=True,
        device=module_device(models[0]),
        progress=False,
    )
    out = {}
    for name, ls in per_group.items():
        mats = []
        for layer in ls:
            mats.append(stats[layer].moments.corr())  # dead units: 0, never NaN
        out[name] = np.mean(mats, axis=0)
    return out


def _zip_tensor(
    tensors: Sequence[torch.Tensor],
    entries: list[tuple[str, int, int, int, int]],
    merged: Mapping[str, tuple[np.ndarray, np.ndarray]],
    reads: set[tuple[int, int]],
    k: int,
) -> torch.Tensor:
    """Copy ``k``'s value of one parameter: the wide (block-diagonal) tensor, merged groups merged
    (write axes) or unmerged (read axes), unmerged groups cut to net ``k``'s block. ``entries``:
    (group index, axis, offset, size, repeat) of every group segment of the parameter."""
    nets = len(tensors)
    shape = list(tensors[0].shape)
    wide_shape = list(shape)
    for _, axis, _, size, repeat in entries:
        wide_shape[axis] += (nets - 1) * size * repeat
    wide = torch.zeros(wide_shape, dtype=torch.float64)
    for net, t in enumerate(tensors):
        index = []
        for axis, length in enumerate(shape):
            idx = np.arange(length)
            shift = np.zeros(length, dtype=np.int64)
            for _, ax, offset, size, repeat in entries:
                if ax != axis:
                    continue
                seg = slice(offset, offset + size * repeat)
                idx[seg] = idx[seg] + net * size * repeat
                shift[offset + size * repeat :] += (nets - 1) * size * repeat
            index.append(torch.as_tensor(idx + shift))
        wide[torch.meshgrid(*index, indexing="ij")] = t.double()
    # segments are processed from the last offset on, so earlier offsets stay valid
    for group, axis, offset, size, repeat in sorted(entries, key=lambda e: (e[1], -e[2])):
        start = offset + sum(
            (nets - 1) * s * r for _, a, o, s, r in entries if a == axis and o < offset
        )
        part = wide.narrow(axis, start, nets * size * repeat).movedim(axis, -1)
        part = part.reshape(*part.shape[:-1], nets * size, repeat)
        if group in merged:
            merge, unmerge = merged[group]
            mat = torch.as_tensor(unmerge.T if (axis, group) in reads else merge)
            new = torch.einsum("...ir,ki->...kr", part, mat)
        else:
            new = part[..., k * size : (k + 1) * size, :]
        new = new.reshape(*new.shape[:-2], size * repeat).movedim(-1, axis)
        wide = torch.cat(
            [
                wide.narrow(axis, 0, start),
                new,
                wide.narrow(
                    axis,
                    start + nets * size * repeat,
                    wide.shape[axis] - start - nets * size * repeat,
                ),
            ],
            dim=axis,
        )
    return wide


def zip_models(
    models: Mapping[str, nn.Module],
    spec: PermutationSpec,
    images: torch.Tensor,
    *,
    groups: int | Sequence[str] | None = None,
    within: bool = True,
    repair_mode: str = "none",
    batch_size: int = 256,
    correlations: Mapping[str, np.ndarray] | None = None,
    statistics: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]] | None = None,
) -> ZipResult:
    """Merge two nets' features within and across nets (ZipIt!), fully or up to ``groups``.

    Parameters
    ----------
    models : mapping of str to nn.Module
        Exactly two nets of one architecture (``spec`` is its permutation groups).
    spec : PermutationSpec
        Without head-structured (attention) groups.
    images : torch.Tensor
        Training inputs: activation correlations and renormalisation.
    groups : int or sequence of str, optional
        The groups to merge: all (default, a full zip), the first ``groups`` in forward order, or
        these names. Merged groups must form a trunk: no merged group computed from an unmerged one.
    within : bool
        Allow pairs of two units of the same net (ZipIt!); False pairs only across nets.
    repair_mode : {'none', 'reset-bn', 'repair'}
        Renormalisation of the result: BatchNorm statistics recomputed, or REPAIR with every merged
        unit's target the mean of its pair's statistics and every unmerged unit its own net's.
    """
    nets = list(models.values())
    if len(nets) != 2:
        raise ValueError(f"Zipping takes exactly two nets. Got {len(nets)} instead.")
    if any(g.heads > 1 for g in spec.groups.values()):
        raise ValueError(
            "Zipping does not merge attention heads (head-structured groups); align and average "
            "such nets with merge_models instead."
        )
    check_renormalisation(nets[0], repair_mode, images)
    names = list(spec.groups)
    if groups is None:
        chosen = names
    elif isinstance(groups, int):
        if not 0 <= groups <= len(names):
            raise ValueError(
                f"The 'groups' parameter must be between 0 and {len(names)}. Got {groups} instead."
            )
        chosen = names[:groups]
    else:
        unknown = [g for g in groups if g not in spec.groups]
        if unknown:
            raise ValueError(f"Unknown groups {unknown}; the net's groups are {names}.")
        chosen = [g for g in names if g in set(groups)]
    reads_all = _reads(nets[0])
    # a trunk: every parameter that writes a merged group reads only merged groups
    for name in chosen:
        for param, axis, *_ in spec.groups[name].axes:
            if (param, axis) in reads_all:
                continue
            for other, group in spec.groups.items():
                if other in chosen:
                    continue
                if any(p == param and (p, a) in reads_all for p, a, *_ in group.axes):
                    raise ValueError(
                        f"Merging group {name!r} but not {other!r} does not make a trunk: "
                        f"{param!r} computes the first from the second. Merge {other!r} too, or "
                        "merge fewer groups."
                    )
    corr = dict(correlations or {})
    if any(name not in corr for name in chosen):
        corr = _correlations(nets, spec, images, batch_size)
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    within_counts = {}
    for name in chosen:
        n = spec.groups[name].size
        pairs = greedy_pairs(corr[name], n, within)
        merged[name] = merge_matrices(pairs, n)
        within_counts[name] = int(sum((i < n) == (j < n) for i, j in pairs))
    entries: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for name, group in spec.groups.items():
        for param, axis, offset, repeat in group.axes:
            entries.setdefault(param, []).append((name, axis, offset, group.size, repeat))
    states = [m.state_dict() for m in nets]
    copies = []
    for k in range(2):
        state = {}
        for key, value in states[0].items():
            if not torch.is_floating_point(value):
                state[key] = states[k][key].clone()
            elif key not in entries:
                state[key] = ((states[0][key].double() + states[1][key].double()) / 2).to(
                    value.dtype
                )
            else:
                reads = {(axis, g) for g, axis, *_ in entries[key] if (key, axis) in reads_all}
                wide = _zip_tensor([s[key] for s in states], entries[key], merged, reads, k)
                writes_fixed = all((axis, g) in reads for g, axis, *_ in entries[key])
                if writes_fixed and all(g in merged for g, *_ in entries[key]):
                    wide = wide / 2  # the wide net's output is the mean of the two nets'
                state[key] = wide.to(value.dtype)
        net = copy.deepcopy(nets[k])
        net.load_state_dict(state)
        copies.append(net.eval())
    if repair_mode == "reset-bn":
        for net in copies:
            reset_batchnorm(net, images, batch_size=batch_size)
    elif repair_mode == "repair":
        stats = list(statistics or [])
        if len(stats) != 2:
            stats = [point_statistics(m, images, batch_size=batch_size) for m in nets]
        points = repair_points(nets[0], images[:2])
        for k, net in enumerate(copies):
            target = {}
            for p in points:
                if len(p.groups) == 1 and p.groups[0] in merged:
                    m = merged[p.groups[0]][0]
                    target[p.node] = tuple(
                        m @ np.concatenate([stats[0][p.node][i], stats[1][p.node][i]])
                        for i in (0, 1)
                    )
                else:
                    target[p.node] = stats[k][p.node]
            repair(net, target, target, 0.0, images, batch_size=batch_size)
    model = copies[0] if len(chosen) == len(names) else ZippedNets(copies).eval()
    return ZipResult(
        model,
        chosen,
        within_counts,
        repair_mode,
        corr,
        stats if repair_mode == "repair" else list(statistics or []),
    )
