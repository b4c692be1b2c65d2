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

Attention: a Linear output reshaped into ``(..., heads, head_dim)`` makes its group *head
structured*: its permutations are a permutation of the heads combined with a permutation of the units
inside each head (``PermutationGroup.heads``). ``q @ k^T`` joins the query and key groups (they share
the within-head order, the dims being contracted); ``scores @ v`` ties the value group's heads to the
query/key heads (``PermutationGroup.tie``: groups with one tie share the head permutation, each keeps
its own within-head permutations). ``torch.nn.functional.scaled_dot_product_attention`` is read the
same way. Parameters read directly in ``forward`` (a class token, position embeddings, a layer
scale) are permuted along their channel axis when they are added to, multiplied with or concatenated
with a tracked tensor; any other direct use is refused.

Tracing records a concrete example value with every traced value (the model runs once, in eval mode,
on ``example``), so code that unpacks a shape (``(*x.shape[:-1], heads, -1)``, as Hugging Face
models do) traces; control flow on tensor *values* is still refused.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from convergent._device import module_device
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
        self.heads: list[int] = []
        self.ties: list[tuple[int, int, str]] = []  # pairs of groups that share head permutations

    def new(self, size: int, origin: str, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.origin.append(origin)
        self.heads.append(1)
        return len(self.parent) - 1

    def set_heads(self, g: int, heads: int, where: str) -> None:
        r = self.find(g)
        if self.heads[r] not in (1, heads):
            raise UnsupportedOperationError(
                f"{where}: splits a channel group into {heads} heads, which elsewhere is split "
                f"into {self.heads[r]}."
            )
        self.heads[r] = heads

    def tie_heads(self, a: int, b: int, where: str) -> None:
        if self.heads[self.find(a)] != self.heads[self.find(b)]:
            raise UnsupportedOperationError(
                f"{where}: ties the heads of groups split into {self.heads[self.find(a)]} and "
                f"{self.heads[self.find(b)]} heads."
            )
        self.ties.append((a, b, where))

    def tie_sets(self) -> dict[int, int]:
        """Root group -> the smallest root it shares head permutations with (itself if none)."""
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            parent.setdefault(x, x)
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b, where in self.ties:
            ra, rb = find(self.find(a)), find(self.find(b))
            if self.heads[self.find(a)] != self.heads[self.find(b)]:
                raise UnsupportedOperationError(f"{where}: ties groups of different head counts.")
            parent[max(ra, rb)] = min(ra, rb)
        return {g: find(g) for g in range(len(self.parent)) if self.find(g) == g}

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
        if self.heads[ra] != self.heads[rb] and 1 not in (self.heads[ra], self.heads[rb]):
            raise UnsupportedOperationError(
                f"{where}: joins channel groups split into {self.heads[ra]} and {self.heads[rb]} "
                "heads."
            )
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.fixed[ra] = self.fixed[ra] or self.fixed[rb]
        self.heads[ra] = max(self.heads[ra], self.heads[rb])
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
    heads : int
        1 for a plain group; ``H > 1`` for attention units split into H heads of ``size // H``
        contiguous units: its permutations move whole heads (``perm[h*d + j] = s(h)*d + p_h(j)``).
    tie : str or None
        Head-structured groups with the same ``tie`` share the head permutation ``s`` (the query/key
        and the value units of one attention); each keeps its own within-head permutations.
    """

    name: str
    size: int
    axes: list[tuple[str, int, int, int]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    heads: int = 1
    tie: str | None = None


@dataclass
class PermutationSpec:
    """Every permutation group of a model, found by :func:`find_permutation_groups`."""

    groups: dict[str, PermutationGroup]
    fixed_parameters: list[str]

    def units(self) -> list[list[str]]:
        """The groups in solving units: one list per plain group, one per tie of head groups."""
        out: dict[str, list[str]] = {}
        for name, g in self.groups.items():
            out.setdefault(g.tie if g.heads > 1 and g.tie else name, []).append(name)
        return list(out.values())

    def random_permutations(self, seed: int = 0) -> dict[str, np.ndarray]:
        """A random permutation of every group (head groups: random heads, tied, and random units
        inside every head)."""
        rng = np.random.default_rng(seed)
        out = {}
        for names in self.units():
            first = self.groups[names[0]]
            heads = rng.permutation(first.heads)
            for name in names:
                g = self.groups[name]
                if g.heads == 1:
                    out[name] = rng.permutation(g.size)
                    continue
                d = g.size // g.heads
                out[name] = np.concatenate([h * d + rng.permutation(d) for h in heads])
        return out

    def identity(self) -> dict[str, np.ndarray]:
        return {name: np.arange(g.size) for name, g in self.groups.items()}

    def check(self, perms: Mapping[str, np.ndarray]) -> None:
        """Refuse permutations that break a head structure or a tie (``ValueError``)."""
        for names in self.units():
            seen = None
            for name in names:
                g = self.groups[name]
                if g.heads == 1:
                    continue
                d = g.size // g.heads
                blocks = np.asarray(perms[name]).reshape(g.heads, d) // d
                if not (blocks == blocks[:, :1]).all():
                    raise ValueError(
                        f"The permutation of group {name!r} mixes units of different heads; a "
                        f"group of {g.heads} heads is permuted head by head."
                    )
                if seen is not None and not np.array_equal(seen, blocks[:, 0]):
                    raise ValueError(
                        f"The permutation of group {name!r} moves its heads unlike the other "
                        f"groups of tie {g.tie!r}; tied groups share one head permutation."
                    )
                seen = blocks[:, 0]


# ------------------------------------------------------------------------------------------------
# tracing


class _ConcreteProxy(fx.Proxy):
    """A proxy that knows the value it stands for on the example input, so Python code may unpack
    shapes (``(*x.shape[:-1], -1)``) and take their length; bool() of a tensor stays an error."""

    def _meta(self) -> Any:
        return getattr(self.tracer, "metas", {}).get(self.node, _NO_META)

    def __iter__(self):  # type: ignore[override]
        meta = self._meta()
        if isinstance(meta, (tuple, list)):
            return iter([self[i] for i in range(len(meta))])
        return super().__iter__()

    def __len__(self) -> int:
        meta = self._meta()
        if isinstance(meta, (tuple, list)):
            return len(meta)
        return super().__len__()

    def __bool__(self) -> bool:
        meta = self._meta()
        if isinstance(meta, (bool, int)) and not isinstance(meta, torch.Tensor):
            return bool(meta)
        return super().__bool__()


_NO_META = object()


class _Tracer(fx.Tracer):
    """torch.fx tracing through everything but the modules in ``_LEAVES`` (and torch.nn's own), with
    the concrete value of every node computed on the example input as it is traced."""

    def __init__(self, example: torch.Tensor | None = None) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.example = example
        self.metas: dict[fx.Node, Any] = {}
        self.computing = False

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if self.computing:  # running a leaf eagerly: its parameters are plain tensors
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if self.computing:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def create_proxy(self, kind, target, args, kwargs, *rest, **kw):  # type: ignore[no-untyped-def]
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        if self.example is None:
            return proxy

        def meta(a: Any) -> Any:
            if isinstance(a, fx.Proxy):
                value = self.metas.get(a.node, _NO_META)
                if value is _NO_META:
                    raise LookupError
                return value
            return a

        self.computing = True
        try:
            a = fx.node.map_aggregate(args, meta)
            k = fx.node.map_aggregate(kwargs, meta)
            with torch.no_grad():
                if kind == "placeholder":
                    value = self.example if not self.metas else _NO_META
                elif kind == "get_attr":
                    value = self.root
                    for part in str(target).split("."):
                        value = getattr(value, part)
                elif kind == "call_function":
                    value = target(*a, **k)
                elif kind == "call_method":
                    value = getattr(a[0], target)(*a[1:], **k)
                elif kind == "call_module":  # forward(), not __call__ (patched while tracing)
                    value = self.root.get_submodule(target).forward(*a, **k)
                else:
                    value = _NO_META
        except Exception:  # noqa: BLE001 - no concrete value: fx's own rules apply
            value = _NO_META
        finally:
            self.computing = False
        if value is not _NO_META:
            self.metas[proxy.node] = value
        return proxy


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
_ELEMENTWISE_METHODS = {
    "relu",
    "sigmoid",
    "tanh",
    "contiguous",
    "clone",
    "detach",
    "float",
    "abs",
    "exp",
}
_ADD_LIKE = {
    operator.add,
    operator.iadd,
    torch.add,
    operator.mul,
    operator.imul,
    torch.mul,
    operator.sub,
    torch.sub,
    operator.truediv,
    torch.div,
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
        if line.strip().startswith("File ")
        and "/torch/" not in line
        and "\\torch\\" not in line
        and __file__ not in line
    ]
    src = f" at {frames[-1]}" if frames else ""
    target = (
        node.target
        if isinstance(node.target, str)
        else getattr(node.target, "__name__", node.target)
    )
    return f"node {node.name!r} ({node.op} {target}){src}"


@dataclass
class _Param:
    """A parameter or buffer read directly in forward() (possibly expanded by ``lead`` dims)."""

    name: str
    ndim: int
    lead: int = 0


@dataclass
class _Heads:
    """A group's units split into heads: the head axis, and the within-head axis (``None`` for
    attention scores, which carry the heads only)."""

    group: int
    head_axis: int
    inner_axis: int | None
    ndim: int


_SHAPE_ATTRIBUTES = ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad")
_MATMULS = {torch.matmul, operator.matmul, torch.bmm}
_SOFTMAXES = {torch.softmax, torch.nn.functional.softmax, torch.nn.functional.log_softmax}
_TRANSPOSES = {torch.transpose, torch.permute, torch.swapaxes}


def _value(chan: int, layout: Layout, ndim: int) -> _Value:
    """A value whose channel axis is ``chan`` (>= 0): written -1 when it is the last one."""
    return _Value(-1 if chan == ndim - 1 else chan, layout, ndim)


def _dims(args: tuple, ndim: int) -> list[int]:
    flat = list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else list(args)
    return [int(d) % ndim for d in flat]


class _Analysis:
    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.uf = _UnionFind()
        # (group, param name, axis, offset, repeat) before union-find is final
        self.axes: list[tuple[int, str, int, int, int]] = []
        self.layers: list[tuple[int, str]] = []
        self.touched_params: set[str] = set()
        self.values: dict[fx.Node, Any] = {}
        was = model.training
        model.eval()
        try:
            try:
                tracer = _Tracer(example)
                self.graph = fx.GraphModule(model, tracer.trace(model))
            except Exception as exc:  # symbolic tracing failed: data-dependent control flow etc.
                raise UnsupportedOperationError(
                    f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: "
                    f"{exc}). Permutation groups need a traceable model (no data-dependent Python "
                    "control flow)."
                ) from exc
            from torch.fx.passes.shape_prop import ShapeProp

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

    def refixed(self, node: fx.Node, x: _Value, dim: int) -> _Value:
        """A never-permuted tensor (the input) read along another axis than first assumed."""
        if not all(self.uf.fixed[self.uf.find(seg.group)] for seg in x.layout):
            return x
        return self.fixed_value(node.args[0], dim % x.ndim, "input")

    def add_axes(self, layout: Layout, param: str, axis: int) -> None:
        offset = 0
        for seg in layout:
            self.axes.append((seg.group, param, axis, offset, seg.repeat))
            offset += seg.size * seg.repeat
        self.touched_params.add(param)

    def plain(self, value: Any, node: fx.Node) -> Layout:
        """The layout of a channels axis that is not a flattened map (every repeat is 1)."""
        if not isinstance(value, _Value):
            raise UnsupportedOperationError(f"{_where(node)}: argument is not a tracked tensor.")
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

    def direct(self, node: fx.Node) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"{_where(node)}: reads a parameter or buffer directly in forward(); its unit axes "
            "cannot be inferred (only adding, multiplying or concatenating it with a tracked tensor "
            "is understood). Wrap it in a module convergent knows (Linear, Conv, norms)."
        )

    def param_axes(self, node: fx.Node, p: _Param, x: _Value, out_ndim: int) -> None:
        """``p`` broadcast against ``x`` in ``node``: permute its channel axis (if it has one)."""
        chan = x.dim % x.ndim + (out_ndim - x.ndim)
        own = chan - (out_ndim - (p.ndim + p.lead)) - p.lead
        size = sum(s.size * s.repeat for s in x.layout)
        param_shape = (
            tuple(self.model.get_parameter(p.name).shape)
            if p.name in dict(self.model.named_parameters())
            else tuple(self.model.get_buffer(p.name).shape)
        )
        if own < 0 or param_shape[own] == 1:
            return  # the same value for every unit
        if param_shape[own] != size:
            raise self.direct(node)
        self.add_axes(self.plain(x, node), p.name, own)

    # -- the walk
    def run(self) -> PermutationSpec:
        values = self.values
        for node in self.graph.graph.nodes:
            values[node] = self.visit(node, values)
        spec_groups: dict[int, PermutationGroup] = {}
        for g, param, axis, offset, repeat in self.axes:
            root = self.uf.find(g)
            if self.uf.fixed[root]:
                continue
            group = spec_groups.setdefault(
                root,
                PermutationGroup(
                    self.uf.origin[root], self.uf.size[root], heads=self.uf.heads[root]
                ),
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
        self.root_names = {root: group.name for root, group in spec_groups.items()}
        ties = self.uf.tie_sets()
        members: dict[int, list[PermutationGroup]] = {}
        for root, group in spec_groups.items():
            if group.heads > 1:
                members.setdefault(ties.get(root, root), []).append(group)
        for groups in members.values():
            for group in groups:
                group.tie = groups[0].name
        state = self.model.state_dict()
        permuted = {a[0] for g in named.values() for a in g.axes}
        fixed = [k for k in state if k not in permuted]
        return PermutationSpec(named, fixed)

    def visit(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        if node.op == "placeholder":
            meta = node.meta.get("tensor_meta")
            if meta is None or not hasattr(meta, "shape"):
                return None  # an optional argument left at its default
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
            target = str(node.target)
            tensors = dict(self.model.named_parameters())
            tensors.update(dict(self.model.named_buffers()))
            if target not in tensors:
                raise self.direct(node)
            return _Param(target, tensors[target].ndim)
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)], values)
        tracked: list[Any] = []
        fx.node.map_aggregate(
            (node.args, node.kwargs),
            lambda a: (
                tracked.append(a)
                if isinstance(a, fx.Node) and isinstance(values.get(a), (_Value, _Heads, _Param))
                else None
            ),
        )
        if not tracked and node.op in ("call_function", "call_method"):
            return None  # arithmetic on shapes, a mask built from sizes: no units involved
        if node.op == "call_function":
            return self.visit_function(node, values)
        if node.op == "call_method":
            return self.visit_method(node, values)
        raise UnsupportedOperationError(f"{_where(node)}: unknown node kind.")

    def arg(self, node: fx.Node, values: dict[fx.Node, Any], i: int = 0) -> _Value:
        a = node.args[i] if i < len(node.args) else None
        if isinstance(a, fx.Node) and isinstance(values.get(a), _Param):
            raise self.direct(node)
        if not isinstance(a, fx.Node) or not isinstance(values.get(a), _Value):
            raise UnsupportedOperationError(
                f"{_where(node)}: argument {i} is not a tracked tensor."
            )
        return values[a]

    def any_arg(self, node: fx.Node, values: dict[fx.Node, Any], i: int = 0) -> Any:
        a = node.args[i] if i < len(node.args) else None
        return values.get(a) if isinstance(a, fx.Node) else None

    def visit_module(self, node: fx.Node, mod: nn.Module, values: dict[fx.Node, Any]) -> Any:
        name = str(node.target)
        if isinstance(mod, _ELEMENTWISE_MODULES) and isinstance(self.any_arg(node, values), _Heads):
            return self.any_arg(node, values)
        x = self.arg(node, values)
        if isinstance(mod, (nn.Linear, nn.LayerNorm)) and x.dim not in (-1, x.ndim - 1):
            x = self.refixed(node, x, -1)
        if isinstance(mod, _CONVS) and x.dim != 1:
            x = self.refixed(node, x, 1)
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
            self.note_layers(x.layout, name)
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
        chan = x.dim % ndim
        if start >= end:
            return x
        if chan < start or chan > end:  # flattening other dims (tokens, spatial positions)
            new = chan if chan < start else chan - (end - start)
            return _value(new, x.layout, ndim - (end - start))
        if chan == start and end == ndim - 1:
            spatial = int(np.prod(shape_in[chan + 1 :])) if chan + 1 < ndim else 1
            layout = tuple(Segment(s.group, s.size, s.repeat * spatial) for s in x.layout)
            return _Value(-1, layout, ndim - (end - start))
        raise UnsupportedOperationError(
            f"{_where(node)}: flattens dims {start}..{end} of a tensor whose channel axis is "
            f"dim {chan}; only flattening (C, *spatial) into one vector, or dims that leave the "
            "channel axis alone, is supported."
        )

    def reshape(self, node: fx.Node, x: Any) -> Any:
        shape_in, shape_out = self.shape(node.args[0]), self.shape(node)
        prefix = [int(np.prod(shape_out[:k])) for k in range(len(shape_out) + 1)]
        if isinstance(x, _Heads):
            h = x.head_axis
            if x.inner_axis == h + 1:
                pre, size = int(np.prod(shape_in[:h])), shape_in[h] * shape_in[h + 1]
                for k in range(len(shape_out)):
                    if prefix[k] == pre and shape_out[k] == size:
                        g = self.uf.find(x.group)
                        return _value(k, (Segment(g, self.uf.size[g]),), len(shape_out))
            raise UnsupportedOperationError(
                f"{_where(node)}: reshape from {shape_in} to {shape_out} of attention heads is "
                "not supported; only merging (heads, head_dim) back into one axis."
            )
        if not isinstance(x, _Value):
            raise UnsupportedOperationError(f"{_where(node)}: reshapes an untracked tensor.")
        chan = x.dim % x.ndim
        size = shape_in[chan]
        pre, post = int(np.prod(shape_in[:chan])), int(np.prod(shape_in[chan + 1 :]))
        candidates = [k for k in range(len(shape_out)) if prefix[k] == pre]
        for k in candidates:  # the channel axis kept whole
            if shape_out[k] == size:
                return _value(k, x.layout, len(shape_out))
        for k in candidates:  # split into (heads, head_dim)
            if (
                k + 1 < len(shape_out)
                and shape_out[k] > 1
                and shape_out[k] * shape_out[k + 1] == size
                and len(x.layout) == 1
                and x.layout[0].repeat == 1
            ):
                g = x.layout[0].group
                self.uf.set_heads(g, shape_out[k], _where(node))
                return _Heads(g, k, k + 1, len(shape_out))
        for k in candidates:  # (C, *spatial) into one vector
            if k == len(shape_out) - 1 and shape_out[k] == size * post:
                layout = tuple(Segment(s.group, s.size, s.repeat * post) for s in x.layout)
                return _Value(-1, layout, len(shape_out))
        raise UnsupportedOperationError(
            f"{_where(node)}: reshape from {shape_in} to {shape_out} is not supported; only "
            "reshapes that keep the channel axis whole, split it into (heads, head_dim), or "
            "flatten (B, C, *spatial) to (B, C*spatial)."
        )

    def move(self, node: fx.Node, x: Any, order: list[int]) -> Any:
        """``x`` with its dims reordered: new dim i is old dim order[i]."""
        where = {old: new for new, old in enumerate(order)}
        moved = [x.dim % x.ndim] if isinstance(x, _Value) else []
        if isinstance(x, _Heads):
            moved = [d for d in (x.head_axis, x.inner_axis) if d is not None]
        if any(where[d] == 0 for d in moved):
            what = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
            raise UnsupportedOperationError(
                f"{_where(node)}: tensor method {what!r} is not supported when it moves the units "
                "onto dim 0 (the batch axis)."
            )
        if isinstance(x, _Value):
            return _value(where[x.dim % x.ndim], x.layout, x.ndim)
        if isinstance(x, _Heads):
            inner = None if x.inner_axis is None else where[x.inner_axis]
            return _Heads(x.group, where[x.head_axis], inner, x.ndim)
        if isinstance(x, _Param):
            raise self.direct(node)
        raise UnsupportedOperationError(f"{_where(node)}: transposes an untracked tensor.")

    def transpose(self, node: fx.Node, x: Any, ndim: int, a: int, b: int) -> Any:
        order = list(range(ndim))
        a, b = a % ndim, b % ndim
        order[a], order[b] = order[b], order[a]
        return self.move(node, x, order)

    def matmul(self, node: fx.Node, a: Any, b: Any) -> Any:
        if isinstance(a, _Param) or isinstance(b, _Param):
            raise self.direct(node)
        if (
            isinstance(a, _Heads)
            and isinstance(b, _Heads)
            and a.ndim == b.ndim
            and a.head_axis == b.head_axis
            and a.head_axis < a.ndim - 2
        ):
            if a.inner_axis == a.ndim - 1 and b.inner_axis == b.ndim - 2:  # q @ k^T
                g = self.uf.union(a.group, b.group, _where(node))
                return _Heads(g, a.head_axis, None, a.ndim)
            if a.inner_axis is None and b.inner_axis == b.ndim - 1:  # scores @ v
                self.uf.tie_heads(a.group, b.group, _where(node))
                return _Heads(b.group, b.head_axis, b.inner_axis, b.ndim)
        raise UnsupportedOperationError(
            f"{_where(node)}: matrix product of tensors whose unit axes it cannot follow (only "
            "the attention products q @ k^T and scores @ v of head-split tensors are understood)."
        )

    def arithmetic(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else None
        va = values.get(a) if isinstance(a, fx.Node) else None
        vb = values.get(b) if isinstance(b, fx.Node) else None
        if isinstance(va, _Value) and isinstance(vb, _Value):
            if self.shape(a) != self.shape(b):
                raise UnsupportedOperationError(
                    f"{_where(node)}: broadcasting between tensors of shapes {self.shape(a)} and "
                    f"{self.shape(b)} is not supported."
                )
            return _Value(va.dim, self.union_layouts(va.layout, vb.layout, node), va.ndim)
        for x, y, ny in ((va, vb, b), (vb, va, a)):
            if isinstance(x, (_Value, _Heads)) and not isinstance(ny, fx.Node):
                return x  # with a number
            if isinstance(x, _Value) and isinstance(y, _Param):
                out_ndim = len(self.shape(node))
                if self.shape(node) != self.shape(a if x is va else b):
                    raise self.direct(node)
                self.param_axes(node, y, x, out_ndim)
                return x
        if isinstance(va, _Param) or isinstance(vb, _Param):
            raise self.direct(node)
        raise UnsupportedOperationError(f"{_where(node)}: arithmetic with an untracked tensor.")

    def concatenate(self, node: fx.Node, values: dict[fx.Node, Any]) -> _Value:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        vals = [values.get(t) for t in tensors]
        tracked = [v for v in vals if isinstance(v, _Value)]
        if not tracked or not all(isinstance(v, (_Value, _Param)) for v in vals):
            raise UnsupportedOperationError(f"{_where(node)}: concatenates untracked tensors.")
        ndim = tracked[0].ndim
        chan = tracked[0].dim % ndim
        if dim % ndim == chan:
            if len(tracked) != len(vals):
                raise self.direct(node)
            layout = tuple(seg for v in vals for seg in v.layout)
            return _Value(tracked[0].dim, layout, ndim)
        layout = tracked[0].layout
        for v in tracked[1:]:  # along tokens / positions: every part carries the same units
            if v.dim % v.ndim != chan:
                raise UnsupportedOperationError(
                    f"{_where(node)}: concatenates tensors whose channel axes differ."
                )
            layout = self.union_layouts(layout, v.layout, node)
        result = _Value(tracked[0].dim, layout, ndim)
        for v in vals:
            if isinstance(v, _Param):
                self.param_axes(node, v, result, ndim)
        return result

    def index(self, node: fx.Node, x: Any) -> Any:
        idx = node.args[1]
        if not isinstance(x, (_Value, _Heads)):
            if isinstance(x, _Param):
                raise self.direct(node)
            return None  # indexing a shape or another untracked value
        items = list(idx) if isinstance(idx, tuple) else [idx]
        consuming = sum(1 for i in items if i is not None and i is not Ellipsis)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items[at : at + 1] = [slice(None)] * (x.ndim - consuming)
        items += [slice(None)] * (x.ndim - sum(1 for i in items if i is not None))
        keep = (
            [d for d in (x.head_axis, x.inner_axis) if d is not None]
            if isinstance(x, _Heads)
            else [x.dim % x.ndim]
        )
        new_pos: dict[int, int] = {}
        d_in = d_out = 0
        for item in items:
            if item is None:
                d_out += 1
                continue
            if isinstance(item, slice):
                if d_in in keep and item != slice(None):
                    raise UnsupportedOperationError(f"{_where(node)}: slices the channel axis.")
                new_pos[d_in] = d_out
                d_out += 1
            elif isinstance(item, int) and d_in not in keep:
                pass
            else:
                raise UnsupportedOperationError(
                    f"{_where(node)}: indexing {idx!r} on the channel axis (or with a tensor) is "
                    "not supported."
                )
            d_in += 1
        if isinstance(x, _Heads):
            inner = None if x.inner_axis is None else new_pos[x.inner_axis]
            return _Heads(x.group, new_pos[x.head_axis], inner, d_out)
        return _value(new_pos[x.dim % x.ndim], x.layout, d_out)

    def attention(self, node: fx.Node, values: dict[fx.Node, Any]) -> _Heads:
        q, k, v = (self.any_arg(node, values, i) for i in range(3))
        if not all(isinstance(t, _Heads) and t.inner_axis == t.ndim - 1 for t in (q, k, v)):
            raise UnsupportedOperationError(
                f"{_where(node)}: scaled_dot_product_attention on tensors not split into heads."
            )
        if not (q.head_axis == k.head_axis == v.head_axis):
            raise UnsupportedOperationError(f"{_where(node)}: heads on different axes.")
        self.uf.union(q.group, k.group, _where(node))
        self.uf.tie_heads(q.group, v.group, _where(node))
        return v

    def visit_function(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        fn = node.target
        if fn in _ELEMENTWISE_FUNCTIONS or fn in _SOFTMAXES:
            x = self.any_arg(node, values)
            if isinstance(x, _Heads):
                return x
            return self.arg(node, values)
        if fn in _SPATIAL_POOL_FUNCTIONS:
            x = self.arg(node, values)
            self.plain(x, node)
            return x
        if fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            x = self.any_arg(node, values)
            if isinstance(x, _Heads):  # (heads, head_dim) merged back: a reshape by shape
                return self.reshape(node, x)
            return self.flatten(node, self.arg(node, values), start, end)
        if fn is torch.reshape or fn is torch.unflatten:
            x = self.any_arg(node, values)
            if isinstance(x, _Param):
                raise self.direct(node)
            return self.reshape(node, x)
        if fn in _ADD_LIKE:
            return self.arithmetic(node, values)
        if fn is torch.cat:
            return self.concatenate(node, values)
        if fn is torch.mean or fn is torch.amax or fn is torch.sum:
            return self.reduce(node, values)
        if fn in _MATMULS:
            return self.matmul(node, self.any_arg(node, values, 0), self.any_arg(node, values, 1))
        if fn is torch.nn.functional.scaled_dot_product_attention:
            return self.attention(node, values)
        if fn in _TRANSPOSES:
            x = self.any_arg(node, values)
            ndim = len(self.shape(node))
            if fn is torch.permute:
                return self.move(node, x, _dims(tuple(node.args[1:]), ndim))
            return self.transpose(node, x, ndim, node.args[1], node.args[2])
        if fn is operator.getitem:
            return self.index(node, self.any_arg(node, values))
        if fn is getattr:
            if node.args[1] in _SHAPE_ATTRIBUTES:
                return None
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
        x = self.any_arg(node, values)
        if method in ("size", "dim"):
            return None
        if x is None and method not in _ELEMENTWISE_METHODS:
            raise UnsupportedOperationError(
                f"{_where(node)}: tensor method {method!r} on an untracked tensor."
            )
        if method in _ELEMENTWISE_METHODS or method in ("softmax", "log_softmax", "to", "type_as"):
            if isinstance(x, (_Heads, _Value)):
                return x
            if isinstance(x, _Param):
                raise self.direct(node)
            return self.arg(node, values)
        if method in ("mean", "amax", "sum"):
            return self.reduce(node, values)
        ndim = len(self.shape(node)) if method not in ("size", "dim") else 0
        if method in ("transpose", "swapaxes"):
            return self.transpose(node, x, ndim, node.args[1], node.args[2])
        if method == "permute":
            return self.move(node, x, _dims(tuple(node.args[1:]), ndim))
        if method == "expand":
            extra = ndim - len(self.shape(node.args[0]))
            if isinstance(x, _Param):
                return _Param(x.name, x.ndim, x.lead + extra)
            shape_in = self.shape(node.args[0])
            if (
                isinstance(x, _Value)
                and self.shape(node)[extra + x.dim % x.ndim] == shape_in[x.dim % x.ndim]
            ):
                return _value(x.dim % x.ndim + extra, x.layout, ndim)
        if method in ("unsqueeze", "squeeze"):
            if isinstance(x, _Value) and ndim == x.ndim:
                return x
            if isinstance(x, _Value) and method == "unsqueeze":
                d = node.args[1] % ndim
                chan = x.dim % x.ndim
                return _value(chan + (d <= chan), x.layout, ndim)
        if method == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if isinstance(x, _Value):
                return self.flatten(node, x, start, end)
            if isinstance(x, _Heads):  # (heads, head_dim) merged back: a reshape by shape
                return self.reshape(node, x)
        if method in ("view", "reshape", "unflatten"):
            if isinstance(x, _Param):
                raise self.direct(node)
            return self.reshape(node, x)
        if isinstance(x, _Param):
            raise self.direct(node)
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
    return _Analysis(model, example.to(module_device(model))).run()


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
    spec.check(perms)
    for name, group in spec.groups.items():
        perm = np.asarray(perms[name])
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
