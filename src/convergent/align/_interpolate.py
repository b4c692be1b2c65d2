"""Linear interpolation between two nets' weights, renormalisation, and the loss barrier.

Barrier definitions (stated in every output):

- loss barrier = max over alpha of  L(alpha) - ((1 - alpha) L(0) + alpha L(1))
- accuracy barrier = max over alpha of  ((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)

where L(alpha) is the mean cross-entropy of the net with weights (1 - alpha) theta_A + alpha theta_B.
Both are >= 0 up to rounding at the endpoints; a barrier near 0 means the straight path between the
nets stays as good as its ends (linear mode connectivity).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from convergent._device import module_device
from convergent._progress import bar
from convergent.align._repair import point_statistics, repair
from convergent.zoo import evaluate

REPAIRS = ("none", "reset-bn", "repair")
BARRIER_DEFINITIONS = {
    "loss": "max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))",
    "accuracy": "max_alpha ((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)",
}


def interpolate_state(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * A + alpha * B for floating tensors; integer buffers (BatchNorm's
    ``num_batches_tracked``) are taken from A. At alpha 0 and 1 the endpoints are reproduced exactly."""
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if not torch.is_floating_point(a):
            out[key] = a.clone()
        elif alpha == 0:
            out[key] = a.clone()
        elif alpha == 1:
            out[key] = b.clone()
        else:
            out[key] = torch.lerp(a, b.to(a.dtype), float(alpha))
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_renormalisation(model: nn.Module, mode: str, calibration: torch.Tensor | None) -> None:
    """Refuse a renormalisation mode that is unknown, lacks calibration inputs, or has nothing to
    act on (``reset-bn`` on a net without BatchNorm would silently leave it unchanged)."""
    if mode not in REPAIRS:
        raise ValueError(f"The 'repair' parameter must be one of {REPAIRS}. Got {mode!r} instead.")
    if mode != "none" and calibration is None:
        raise ValueError(f"repair={mode!r} needs calibration inputs (training images).")
    if mode == "reset-bn" and not has_batchnorm(model):
        raise ValueError(
            f"repair='reset-bn' recomputes BatchNorm statistics, but the {type(model).__name__} has "
            "no BatchNorm layer: it would change nothing. Use repair='repair' (REPAIR renormalises "
            "every hidden layer) or 'none'."
        )


@torch.no_grad()
def reset_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance on ``images`` (exact averages over the
    batches: momentum None), as after averaging weights the stored statistics no longer fit."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m, m.momentum) for m in norms]
    was = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        device = module_device(model)
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was)
    return model.eval() if not was else model


@dataclass
class BarrierResult:
    """Loss and accuracy along the straight path between two nets."""

    alphas: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]  # split -> {"loss": ..., "accuracy": ...}
    repair: str
    align: str
    barriers: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "repair": self.repair,
            "align": self.align,
            "curves": {s: {k: v.tolist() for k, v in c.items()} for s, c in self.curves.items()},
            "barriers": self.barriers,
            "definitions": BARRIER_DEFINITIONS,
        }


def barrier(values: np.ndarray, alphas: np.ndarray, *, higher_is_better: bool = False) -> float:
    """Largest gap between the straight line joining the endpoint values and the curve."""
    values, alphas = np.asarray(values, dtype=float), np.asarray(alphas, dtype=float)
    line = (1 - alphas) * values[0] + alphas * values[-1]
    gap = line - values if higher_is_better else values - line
    return float(gap.max())


def interpolation_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    points: int = 25,
    repair_mode: str = "none",
    align: str = "none",
    calibration: torch.Tensor | None = None,
    alphas: Sequence[float] | None = None,
    endpoints: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    progress: bool | None = None,
) -> BarrierResult:
    """Evaluate every split at ``points`` alphas from 0 to 1 between ``model_a`` and ``model_b``.

    ``repair_mode``: ``none`` (plain averaging), ``reset-bn`` (recompute BatchNorm statistics on
    ``calibration`` inputs at each point) or ``repair`` (REPAIR renormalisation on ``calibration``).
    ``model_b`` should already be aligned to ``model_a`` when ``align`` is not ``none`` (the label is
    recorded only). ``alphas`` (from 0 to 1) replaces the ``points`` even steps; ``endpoints``
    (split -> {0.0 or 1.0: (loss, accuracy)}) skips evaluating the end nets again.
    """
    check_renormalisation(model_a, repair_mode, calibration)
    if int(points) != points or points < 2:
        raise ValueError(f"The 'points' parameter must be an integer >= 2. Got {points!r} instead.")
    alphas = np.linspace(0.0, 1.0, int(points)) if alphas is None else np.asarray(alphas, float)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    stats_a = stats_b = None
    if repair_mode == "repair":
        stats_a = point_statistics(model_a, calibration)
        stats_b = point_statistics(model_b, calibration)
    curves = {s: {"loss": np.zeros(len(alphas)), "accuracy": np.zeros(len(alphas))} for s in splits}
    work = copy.deepcopy(model_a)
    for i, alpha in enumerate(bar(alphas, progress=progress, desc=f"interpolate ({repair_mode})")):
        endpoint = alpha in (0.0, 1.0)
        if endpoint and endpoints is not None:
            for split in splits:
                loss, acc = endpoints[split][float(alpha)]
                curves[split]["loss"][i], curves[split]["accuracy"][i] = loss, acc
            continue
        work.load_state_dict(interpolate_state(state_a, state_b, float(alpha)))
        if repair_mode == "reset-bn" and not endpoint:
            reset_batchnorm(work, calibration)
        elif repair_mode == "repair" and not endpoint:
            repair(work, stats_a, stats_b, float(alpha), calibration)
        for split, (x, y) in splits.items():
            loss, acc = evaluate(work, x, y, device=module_device(work))
            curves[split]["loss"][i] = loss
            curves[split]["accuracy"][i] = acc
    result = BarrierResult(alphas, curves, repair_mode, align)
    for split, c in curves.items():
        result.barriers[split] = {
            "loss": barrier(c["loss"], alphas),
            "accuracy": barrier(c["accuracy"], alphas, higher_is_better=True),
        }
    return result
