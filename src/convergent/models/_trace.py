"""One forward pass on an example input that records, per module, when it ran, how often, what it
received from which module and the shape of what it returned; the default layers of a model are
chosen from that record.

This is the one place in :mod:`convergent.models` that registers hooks (collection's hooks live in
:mod:`convergent.collect`, a later stage that models may not import): all of them are registered
together and removed in ``finally``; every module's train/eval flag and the global random state are
restored, so tracing a model changes nothing about it (except that lazy modules, such as
``nn.LazyLinear``, are materialised, as by any forward pass).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from convergent._errors import ConvergentError

#: Modules that apply an activation function: their outputs are what the paper compares (the
#: post-ReLU blobs of a Caffe net).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.GLU,
)

_ACTIVATION_NAME = re.compile(r"(activation|relu|gelu|silu|swish|mish|tanh|sigmoid|elu)$", re.I)


def is_activation(module: nn.Module) -> bool:
    """Whether a module applies an activation function: one of torch's, or a parameter-free leaf
    whose class is named like one (``GELUActivation``, ``NewGELUActivation``, ``QuickGELU`` of
    model libraries)."""
    if isinstance(module, ACTIVATIONS):
        return True
    leaf = not any(True for _ in module.children())
    has_weights = any(True for _ in module.parameters(recurse=False))
    return leaf and not has_weights and bool(_ACTIVATION_NAME.search(type(module).__name__))


#: Layers with weights whose outputs are pre-activation (the fallback where no activation module
#: can stand for them).
WEIGHTED = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Bilinear,
)

#: Modules that pass a layer's output on unchanged in layout (normalisation, dropout, identity):
#: walked through when looking for the weighted layer that feeds an activation.
PASS_THROUGH = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd,
    nn.AlphaDropout,
    nn.Identity,
)

#: Modules whose 3-D output is (B, C, L) (channels first) rather than (B, T, C) tokens.
CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
)


@dataclass
class TracedModule:
    """What one forward pass showed about one module (``calls == 0``: it did not run)."""

    name: str
    module: nn.Module
    calls: int = 0
    start: int | None = None  # rank of its first call among all module calls
    finish: int | None = None  # rank of its last return among all module returns
    leaf: bool = True
    shape: tuple[int, ...] | None = None  # full output shape of the first call, batch included
    layout: str | None = None  # "vector", "channels_first" or "tokens"
    sources: list[str | None] = field(default_factory=list)  # producer of the input, per call
    output_ids: list[int] = field(default_factory=list)

    @property
    def units(self) -> int | None:
        """Units per sample: channels of a map, features of a vector, last dim of tokens."""
        if self.shape is None or len(self.shape) < 2:
            return None
        return self.shape[-1] if self.layout == "tokens" else self.shape[1]

    @property
    def samples_per_input(self) -> int | None:
        """Samples one input contributes: spatial positions of a map, tokens, or 1."""
        if self.shape is None or len(self.shape) < 2:
            return None
        if self.layout == "tokens":
            return self.shape[1]
        return math.prod(self.shape[2:])


@dataclass
class Trace:
    """Modules of a model in the order of their first call in a forward pass (the others last)."""

    modules: list[TracedModule]
    output_module: str | None  # the deepest module whose output is the model's output

    def __iter__(self) -> Iterator[TracedModule]:
        return iter(self.modules)

    def get(self, name: str) -> TracedModule:
        return next(m for m in self.modules if m.name == name)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if isinstance(value, Mapping):  # model-library outputs (last_hidden_state, logits, ...)
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def _layout(traced: TracedModule, source: TracedModule | None) -> str | None:
    """How a 3-D output is read: a container's output has the layout of the leaf that returned it;
    an activation, normalisation or dropout keeps the layout of its input (a ReLU of a Conv1d map
    is still channels first)."""
    if traced.shape is None:
        return None
    if len(traced.shape) == 2:
        return "vector"
    if len(traced.shape) != 3:
        return "channels_first"
    if isinstance(traced.module, CHANNELS_FIRST_1D):
        return "channels_first"
    inherits = (
        not traced.leaf or is_activation(traced.module) or isinstance(traced.module, PASS_THROUGH)
    )
    if inherits and source is not None and source.layout is not None:
        return source.layout
    return "tokens"


def trace(model: nn.Module, example_input: Any) -> Trace:
    """Run ``model`` once on ``example_input`` (eval mode, no gradients) and record every module.

    Parameters
    ----------
    model : torch.nn.Module
    example_input : torch.Tensor, tuple or mapping
        A batch the model accepts, e.g. ``torch.zeros(2, C, H, W)``; a tuple is passed as
        positional arguments, a mapping as keyword arguments (``input_ids``, ``attention_mask``).

    Returns
    -------
    Trace
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    records = {
        id(m): TracedModule(name=n, module=m, leaf=not any(True for _ in m.children()))
        for n, m in named
    }
    by_name = {r.name: r for r in records.values()}
    producer: dict[int, str] = {}  # id of a tensor -> the leaf module that returned it last
    keep: list[torch.Tensor] = []  # tensors stay alive, so their ids stay unique
    counter = [0, 0]  # calls, returns

    def pre(module: nn.Module, args: Any) -> None:
        rec = records[id(module)]
        rec.calls += 1
        if rec.start is None:
            rec.start = counter[0]
        counter[0] += 1
        x = _first_tensor(args)
        rec.sources.append(producer.get(id(x)) if x is not None else None)
        if x is not None:
            keep.append(x)

    def post(module: nn.Module, args: Any, output: Any) -> None:
        rec = records[id(module)]
        rec.finish = counter[1]
        counter[1] += 1
        y = _first_tensor(output)
        if y is None:
            return
        keep.append(y)
        rec.output_ids.append(id(y))
        if rec.shape is None:
            rec.shape = tuple(y.shape)
            source = producer.get(id(y)) if not rec.leaf else rec.sources[-1]
            rec.layout = _layout(rec, by_name.get(source) if source else None)
        if rec.leaf:
            producer[id(y)] = rec.name

    modes = {name: m.training for name, m in model.named_modules()}
    handles = []
    try:
        for _, module in named:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        model.eval()
        named = isinstance(example_input, Mapping)
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            try:
                output = model(**example_input) if named else model(*args)
            except Exception as exc:
                shapes = ", ".join(
                    str(tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a).__name__
                    for a in (example_input.values() if named else args)
                )
                raise ConvergentError(
                    f"The model failed on an example input of shape {shapes} while convergent "
                    f"traced its layers ({type(exc).__name__}: {exc}). Check the input shape "
                    "(--input-shape C,H,W, or the dataset's) and the architecture's arguments."
                ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for name, module in model.named_modules():
            module.training = modes[name]
    out = _first_tensor(output)
    holders = [r for r in records.values() if out is not None and id(out) in r.output_ids]
    holders = [r for r in holders if r.calls == 1]
    # the deepest holder; among equals the last to return (an in-place ReLU after its Linear)
    output_module = max(holders, key=lambda r: (r.name.count("."), r.finish or 0), default=None)
    ran = sorted((r for r in records.values() if r.calls), key=lambda r: r.start or 0)
    idle = [r for r in records.values() if not r.calls]
    return Trace(ran + idle, output_module.name if output_module else None)


def _stand_in(trace: Trace, source: str | None) -> TracedModule | None:
    """The weighted layer (run once) that feeds a module, through normalisation and dropout."""
    seen = set()
    while source is not None and source not in seen:
        seen.add(source)
        rec = trace.get(source)
        if isinstance(rec.module, WEIGHTED):
            return rec if rec.calls == 1 else None
        if not isinstance(rec.module, PASS_THROUGH) or rec.calls != 1:
            return None
        source = rec.sources[0]
    return None


def choose_default_layers(trace: Trace) -> list[str]:
    """Default layers of an undeclared model from its trace, in forward order.

    - Every activation module that ran exactly once (its output is a post-activation representation).
    - An activation module object called several times (one ``nn.ReLU`` reused in ``forward``) cannot
      be hooked per use: each of its uses is represented by the weighted layer (Conv/Linear, run
      once) that feeds it, through normalisation and dropout.
    - Without activation modules (``F.relu`` in ``forward``): every Conv/Linear layer run once.
    - The module whose output is the model's output (the logits), else the last Conv/Linear layer,
      so the top of the net is compared too.
    """
    ran = [r for r in trace if r.calls and r.shape is not None and len(r.shape) >= 2]
    activations = [r for r in ran if r.leaf and is_activation(r.module)]
    chosen = {r.name: r for r in activations if r.calls == 1}
    for rec in activations:
        if rec.calls > 1:
            for source in rec.sources:
                stand_in = _stand_in(trace, source)
                if stand_in is not None:
                    chosen[stand_in.name] = stand_in
    weighted = [r for r in ran if isinstance(r.module, WEIGHTED) and r.calls == 1]
    if not activations:
        chosen.update((r.name, r) for r in weighted)
    top = trace.get(trace.output_module) if trace.output_module else None
    if top is None and weighted:
        top = weighted[-1]
    if top is not None:
        chosen[top.name] = top
    return [r.name for r in sorted(chosen.values(), key=lambda r: r.start or 0)]
