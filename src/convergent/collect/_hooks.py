"""Forward hooks, all in one place: registered together, removed in ``finally``, modes restored.

Nothing else in convergent registers hooks. :func:`capture` is the only entry point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from convergent._errors import ConvergentError


def resolve_layers(
    model: nn.Module, layers: Sequence[str], model_name: str = "model"
) -> dict[str, nn.Module]:
    """Map dotted layer names to modules; an unknown name raises ``ValueError`` listing valid ones."""
    modules = dict(model.named_modules())
    out = {}
    for layer in layers:
        if layer not in modules or layer == "":
            valid = [n for n in modules if n]
            shown = ", ".join(valid[:40]) + (", ..." if len(valid) > 40 else "")
            raise ValueError(
                f"Model {model_name!r} has no layer named {layer!r}. Valid layer names (dotted "
                f"named_modules() paths, see `convergent layers`): {shown}."
            )
        out[layer] = modules[layer]
    return out


class StopForward(Exception):
    """Raised by a ``capture(..., stop=True)`` hook once it has its output: the rest of the forward
    pass is not needed (e.g. for the input gradient of an early layer)."""


class Capture:
    """Holds the latest output of every hooked (model, layer) pair; filled by the hooks."""

    def __init__(self) -> None:
        self.outputs: dict[tuple[str, str], torch.Tensor] = {}

    def clear(self) -> None:
        self.outputs.clear()


def _hook(store: Capture, key: tuple[str, str], detach: bool = True, stop: bool = False):
    def fn(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise ConvergentError(
                f"Layer {key[1]!r} of model {key[0]!r} returned a {type(output).__name__}, not a "
                "tensor; choose a layer whose output is a tensor."
            )
        store.outputs[key] = output.detach() if detach else output
        if stop:
            raise StopForward(key)

    return fn


@contextlib.contextmanager
def capture(
    models: Mapping[str, nn.Module],
    layers: Sequence[str],
    *,
    eval_mode: bool = True,
    detach: bool = True,
    stop: bool = False,
) -> Iterator[Capture]:
    """Hook ``layers`` of every model for the duration of the block.

    Every model is put in eval mode (unless ``eval_mode=False``); on exit, whether normally or by an
    exception, every hook is removed and every submodule's own train/eval flag is restored (a model
    in train mode may hold a submodule in eval mode, e.g. a frozen backbone). With
    ``detach=False`` the captured outputs keep their autograd graph (for input gradients). With
    ``stop=True`` a hook raises :class:`StopForward` once it has its output (one layer of one model:
    the caller catches it and skips the rest of the forward pass).
    """
    store = Capture()
    handles = []
    # every submodule's own flag: model.train(mode) would set them all to the root's
    modes = [(module, module.training) for m in models.values() for module in m.modules()]
    try:
        resolved = {name: resolve_layers(m, layers, name) for name, m in models.items()}
        for name, model in models.items():
            if eval_mode:
                model.eval()
            for layer, module in resolved[name].items():
                hook = _hook(store, (name, layer), detach, stop)
                handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
        store.clear()
