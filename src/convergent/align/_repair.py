"""REPAIR (Jordan et al. 2023) at every normalised layer: each hidden channel's mean and standard
deviation reset to a target (the interpolation of two nets' statistics, or the mean of K nets'), the
correction folded into the net's own parameters, so the repaired net has the same architecture.

Correction points are found on the traced graph (:mod:`convergent.align._groups`), in forward order,
for every hidden channel axis (never the net's output):

- ``affine``: the output of a Conv/Linear layer that is not normalised right after; folded into its
  weight and bias;
- ``norm``: the output of a BatchNorm or LayerNorm with affine parameters (a conv followed by
  BatchNorm, a transformer's LayerNorm); folded into the norm's weight and bias. BatchNorm running
  statistics are recomputed in the same pass (the ``reset-bn`` part);
- ``sum``: a residual addition ``a + b`` not normalised right after (a ResNet block output before its
  ReLU, a pre-norm transformer's residual stream), as REPAIR does at ResNet50's block outputs. When
  both branches end in a foldable layer, both are scaled by the same factor; when one is an identity
  shortcut, the other branch alone is scaled by the factor ``s`` that solves
  ``Var(s a + b) = target^2`` per channel (from the branches' variances and covariance) and shifted
  to the target mean.

One pass over the calibration images, as REPAIR's own code does: BatchNorm layers run in training
mode with exact running averages (momentum ``None``), every point's output is renormalised to its
target with the batch's statistics (so later layers see repaired inputs) while the exact float64
moments of the un-repaired output (and of a sum's branches) are accumulated; then the corrections,
computed from those moments, are folded into the parameters.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from convergent._device import module_device
from convergent.align._groups import _Analysis, _Value

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NORMS = (*_BATCHNORMS, nn.LayerNorm)
_AFFINES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRANSPARENT_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_TRANSPARENT_FUNCTIONS = {nn.functional.dropout}
_SUMS = {operator.add, operator.iadd, torch.add}
_EPS = 1e-12


@dataclass(frozen=True)
class RepairPoint:
    """A channel axis REPAIR renormalises.

    Attributes
    ----------
    node : str
        The traced graph's node whose output it is (the key of its statistics).
    kind : str
        ``"affine"``, ``"norm"`` or ``"sum"``.
    dim : int
        The channel axis of that output (1 for maps, the last for vectors and tokens).
    modules : tuple of (str or None)
        Where the correction is folded: the layer itself; for a sum, the layer ending each branch
        (``None`` for a branch that cannot absorb it, such as an identity shortcut).
    groups : tuple of str
        The permutation groups whose units the channel axis holds (one, but for concatenations).
    """

    node: str
    kind: str
    dim: int
    modules: tuple[str | None, ...]
    groups: tuple[str, ...] = ()


def _foldable(mod: nn.Module) -> bool:
    if isinstance(mod, _NORMS):
        return getattr(mod, "weight", None) is not None and getattr(mod, "bias", None) is not None
    return isinstance(mod, _AFFINES)


class _Points:
    """The traced graph of a model and its REPAIR points."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        analysis = _Analysis(model, example)
        analysis.run()
        self.graph = analysis.graph
        modules = dict(model.named_modules())
        self.points: dict[str, RepairPoint] = {}

        def hidden(value: object) -> bool:
            return (
                isinstance(value, _Value)
                and all(seg.repeat == 1 for seg in value.layout)
                and not any(analysis.uf.fixed[analysis.uf.find(s.group)] for s in value.layout)
            )

        def normalised(node: fx.Node) -> bool:
            users = list(node.users)
            return bool(users) and all(
                u.op == "call_module" and isinstance(modules[str(u.target)], _NORMS) for u in users
            )

        def producer(node: fx.Node) -> str | None:
            """The foldable layer a residual branch ends in, through dropout / identity."""
            while True:
                if len(node.users) != 1:
                    return None
                if node.op == "call_module":
                    mod = modules[str(node.target)]
                    if isinstance(mod, _TRANSPARENT_MODULES):
                        node = node.args[0]
                        continue
                    return str(node.target) if _foldable(mod) else None
                if node.op == "call_function" and node.target in _TRANSPARENT_FUNCTIONS:
                    node = node.args[0]
                    continue
                return None

        for node in self.graph.graph.nodes:
            value = analysis.values.get(node)
            if not hidden(value) or normalised(node):
                continue
            dim = value.dim % value.ndim
            groups = tuple(analysis.root_names[analysis.uf.find(s.group)] for s in value.layout)
            if node.op == "call_module":
                mod = modules[str(node.target)]
                if isinstance(mod, (*_NORMS, *_AFFINES)) and _foldable(mod):
                    kind = "norm" if isinstance(mod, _NORMS) else "affine"
                    self.points[node.name] = RepairPoint(
                        node.name, kind, dim, (str(node.target),), groups
                    )
            elif node.op == "call_function" and node.target in _SUMS:
                args = node.args[:2]
                if not all(isinstance(a, fx.Node) and hidden(analysis.values.get(a)) for a in args):
                    continue
                branches = tuple(producer(a) for a in args)
                if any(branches) and len(set(args)) == 2:
                    self.points[node.name] = RepairPoint(node.name, "sum", dim, branches, groups)


def repair_points(model: nn.Module, example: torch.Tensor) -> list[RepairPoint]:
    """Every channel axis :func:`repair` renormalises, in forward order (see the module docs)."""
    return list(_Points(model, example.to(module_device(model))).points.values())


class _Moments:
    """Exact float64 means and centred co-moments, per channel, of k tensors seen together."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None  # (k, C)
        self.comoment: torch.Tensor | None = None  # (k, k, C)

    def update(self, parts: list[torch.Tensor]) -> None:
        x = torch.stack(parts)  # (k, n, C)
        n = x.shape[1]
        mean = x.mean(1)
        centred = x - mean[:, None, :]
        comoment = torch.einsum("inc,jnc->ijc", centred, centred)
        if self.mean is None:
            self.count, self.mean, self.comoment = n, mean, comoment
            return
        total = self.count + n
        delta = mean - self.mean
        self.comoment = (
            self.comoment + comoment + (self.count * n / total) * delta[:, None] * delta[None, :]
        )
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(k, C) means and (k, k, C) population co-moments (divided by the count)."""
        return self.mean.cpu().numpy(), (self.comoment / self.count).cpu().numpy()


class _Pass(fx.Interpreter):
    def __init__(
        self,
        graph: fx.GraphModule,
        points: Mapping[str, RepairPoint],
        targets: Mapping[str, tuple[np.ndarray, np.ndarray]] | None,
    ) -> None:
        super().__init__(graph)
        self.points, self.targets = points, targets
        self.moments: dict[str, _Moments] = {}

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        point = self.points.get(n.name)
        if point is None:
            return out

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.movedim(point.dim, -1).reshape(-1, t.shape[point.dim]).double()

        parts = [rows(out)]
        if point.kind == "sum":
            parts += [rows(self.env[a]) for a in n.args[:2]]
        elif n.op == "call_module" and isinstance(self.fetch_attr(str(n.target)), _BATCHNORMS):
            parts.append(rows(self.env[n.args[0]]))  # the input, for exact running statistics
        self.moments.setdefault(n.name, _Moments()).update(parts)
        if self.targets is None or n.name not in self.targets:
            return out
        mean_t, std_t = (
            torch.as_tensor(v, dtype=torch.float64, device=out.device) for v in self.targets[n.name]
        )
        shape = [1] * out.ndim
        shape[point.dim] = -1

        def channel(v: torch.Tensor) -> torch.Tensor:
            return v.to(out.dtype).reshape(shape)

        if point.kind == "sum" and not all(point.modules):
            # what the fold will do: scale the absorbing branch only (batch statistics here)
            i = 0 if point.modules[0] else 1
            a, b = parts[1 + i], parts[2 - i]
            ma, mb = a.mean(0), b.mean(0)
            var_a, var_b = a.var(0, unbiased=False), b.var(0, unbiased=False)
            cov = ((a - ma) * (b - mb)).mean(0)
            scale = torch.as_tensor(
                _sum_scale(*(v.cpu().numpy() for v in (var_a, var_b, cov, std_t))),
                device=out.device,
            )
            shift = mean_t - scale * ma - mb
            branch, other = (self.env[arg] for arg in (n.args[i], n.args[1 - i]))
            return branch * channel(scale) + channel(shift) + other
        x = parts[0]
        mean, std = x.mean(0), x.std(0, unbiased=False)
        scale = torch.where(std > _EPS, std_t / std.clamp_min(_EPS), torch.ones_like(std))
        return out * channel(scale) + channel(mean_t - scale * mean)


@torch.no_grad()
def _run(
    model: nn.Module,
    points: _Points,
    images: torch.Tensor,
    batch_size: int,
    targets: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, _Moments]:
    runner = _Pass(points.graph, points.points, targets)
    device = module_device(model)
    for start in range(0, len(images), batch_size):
        runner.run(images[start : start + batch_size].to(device))
    return runner.moments


@torch.no_grad()
def point_statistics(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 256
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per REPAIR point (node name), the (C,) mean and standard deviation of its output on
    ``images`` (eval mode, float64, every spatial position or token a sample)."""
    was = model.training
    model.eval()
    try:
        points = _Points(model, images[:2].to(module_device(model)))
        moments = _run(model, points, images, batch_size)
    finally:
        model.train(was)
    out = {}
    for name, m in moments.items():
        mean, comoment = m.moments()
        out[name] = (mean[0], np.sqrt(np.clip(comoment[0, 0], 0, None)))
    return out


def _fold(mod: nn.Module, scale: np.ndarray, shift: np.ndarray | None) -> None:
    """``mod``'s output becomes ``scale * output + shift`` (per channel)."""
    weight = mod.weight
    s = torch.as_tensor(scale, dtype=weight.dtype, device=weight.device)
    weight.mul_(s.reshape((-1,) + (1,) * (weight.ndim - 1)))
    if mod.bias is not None:
        mod.bias.mul_(s)
        if shift is not None:
            mod.bias.add_(torch.as_tensor(shift, dtype=weight.dtype, device=weight.device))


def _sum_scale(
    var_a: np.ndarray, var_b: np.ndarray, cov: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Per channel the s > 0 with Var(s a + b) = target^2; 1 where there is none."""
    disc = cov**2 - var_a * (var_b - target**2)
    root = np.divide(
        -cov + np.sqrt(np.clip(disc, 0, None)),
        var_a,
        out=np.ones_like(var_a),
        where=var_a > _EPS,
    )
    return np.where((disc >= 0) & (var_a > _EPS) & (root > 0), root, 1.0)


@torch.no_grad()
def repair(
    model: nn.Module,
    stats_a: Mapping[str, tuple[np.ndarray, np.ndarray]],
    stats_b: Mapping[str, tuple[np.ndarray, np.ndarray]],
    alpha: float,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
) -> nn.Module:
    """REPAIR ``model`` in place: every point's channel statistics set to
    ``(1 - alpha) * stats_a + alpha * stats_b`` (means and standard deviations, from
    :func:`point_statistics` of the two endpoints), BatchNorm statistics recomputed on ``images``,
    the corrections folded into the parameters. Returns ``model`` in eval mode.

    Exact when ``images`` fit in one batch; otherwise a point downstream of another sees, during the
    pass, inputs renormalised with each batch's statistics rather than the population's (REPAIR's
    own approximation; large batches keep it small). A residual sum whose target standard deviation
    no positive scale of its branch can reach keeps its scale (only its mean is set). A layer ending
    a residual branch is corrected twice: to its own target, then as part of the sum, which wins.
    """
    points = _Points(model, images[:2].to(module_device(model)))
    targets = {
        name: (
            (1 - alpha) * np.asarray(stats_a[name][0]) + alpha * np.asarray(stats_b[name][0]),
            (1 - alpha) * np.asarray(stats_a[name][1]) + alpha * np.asarray(stats_b[name][1]),
        )
        for name in points.points
        if name in stats_a and name in stats_b
    }
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        moments = _run(model, points, images, batch_size, targets)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    modules = dict(model.named_modules())
    for name, point in points.points.items():
        mod = modules[point.modules[0]] if point.kind == "norm" else None
        if isinstance(mod, _BATCHNORMS) and name in moments:
            # exact population statistics of the input (not the mean of batch variances), and the
            # eval-mode output they give: mean beta, variance gamma^2 var / (var + eps)
            mean, comoment = moments[name].moments()
            var = np.clip(comoment[1, 1], 0, None)
            mod.running_mean.copy_(torch.as_tensor(mean[1]))
            mod.running_var.copy_(torch.as_tensor(var))
            gamma = mod.weight.detach().double().cpu().numpy()
            m = moments[name]
            m.mean[0] = mod.bias.detach().double()
            m.comoment[0, 0] = (
                torch.as_tensor(gamma**2 * var / (var + mod.eps), device=m.comoment.device)
                * m.count
            )
    _fold_all(model, points, targets, moments)
    return model.eval()


def _fold_all(
    model: nn.Module,
    points: _Points,
    targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    moments: Mapping[str, _Moments],
) -> None:
    """Fold every point's correction, computed from the moments of its un-repaired output (and of a
    sum's branches) measured in a pass where every earlier point was already repaired."""
    modules = dict(model.named_modules())
    for name, point in points.points.items():
        if name not in targets:
            continue
        mean_t, std_t = targets[name]
        mean, comoment = moments[name].moments()
        std = np.sqrt(np.clip(comoment[0, 0], 0, None))
        if point.kind != "sum" or all(point.modules):
            scale = np.divide(std_t, std, out=np.ones_like(std), where=std > _EPS)
            shift = mean_t - scale * mean[0]
            shifted = False
            for module in point.modules:
                has_bias = getattr(modules[module], "bias", None) is not None
                _fold(modules[module], scale, None if shifted else shift)
                shifted = shifted or has_bias
            continue
        i = 0 if point.modules[0] else 1  # the branch that absorbs the correction
        var_a, var_b = comoment[1 + i, 1 + i], comoment[2 - i, 2 - i]
        scale = _sum_scale(var_a, var_b, comoment[1, 2], std_t)
        shift = mean_t - scale * mean[1 + i] - mean[2 - i]
        _fold(modules[point.modules[i]], scale, shift)
