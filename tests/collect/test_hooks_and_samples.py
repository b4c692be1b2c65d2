"""Hooks (one place, removed in finally, modes restored) and the (samples, units) reshaping."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from convergent import ConvergentError
from convergent.collect._samples import is_channels_first
from convergent.record import capture, resolve_layers, to_samples


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        self.lin(x)
        raise RuntimeError("boom inside the model")


def test_hooks_capture_and_are_removed_with_modes_restored():
    models = {"a": nn.Sequential(nn.Linear(2, 3), nn.ReLU()), "b": nn.Sequential(nn.Linear(2, 3))}
    models["a"].train()
    models["b"].eval()
    with capture(models, ["0"]) as store:
        assert not models["a"].training  # eval mode inside
        for m in models.values():
            m(torch.ones(4, 2))
        assert set(store.outputs) == {("a", "0"), ("b", "0")}
        assert store.outputs[("a", "0")].shape == (4, 3)
    assert models["a"].training and not models["b"].training
    assert _no_hooks_left(models["a"]) and _no_hooks_left(models["b"])


def test_hooks_are_removed_after_an_exception_inside_the_model():
    model = Boom().train()
    with pytest.raises(RuntimeError, match="boom inside the model"), capture({"m": model}, ["lin"]):
        model(torch.ones(1, 2))
    assert _no_hooks_left(model)
    assert model.training


class FrozenBackbone(nn.Module):
    """A root in train mode holding a backbone in eval mode (with Dropout) and a trained head."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5))
        self.head = nn.Linear(4, 2)
        self.fail = fail

    def forward(self, x):
        out = self.head(self.backbone(x))
        if self.fail:
            raise RuntimeError("boom after the head")
        return out


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("fail", [False, True])
def test_every_submodule_gets_its_own_mode_back(fail):
    model = FrozenBackbone(fail).train()
    model.backbone.eval()
    before = _modes(model)
    assert before["backbone.1"] is False and before[""] is True and before["head"] is True
    with contextlib.ExitStack() as stack:
        if fail:
            stack.enter_context(pytest.raises(RuntimeError, match="boom after the head"))
        stack.enter_context(capture({"m": model}, ["backbone", "head"]))
        assert not any(_modes(model).values())  # eval everywhere inside
        model(torch.ones(3, 2))
    assert _modes(model) == before
    assert _no_hooks_left(model)


def test_hooks_are_removed_when_a_later_layer_name_is_bad():
    models = {"a": nn.Sequential(nn.Linear(2, 2)), "b": nn.Sequential(nn.Linear(2, 2))}
    with pytest.raises(ValueError, match="no layer named 'nope'"), capture(models, ["0", "nope"]):
        pass
    assert _no_hooks_left(models["a"]) and _no_hooks_left(models["b"])


def test_unknown_layer_lists_valid_names():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(
        ValueError, match=r"Model 'net' has no layer named 'fc9'.*Valid layer names.*0, 1"
    ):
        resolve_layers(model, ["fc9"], "net")


def test_non_tensor_output_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return {"a": x}

    model = nn.Sequential(Pair())
    with (
        pytest.raises(ConvergentError, match="returned a dict, not a tensor"),
        capture({"m": model}, ["0"]),
    ):
        model(torch.ones(1, 2))
    assert _no_hooks_left(model)


def test_conv_map_gives_one_sample_per_position_in_input_then_position_order():
    out = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # B=2, C=3, 2x2
    samples, shape = to_samples(out)
    assert samples.shape == (8, 3) and shape == (2, 2)
    # row i*P + p is input i at flat position p
    for i in range(2):
        for p in range(4):
            assert torch.equal(samples[i * 4 + p], out[i, :, p // 2, p % 2])
    mean, shape = to_samples(out, spatial="mean")
    assert shape == () and torch.allclose(mean, out.mean(dim=(2, 3)))


def test_tokens_vectors_and_conv1d():
    tokens = torch.randn(2, 5, 4)
    s, shape = to_samples(tokens)
    assert s.shape == (10, 4) and shape == (5,) and torch.equal(s[7], tokens[1, 2])
    s, shape = to_samples(tokens, spatial="mean")
    assert s.shape == (2, 4) and torch.allclose(s, tokens.mean(1))
    vec = torch.randn(3, 4)
    assert to_samples(vec)[0] is vec
    conv1d = torch.randn(2, 4, 6)  # (B, C, L)
    s, shape = to_samples(conv1d, channels_first=True)
    assert s.shape == (12, 4) and torch.equal(s[6 + 1], conv1d[1, :, 1])
    assert is_channels_first(nn.Conv1d(1, 2, 3))
    assert is_channels_first(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU()))
    assert not is_channels_first(nn.Linear(2, 2))
    vol = torch.randn(2, 3, 2, 2, 2)
    assert to_samples(vol)[0].shape == (16, 3)


def test_bad_shapes_and_modes():
    with pytest.raises(ValueError, match="'spatial' parameter must be one of"):
        to_samples(torch.ones(2, 2), spatial="max")
    with pytest.raises(ValueError, match=r"Cannot turn a layer output of shape \(3,\)"):
        to_samples(torch.ones(3))
