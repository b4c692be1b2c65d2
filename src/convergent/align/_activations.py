"""Activation matching of whole nets: which layers show each group's units, and the per-group
similarity of two nets' units from collected statistics (or from a collection run here).

A group's units can be read at several layers (a conv's output, its BatchNorm, its ReLU; after a
residual addition, every block output of a stage). Matching uses the group's post-activation layers
(the outputs of ReLU-like modules) where it has some, else all of them, and averages the similarity
over those layers. Units those layers cannot tell apart (dead ReLU units: zero variance, zero
correlation with everything) are placed by the correlation of the pre-activation layers (conv, linear
or norm outputs), so aligning a net to a permuted copy of itself restores it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from convergent._device import module_device
from convergent._errors import ConvergentError
from convergent.align._groups import _ELEMENTWISE_MODULES, PermutationSpec
from convergent.align._match import Alignment, match_from_similarities, similarity_from_moments
from convergent.collect import capture, collect
from convergent.stats import Statistics

_ACTIVATIONS = tuple(m for m in _ELEMENTWISE_MODULES if m not in (nn.Dropout, nn.Dropout2d))


def matching_layers(model: nn.Module, spec: PermutationSpec) -> dict[str, list[str]]:
    """Per group, the layers whose outputs activation matching reads (post-activation if any)."""
    modules = dict(model.named_modules())
    out = {}
    for name, group in spec.groups.items():
        post = [layer for layer in group.layers if isinstance(modules.get(layer), _ACTIVATIONS)]
        out[name] = post or list(group.layers)
    return out


def preactivation_layers(model: nn.Module, spec: PermutationSpec) -> dict[str, list[str]]:
    """Per group with post-activation layers, the layers before the nonlinearity (conv, linear,
    norm outputs): they still vary where a ReLU unit is dead, so they can place dead units."""
    modules = dict(model.named_modules())
    out = {}
    for name, group in spec.groups.items():
        kinds = [isinstance(modules.get(layer), _ACTIVATIONS) for layer in group.layers]
        if any(kinds):
            pre = [layer for layer, post in zip(group.layers, kinds) if not post]
            if pre:
                out[name] = pre
    return out


@torch.no_grad()
def observed_groups(
    model: nn.Module, spec: PermutationSpec, layers: Sequence[str], example: torch.Tensor
) -> dict[str, str]:
    """Which group each of ``layers`` shows, found by comparing outputs on ``example`` inputs.

    A layer named in a statistics directory may be a container (the built-in ``"conv3"`` block, a
    residual block ``"layer2.0"``) whose output is the output of one of a group's own layers; the
    two outputs are then identical. Layers that show no group (the classifier) are left out.
    """
    own = sorted({layer for g in spec.groups.values() for layer in g.layers})
    wanted = list(dict.fromkeys([*layers, *own]))
    with capture({"m": model}, wanted) as store:
        model(example.to(module_device(model)))
        outputs = {layer: store.outputs[("m", layer)] for layer in wanted}
    found = {}
    for layer in layers:
        for name, group in spec.groups.items():
            if any(
                outputs[layer].shape == outputs[g].shape and torch.equal(outputs[layer], outputs[g])
                for g in group.layers
            ):
                found[layer] = name
                break
    return found


def similarities_from_statistics(
    stats: Statistics,
    spec: PermutationSpec,
    layer_groups: Mapping[str, str],
    net_a: str,
    net_b: str,
    kind: str = "correlation",
) -> dict[str, np.ndarray]:
    """Per group, the mean (d, d) similarity of A's and B's units over the layers that show it.

    ``layer_groups`` maps a statistics layer to the group it shows (see :func:`observed_groups`).
    """
    for net in (net_a, net_b):
        if net not in stats.nets:
            raise ConvergentError(
                f"The statistics hold no net named {net!r} (nets: {stats.nets}). Collect statistics "
                "of both nets together (`convergent collect ZOO --split train`)."
            )
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for layer, group in layer_groups.items():
        ls = stats[layer]
        if group not in spec.groups or ls.width(net_a) != spec.groups[group].size:
            continue  # a layer over several groups (a concatenation) shows none of them alone
        cov = ls.moments.cov(ddof=0)
        sim = similarity_from_moments(ls.moments.mean, cov, ls.units(net_a), ls.units(net_b), kind)
        sums[group] = sums.get(group, 0) + sim
        counts[group] = counts.get(group, 0) + 1
    return {g: sums[g] / counts[g] for g in sums}


def activation_matching(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec,
    images: torch.Tensor,
    *,
    kind: str = "correlation",
    batch_size: int = 256,
    stats: Statistics | None = None,
    nets: tuple[str, str] = ("a", "b"),
    progress: bool | None = None,
) -> Alignment:
    """Permutations mapping ``model_b`` onto ``model_a`` from their activations on ``images``.

    Without ``stats``, collects exact joint statistics of both nets at every group's
    :func:`matching_layers` (every spatial position a sample). With ``stats`` (a collection of both
    nets, named ``nets``), uses its layers instead, mapped to groups by :func:`observed_groups`.
    """
    t0 = time.perf_counter()
    pre_groups: dict[str, str] = {}
    if stats is None:
        per_group = matching_layers(model_a, spec)
        pre = preactivation_layers(model_a, spec)
        pre_groups = {layer: g for g, ls in pre.items() for layer in ls}
        layers = list(
            dict.fromkeys([layer for ls in per_group.values() for layer in ls] + list(pre_groups))
        )
        stats = collect(
            {"a": model_a, "b": model_b},
            images,
            layers,
            batch_size=batch_size,
            topk=None,
            exact=True,
            device=module_device(model_a),
            progress=progress,
        )
        owners: dict[str, list[str]] = {}
        for g, ls in per_group.items():
            for layer in ls:
                owners.setdefault(layer, []).append(g)
        layer_groups = {layer: gs[0] for layer, gs in owners.items() if len(gs) == 1}
        nets = ("a", "b")
    else:
        layer_groups = observed_groups(model_a, spec, list(stats.layers), images[:4])
    sims = similarities_from_statistics(stats, spec, layer_groups, nets[0], nets[1], kind)
    if pre_groups:
        tiebreak = similarities_from_statistics(stats, spec, pre_groups, nets[0], nets[1])
    else:  # statistics from a directory: the pre-activations of groups with dead units, here
        silent = {g for g, sim in sims.items() if not (sim.any(0).all() and sim.any(1).all())}
        pre = preactivation_layers(model_a, spec)
        wanted = {layer: g for g in silent for layer in pre.get(g, [])}
        tiebreak = {}
        if wanted:
            extra = collect(
                {"a": model_a, "b": model_b},
                images,
                list(wanted),
                batch_size=batch_size,
                topk=None,
                exact=True,
                device=module_device(model_a),
                progress=False,
            )
            tiebreak = similarities_from_statistics(extra, spec, wanted, "a", "b")
    alignment = match_from_similarities(
        sims, spec, method=f"activation ({kind})", tiebreak=tiebreak
    )
    alignment.seconds = time.perf_counter() - t0
    return alignment
