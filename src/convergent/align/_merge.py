"""More than two nets: align every net of a zoo to one reference (or to the average of the others,
iteratively), average the aligned weights, renormalise, and evaluate the merged net.

With ``reference="average"`` the alignment is Git Re-Basin's MergeMany (Ainsworth et al. 2023),
started from the alignment of every net to the first: each net in turn is matched to the average of
the others (as currently permuted) until a full round changes no permutation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._device import module_device
from convergent._progress import bar
from convergent.align._activations import activation_matching
from convergent.align._groups import PermutationSpec, apply_permutation
from convergent.align._interpolate import check_renormalisation
from convergent.align._interpolate import reset_batchnorm as _reset_batchnorm
from convergent.align._match import SIMILARITIES, Alignment, weight_matching
from convergent.align._repair import point_statistics, repair
from convergent.zoo import evaluate

METHODS = ("weight", "activation")


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (a running mean, so K identical states average to
    exactly that state); integer buffers (``num_batches_tracked``) are taken from the first."""
    if not states:
        raise ValueError("The 'states' parameter must hold at least one state dict.")
    out = {}
    for key, first in states[0].items():
        if not torch.is_floating_point(first):
            out[key] = first.clone()
            continue
        mean = first.double().clone()
        for k, state in enumerate(states[1:], start=2):
            mean += (state[key].double() - mean) / k
        out[key] = mean.to(first.dtype)
    return out


def _check_method(method: str, similarity: str, images: torch.Tensor | None) -> None:
    if method not in METHODS:
        raise ValueError(
            f"The 'method' parameter must be one of {METHODS}. Got {method!r} instead."
        )
    if similarity not in SIMILARITIES:
        raise ValueError(
            f"The 'similarity' parameter must be one of {SIMILARITIES}. Got {similarity!r} instead."
        )
    if method == "activation" and images is None:
        raise ValueError("Activation matching needs input images (the training split).")


def match_pair(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec,
    *,
    method: str = "weight",
    similarity: str = "correlation",
    images: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> Alignment:
    """Permutations mapping ``model_b`` onto ``model_a``: weight matching, or activation matching on
    ``images`` (training inputs) with the given similarity."""
    _check_method(method, similarity, images)
    if method == "weight":
        return weight_matching(spec, model_a.state_dict(), model_b.state_dict(), seed=seed)
    return activation_matching(
        model_a, model_b, spec, images, kind=similarity, batch_size=batch_size, progress=progress
    )


def permuted(model: nn.Module, spec: PermutationSpec, perms: Mapping[str, np.ndarray]) -> nn.Module:
    """A copy of ``model`` with ``perms`` applied (eval mode)."""
    out = copy.deepcopy(model)
    out.load_state_dict(apply_permutation(model.state_dict(), spec, perms))
    return out.eval()


def align_zoo(
    models: Mapping[str, nn.Module],
    spec: PermutationSpec,
    *,
    method: str = "weight",
    reference: str | None = None,
    similarity: str = "correlation",
    images: torch.Tensor | None = None,
    max_rounds: int = 10,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Alignment]:
    """Permutations mapping every net onto a common unit order.

    Parameters
    ----------
    models : mapping of str to nn.Module
        Nets of one architecture (``spec`` is its permutation groups).
    reference : str, optional
        The net the others are aligned to (default: the first); ``"average"`` starts from the
        alignment to the first net, then aligns each net to the average of the others, round after
        round, until no permutation changes (at most ``max_rounds``).
    method, similarity, images
        As in :func:`match_pair`.

    Returns
    -------
    dict of str to Alignment
        One per net (the reference's is the identity).
    """
    _check_method(method, similarity, images)
    names = list(models)
    if len(names) < 2:
        raise ValueError(f"Aligning a zoo needs at least two nets. Got {len(names)} instead.")
    reference = names[0] if reference is None else reference
    if reference != "average" and reference not in models:
        raise ValueError(
            f"The 'reference' parameter must name a net ({names}) or be 'average'. Got "
            f"{reference!r} instead."
        )
    kwargs = {"method": method, "similarity": similarity, "images": images, "seed": seed}
    first = names[0] if reference == "average" else reference
    out = {}
    for name in bar(names, progress=progress, desc=f"align to {first}"):
        if name == first:
            out[name] = Alignment(spec.identity(), method)
        else:
            out[name] = match_pair(models[first], models[name], spec, progress=False, **kwargs)
    if reference != "average":
        return out
    # MergeMany, started from the alignment to the first net (so the average is a good net already)
    rng = np.random.default_rng(seed)
    perms = {name: out[name].perms for name in names}
    seconds = {name: out[name].seconds for name in names}
    rounds = 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 - reported
        changed = False
        for idx in bar(rng.permutation(len(names)), progress=progress, desc=f"round {rounds}"):
            name = names[idx]
            others = [
                apply_permutation(models[o].state_dict(), spec, perms[o])
                for o in names
                if o != name
            ]
            target = copy.deepcopy(models[name])
            target.load_state_dict(average_states(others))
            if method == "activation":
                _reset_batchnorm(target, images)
            found = match_pair(target.eval(), models[name], spec, progress=False, **kwargs)
            seconds[name] += found.seconds
            if any(not np.array_equal(found.perms[g], perms[name][g]) for g in spec.groups):
                changed = True
            perms[name] = found.perms
        if not changed:
            break
    return {
        name: Alignment(perms[name], f"{method} (average)", {}, rounds, seconds[name])
        for name in names
    }


@dataclass
class MergeResult:
    """A merged net and how well it (and the nets it came from) do.

    ``evaluation`` / ``naive`` / ``members[net]`` / ``ensemble``: split -> {"loss", "accuracy"} of
    the merged net, of the plain average of the unaligned nets (same renormalisation), of each net,
    and of the ensemble of the nets (their logits averaged: K forward passes, the upper reference a
    single merged net is measured against). ``notes``: warnings for the reader (a merged net far
    below its members).
    """

    model: nn.Module
    alignments: dict[str, Alignment]
    method: str
    reference: str
    repair: str
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    naive: dict[str, dict[str, float]] = field(default_factory=dict)
    members: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    ensemble: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reference": self.reference,
            "repair": self.repair,
            "nets": list(self.alignments),
            "evaluation": self.evaluation,
            "naive_average": self.naive,
            "members": self.members,
            "ensemble": self.ensemble,
            "notes": self.notes,
            "matching_seconds": {n: a.seconds for n, a in self.alignments.items()},
            "scores": {n: a.scores for n, a in self.alignments.items()},
            "seconds": self.seconds,
        }


def _renormalise(
    merged: nn.Module, members: Sequence[nn.Module], mode: str, calibration: torch.Tensor | None
) -> nn.Module:
    if mode == "reset-bn":
        _reset_batchnorm(merged, calibration)
    elif mode == "repair":
        stats = [point_statistics(m, calibration) for m in members]
        target = {
            point: (
                np.mean([s[point][0] for s in stats], axis=0),
                np.mean([s[point][1] for s in stats], axis=0),
            )
            for point in stats[0]
        }
        repair(merged, target, target, 0.0, calibration)
    return merged.eval()


@torch.no_grad()
def evaluate_ensemble(
    models: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the ensemble whose logits are the mean of ``models``'."""
    loss, correct = 0.0, 0
    for m in models:
        m.eval()
    device = module_device(models[0])
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        logits = torch.stack([m(x) for m in models]).mean(0)
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss / len(labels), correct / len(labels)


def merge_models(
    models: Mapping[str, nn.Module],
    spec: PermutationSpec,
    *,
    method: str = "weight",
    reference: str | None = None,
    similarity: str = "correlation",
    repair_mode: str = "none",
    images: torch.Tensor | None = None,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    naive: bool = True,
    seed: int = 0,
    progress: bool | None = None,
) -> MergeResult:
    """Align every net (:func:`align_zoo`), average the aligned weights, renormalise, evaluate.

    ``repair_mode``: ``none``; ``reset-bn`` (recompute BatchNorm statistics on ``images``);
    ``repair`` (REPAIR: every hidden channel's mean and std set to the nets' average, then
    BatchNorm reset). ``images`` are training inputs (activation matching, renormalisation);
    ``splits`` maps a split name to (images, labels) to evaluate on.
    """
    check_renormalisation(next(iter(models.values())), repair_mode, images)
    t0 = time.perf_counter()
    alignments = align_zoo(
        models,
        spec,
        method=method,
        reference=reference,
        similarity=similarity,
        images=images,
        seed=seed,
        progress=progress,
    )
    aligned = [permuted(models[n], spec, alignments[n].perms) for n in models]
    merged = copy.deepcopy(aligned[0])
    merged.load_state_dict(average_states([m.state_dict() for m in aligned]))
    _renormalise(merged, aligned, repair_mode, images)
    result = MergeResult(
        merged,
        alignments,
        method,
        reference or next(iter(models)),
        repair_mode,
        seconds=time.perf_counter() - t0,
    )
    if naive:
        plain = copy.deepcopy(aligned[0])
        plain.load_state_dict(average_states([m.state_dict() for m in models.values()]))
        naive_model = _renormalise(plain, list(models.values()), repair_mode, images)
    for split, (x, y) in (splits or {}).items():
        loss, acc = evaluate(merged, x, y, device=module_device(merged))
        result.evaluation[split] = {"loss": loss, "accuracy": acc}
        if naive:
            loss, acc = evaluate(naive_model, x, y, device=module_device(naive_model))
            result.naive[split] = {"loss": loss, "accuracy": acc}
        for name, model in models.items():
            loss, acc = evaluate(model, x, y, device=module_device(model))
            result.members.setdefault(name, {})[split] = {"loss": loss, "accuracy": acc}
        loss, acc = evaluate_ensemble(list(models.values()), x, y)
        result.ensemble[split] = {"loss": loss, "accuracy": acc}
    result.notes = merge_notes(result)
    return result


def merge_notes(result: MergeResult, margin: float = 0.1) -> list[str]:
    """A warning per split where the merged net's accuracy is more than ``margin`` below its worst
    member's, with the next thing to try."""
    notes = []
    for split, evaluation in result.evaluation.items():
        worst = min(m[split]["accuracy"] for m in result.members.values())
        merged = evaluation["accuracy"]
        if merged < worst - margin:
            if result.repair != "repair":
                hint = "try --repair repair (REPAIR renormalises every hidden layer)"
            elif not result.method.startswith("activation"):
                hint = "try --method activation (weight matching is weak on narrow conv nets)"
            else:
                hint = (
                    "averaging this many nets this narrow loses much; try fewer or wider nets "
                    "(the ensemble keeps them all), or a partial merge (align.zip_models)"
                )
            notes.append(
                f"the merged net's {split} accuracy ({100 * merged:.2f}%) is far below its "
                f"worst member's ({100 * worst:.2f}%): {hint}."
            )
    return notes
