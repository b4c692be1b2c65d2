"""Permutation groups found automatically by tracing a model with ``torch.fx``.

Permuting the units (channels) of a hidden layer, and permuting every parameter axis that reads or
writes those units in the same way, leaves the function a net computes unchanged. Which axes must
move together follows from the graph: a conv's output channels, its bias, the BatchNorm that follows
(weight, bias, running statistics), the next conv's input channels, both sides of a residual
addition, the blocks of a linear layer's input that a flattened conv map feeds, the segments of a
concatenation, and so on. This module traces the model, tracks for every tensor which *group* each
position of its channel axis belongs to (union-find: a residual addition merges two groups into one),
and lists, per group, every (parameter, axis) it permutes. Groups that touch the model's input or
output are fixed (never permuted). An operation it cannot reason about raises
:class:`UnsupportedOperationError` naming the node and the model's source line: no part of a model
is ever silently left unpermuted.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from convergent._errors import ConvergentError


class UnsupportedOperationError(ConvergentError):
    """The tracer met an operation whose effect on unit order it cannot determine."""


# ------------------------------------------------------------------------------------------------
# layouts: what the channel axis of a tensor is made of


@dataclass(frozen=True)
class Segment:
    """``size`` channels of group ``group``, each repeated over ``repeat`` contiguous positions
    (``repeat > 1`` after a conv map of H*W positions is flattened into a vector)."""

    group: int
    size: int
    repeat: int = 1


Layout = tuple[Segment, ...]


@dataclass
class _Value:
    """What the tracer knows about one tensor: which dim is the channel axis, and its layout."""

    dim: int  # channel axis (1 for (B, C, ...) maps, -1 for (..., C) vectors/tokens)
    layout: Layout
    ndim: int


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []
        self.origin: list[str] = []

    def new(self, size: int, origin: str, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] != self.size[rb]:
            raise UnsupportedOperationError(
                f"{where}: joins channel groups of different sizes ({self.size[ra]} and {self.size[rb]})."
            )
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.fixed[ra] = self.fixed[ra] or self.fixed[rb]
        return ra


@dataclass
class PermutationGroup:
    """One set of unit axes that must be permuted together.

    Attributes
    ----------
    name : str
        The group's name: the module whose output channels created it (e.g. ``"conv3.conv"`` or,
        after a residual addition merged several, the first of them).
    size : int
        Number of units.
    axes : list of (str, int, int, int)
        ``(parameter or buffer name, axis, offset, repeat)``: positions ``offset + unit*repeat + j``
        (``j < repeat``) of that axis hold the group's unit ``unit``.
    layers : list of str
        Modules whose outputs carry this group's units (where activations can be read to match it).
    """

    name: str
    size: int
    axes: list[tuple[str, int, int, int]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)


@dataclass
class PermutationSpec:
    """Every permutation group of a model, found by :func:`find_permutation_groups`."""

    groups: dict[str, PermutationGroup]
    fixed_parameters: list[str]

    def random_permutations(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {name: rng.permutation(g.size) for name, g in self.groups.items()}

    def identity(self) -> dict[str, np.ndarray]:
        return {name: np.arange(g.size) for name, g in self.groups.items()}


# ------------------------------------------------------------------------------------------------
# tracing


class _Tracer(fx.Tracer):
    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LEAVES = (
    *_ELEMENTWISE_MODULES,
    *_POOLS,
    *_BATCHNORMS,
    *_CONVS,
    nn.Linear,
    nn.LayerNorm,
    nn.Flatten,
)

_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.nn.functional.relu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.dropout,
    torch.nn.functional.elu,
    torch.exp,
    torch.abs,
    torch.nn.functional.relu6,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach", "float", "abs"}
_ADD_LIKE = {
    operator.add,
    operator.iadd,
    torch.add,
    operator.mul,
    operator.imul,
    torch.mul,
    operator.sub,
    torch.sub,
}
_SPATIAL_POOL_FUNCTIONS = {
    torch.nn.functional.max_pool2d,
    torch.nn.functional.avg_pool2d,
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.max_pool1d,
    torch.nn.functional.avg_pool1d,
    torch.nn.functional.adaptive_avg_pool1d,
}


def _where(node: fx.Node) -> str:
    trace = (node.stack_trace or "").strip().splitlines()
    # the innermost frame outside torch itself is the model's source line
    frames = [
        line.strip()
        for line in trace
        if line.strip().startswith("File ") and "/torch/" not in line and "\\torch\\" not in line
    ]
    src = f" at {frames[-1]}" if frames else ""
    target = (
        node.target
        if isinstance(node.target, str)
        else getattr(node.target, "__name__", node.target)
    )
    return f"node {node.name!r} ({node.op} {target}){src}"


class _Analysis:
    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.uf = _UnionFind()
        # (group, param name, axis, offset, repeat) before union-find is final
        self.axes: list[tuple[int, str, int, int, int]] = []
        self.layers: list[tuple[int, str]] = []
        self.touched_params: set[str] = set()
        try:
            self.graph = fx.GraphModule(model, _Tracer().trace(model))
        except Exception as exc:  # symbolic tracing failed: data-dependent control flow etc.
            raise UnsupportedOperationError(
                f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: {exc}). "
                "Permutation groups need a traceable model (no data-dependent Python control flow)."
            ) from exc
        from torch.fx.passes.shape_prop import ShapeProp

        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                ShapeProp(self.graph).propagate(example)
        finally:
            model.train(was)

    # -- helpers
    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnsupportedOperationError(f"{_where(node)}: output is not a single tensor.")
        return tuple(meta.shape)

    def fixed_value(self, node: fx.Node, dim: int, origin: str) -> _Value:
        shape = self.shape(node)
        g = self.uf.new(shape[dim], origin, fixed=True)
        return _Value(dim, (Segment(g, shape[dim]),), len(shape))

    def add_axes(self, layout: Layout, param: str, axis: int) -> None:
        offset = 0
        for seg in layout:
            self.axes.append((seg.group, param, axis, offset, seg.repeat))
            offset += seg.size * seg.repeat
        self.touched_params.add(param)

    def plain(self, value: _Value, node: fx.Node) -> Layout:
        """The layout of a channels axis that is not a flattened map (every repeat is 1)."""
        if any(seg.repeat != 1 for seg in value.layout):
            raise UnsupportedOperationError(
                f"{_where(node)}: expects a map's channel axis but receives a flattened map."
            )
        return value.layout

    def note_layers(self, layout: Layout, name: str) -> None:
        for seg in layout:
            if seg.repeat == 1:
                self.layers.append((seg.group, name))

    def union_layouts(self, a: Layout, b: Layout, node: fx.Node) -> Layout:
        if [(s.size, s.repeat) for s in a] != [(s.size, s.repeat) for s in b]:
            raise UnsupportedOperationError(
                f"{_where(node)}: combines tensors whose channel layouts differ "
                f"({[(s.size, s.repeat) for s in a]} vs {[(s.size, s.repeat) for s in b]})."
            )
        return tuple(
            Segment(self.uf.union(x.group, y.group, _where(node)), x.size, x.repeat)
            for x, y in zip(a, b)
        )

    # -- the walk
    def run(self) -> PermutationSpec:
        values: dict[fx.Node, Any] = {}
        for node in self.graph.graph.nodes:
            values[node] = self.visit(node, values)
        spec_groups: dict[int, PermutationGroup] = {}
        for g, param, axis, offset, repeat in self.axes:
            root = self.uf.find(g)
            if self.uf.fixed[root]:
                continue
            group = spec_groups.setdefault(
                root, PermutationGroup(self.uf.origin[root], self.uf.size[root])
            )
            entry = (param, axis, offset, repeat)
            if entry not in group.axes:
                group.axes.append(entry)
        for g, layer in self.layers:
            root = self.uf.find(g)
            if root in spec_groups and layer not in spec_groups[root].layers:
                spec_groups[root].layers.append(layer)
        named = {}
        for group in spec_groups.values():
            name = group.name
            while name in named:
                name += "'"
            group.name = name
            named[name] = group
        state = self.model.state_dict()
        permuted = {a[0] for g in named.values() for a in g.axes}
        fixed = [k for k in state if k not in permuted]
        return PermutationSpec(named, fixed)

    def visit(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        if node.op == "placeholder":
            return self.fixed_value(node, 1 if len(self.shape(node)) > 2 else -1, "input")
        if node.op == "output":
            out = values[node.args[0]] if isinstance(node.args[0], fx.Node) else None
            if not isinstance(out, _Value):
                raise UnsupportedOperationError(
                    f"{_where(node)}: the model must return one tensor."
                )
            for seg in out.layout:
                g = self.uf.find(seg.group)
                self.uf.fixed[g] = True
            return None
        if node.op == "get_attr":
            raise UnsupportedOperationError(
                f"{_where(node)}: reads a parameter or buffer directly in forward(); its unit axes "
                "cannot be inferred. Wrap it in a module convergent knows (Linear, Conv, norms)."
            )
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)], values)
        if node.op == "call_function":
            return self.visit_function(node, values)
        if node.op == "call_method":
            return self.visit_method(node, values)
        raise UnsupportedOperationError(f"{_where(node)}: unknown node kind.")

    def arg(self, node: fx.Node, values: dict[fx.Node, Any], i: int = 0) -> _Value:
        a = node.args[i] if i < len(node.args) else None
        if not isinstance(a, fx.Node) or not isinstance(values.get(a), _Value):
            raise UnsupportedOperationError(
                f"{_where(node)}: argument {i} is not a tracked tensor."
            )
        return values[a]

    def visit_module(self, node: fx.Node, mod: nn.Module, values: dict[fx.Node, Any]) -> _Value:
        name = str(node.target)
        x = self.arg(node, values)
        if isinstance(mod, _CONVS):
            if mod.groups != 1:
                raise UnsupportedOperationError(
                    f"{_where(node)}: grouped/depthwise convolution (groups={mod.groups}) is not "
                    "supported yet."
                )
            if x.dim != 1:
                raise UnsupportedOperationError(
                    f"{_where(node)}: a convolution applied to a channels-last tensor."
                )
            g = self.uf.new(mod.out_channels, name)
            self.add_axes(self.plain(x, node), f"{name}.weight", 1)
            self.add_axes((Segment(g, mod.out_channels),), f"{name}.weight", 0)
            if mod.bias is not None:
                self.add_axes((Segment(g, mod.out_channels),), f"{name}.bias", 0)
            self.layers.append((g, name))
            return _Value(1, (Segment(g, mod.out_channels),), len(self.shape(node)))
        if isinstance(mod, nn.Linear):
            if x.dim not in (-1, x.ndim - 1):
                raise UnsupportedOperationError(
                    f"{_where(node)}: a Linear layer applied to a channels-first map; flatten first."
                )
            g = self.uf.new(mod.out_features, name)
            self.add_axes(x.layout, f"{name}.weight", 1)
            self.add_axes((Segment(g, mod.out_features),), f"{name}.weight", 0)
            if mod.bias is not None:
                self.add_axes((Segment(g, mod.out_features),), f"{name}.bias", 0)
            self.layers.append((g, name))
            return _Value(-1, (Segment(g, mod.out_features),), len(self.shape(node)))
        if isinstance(mod, _BATCHNORMS):
            for pname, _ in list(mod.named_parameters(recurse=False)) + list(
                mod.named_buffers(recurse=False)
            ):
                if pname == "num_batches_tracked":
                    continue
                self.add_axes(x.layout, f"{name}.{pname}", 0)
            self.note_layers(x.layout, name)
            return x
        if isinstance(mod, nn.LayerNorm):
            if len(mod.normalized_shape) != 1 or x.dim not in (-1, x.ndim - 1):
                raise UnsupportedOperationError(
                    f"{_where(node)}: LayerNorm is supported over the channel (last) dim only."
                )
            for pname, _ in mod.named_parameters(recurse=False):
                self.add_axes(x.layout, f"{name}.{pname}", 0)
            return x
        if isinstance(mod, _ELEMENTWISE_MODULES):
            self.note_layers(x.layout, name)
            return x
        if isinstance(mod, _POOLS):
            self.plain(x, node)
            return x
        if isinstance(mod, nn.Flatten):
            return self.flatten(node, x, mod.start_dim, mod.end_dim)
        if isinstance(mod, nn.Sequential):  # not a leaf in practice; traced through
            raise UnsupportedOperationError(f"{_where(node)}: unexpected Sequential leaf.")
        if any(True for _ in mod.parameters(recurse=False)) or any(
            True for _ in mod.buffers(recurse=False)
        ):
            raise UnsupportedOperationError(
                f"{_where(node)}: module {type(mod).__name__} has parameters convergent does not "
                "know how to permute."
            )
        raise UnsupportedOperationError(
            f"{_where(node)}: module {type(mod).__name__} is not supported by the permutation tracer."
        )

    def flatten(self, node: fx.Node, x: _Value, start: int, end: int) -> _Value:
        shape_in = self.shape(node.args[0])
        ndim = len(shape_in)
        start, end = start % ndim, end % ndim
        if x.dim != 1 or start != 1 or end != ndim - 1:
            if x.dim in (-1, ndim - 1) and (start > ndim - 1 or end < ndim - 1 or start == end):
                return x
            if x.dim in (-1, ndim - 1) and end == ndim - 1 and start < end:
                # flattening leading dims into the last: channel layout repeats (tokens merged)
                pass
            raise UnsupportedOperationError(
                f"{_where(node)}: flattens dims {start}..{end} of a tensor whose channel axis is "
                f"dim {x.dim}; only flattening (C, *spatial) into one vector is supported."
            )
        spatial = int(np.prod(shape_in[2:])) if ndim > 2 else 1
        layout = tuple(Segment(s.group, s.size, s.repeat * spatial) for s in x.layout)
        return _Value(-1, layout, 2)

    def visit_function(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        fn = node.target
        if fn in _ELEMENTWISE_FUNCTIONS:
            return self.arg(node, values)
        if fn in _SPATIAL_POOL_FUNCTIONS:
            x = self.arg(node, values)
            self.plain(x, node)
            return x
        if fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self.flatten(node, self.arg(node, values), start, end)
        if fn in _ADD_LIKE:
            a, b = node.args[0], node.args[1]
            va = values.get(a) if isinstance(a, fx.Node) else None
            vb = values.get(b) if isinstance(b, fx.Node) else None
            if isinstance(va, _Value) and isinstance(vb, _Value):
                if self.shape(a) != self.shape(b):
                    raise UnsupportedOperationError(
                        f"{_where(node)}: broadcasting between tensors of shapes {self.shape(a)} and "
                        f"{self.shape(b)} is not supported."
                    )
                return _Value(va.dim, self.union_layouts(va.layout, vb.layout, node), va.ndim)
            if isinstance(va, _Value) and not isinstance(b, fx.Node):
                return va
            if isinstance(vb, _Value) and not isinstance(a, fx.Node):
                return vb
            raise UnsupportedOperationError(f"{_where(node)}: arithmetic with an untracked tensor.")
        if fn is torch.cat:
            tensors = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            vals = [values.get(t) for t in tensors]
            if not all(isinstance(v, _Value) for v in vals):
                raise UnsupportedOperationError(f"{_where(node)}: concatenates untracked tensors.")
            ndim = vals[0].ndim
            if dim % ndim != vals[0].dim % ndim:
                raise UnsupportedOperationError(
                    f"{_where(node)}: concatenation along dim {dim}, not the channel axis, is not "
                    "supported."
                )
            layout = tuple(seg for v in vals for seg in v.layout)
            return _Value(vals[0].dim, layout, ndim)
        if fn is torch.mean or fn is torch.amax or fn is torch.sum:
            return self.reduce(node, values)
        if fn is getattr:
            raise UnsupportedOperationError(f"{_where(node)}: attribute access on a tensor.")
        raise UnsupportedOperationError(
            f"{_where(node)}: function {getattr(fn, '__name__', fn)} is not supported by the "
            "permutation tracer."
        )

    def reduce(self, node: fx.Node, values: dict[fx.Node, Any]) -> _Value:
        x = self.arg(node, values)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        ndim = x.ndim
        chan = x.dim % ndim
        dims = tuple(d % ndim for d in dims)
        if not dims or chan in dims:
            raise UnsupportedOperationError(f"{_where(node)}: reduces over the channel axis.")
        self.plain(x, node)
        new_dim = chan if keep else chan - sum(d < chan for d in dims)
        new_ndim = ndim if keep else ndim - len(dims)
        return _Value(-1 if new_dim == new_ndim - 1 else new_dim, x.layout, new_ndim)

    def visit_method(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        method = node.target
        if method in _ELEMENTWISE_METHODS:
            return self.arg(node, values)
        if method in ("mean", "amax", "sum"):
            return self.reduce(node, values)
        if method in ("view", "reshape", "flatten"):
            x = self.arg(node, values)
            shape_in, shape_out = self.shape(node.args[0]), self.shape(node)
            if method == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                return self.flatten(node, x, start, end)
            if len(shape_out) == 2 and shape_out[0] == shape_in[0] and x.dim == 1:
                return self.flatten(node, x, 1, -1)
            if shape_in == shape_out:
                return x
            raise UnsupportedOperationError(
                f"{_where(node)}: reshape from {shape_in} to {shape_out} is not supported; only "
                "flattening (B, C, *spatial) to (B, C*spatial)."
            )
        if method == "size" or method == "dim":
            return None
        raise UnsupportedOperationError(
            f"{_where(node)}: tensor method {method!r} is not supported by the permutation tracer."
        )


def find_permutation_groups(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """Trace ``model`` on ``example`` inputs and return its permutation groups.

    Parameters
    ----------
    model : nn.Module
        A model ``torch.fx`` can trace (all built-in architectures can).
    example : torch.Tensor
        An input batch of the right shape (values are irrelevant; used for shapes).

    Raises
    ------
    UnsupportedOperationError
        Naming the node and source line of an operation whose effect on unit order is unknown.
    """
    return _Analysis(model, example).run()


def _index(size: int, offset: int, repeat: int, perm: np.ndarray, length: int) -> np.ndarray:
    idx = np.arange(length)
    block = (perm[:, None] * repeat + np.arange(repeat)[None, :]).reshape(-1) + offset
    idx[offset : offset + size * repeat] = block
    return idx


def apply_permutation(
    state: Mapping[str, torch.Tensor], spec: PermutationSpec, perms: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """A new state dict with every group's units reordered: new unit ``i`` is old unit ``perm[i]``."""
    missing = [g for g in spec.groups if g not in perms]
    if missing:
        raise ValueError(f"No permutation given for groups {missing}.")
    out = {k: v.clone() for k, v in state.items()}
    for name, group in spec.groups.items():
        perm = np.asarray(perms[name])
        if sorted(perm.tolist()) != list(range(group.size)):
            raise ValueError(
                f"The permutation of group {name!r} is not a permutation of {group.size}."
            )
        for param, axis, offset, repeat in group.axes:
            tensor = out[param]
            idx = _index(group.size, offset, repeat, perm, tensor.shape[axis])
            out[param] = tensor.index_select(axis, torch.as_tensor(idx, device=tensor.device))
    return out


def check_permutation_invariance(
    model: nn.Module, example: torch.Tensor, *, seed: int = 0, atol: float = 1e-5
) -> float:
    """Apply a random permutation to every group and check the outputs are unchanged.

    Returns the largest absolute output difference; raises :class:`ConvergentError` when it exceeds
    ``atol`` (a group or axis was missed). Runs in eval mode.
    """
    import copy

    spec = find_permutation_groups(model, example)
    perms = spec.random_permutations(seed)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(apply_permutation(model.state_dict(), spec, perms))
    was = model.training
    model.eval()
    permuted.eval()
    try:
        with torch.no_grad():
            diff = float((model(example) - permuted(example)).abs().max())
    finally:
        model.train(was)
    if not diff <= atol:
        raise ConvergentError(
            f"Permuting the units of {type(model).__name__} changed its outputs by {diff:.3g} "
            f"(> {atol}); the permutation groups are incomplete. Please report this model."
        )
    return diff
