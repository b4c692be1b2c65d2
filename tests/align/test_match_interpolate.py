"""Matching whole nets (weights, activations) and the interpolation barrier."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from convergent.align import apply_permutation, find_permutation_groups
from convergent.align._interpolate import (
    barrier,
    interpolate_state,
    interpolation_curve,
    reset_batchnorm,
)
from convergent.align._match import (
    match_from_similarities,
    similarity_from_moments,
    weight_matching,
)
from convergent.models import build_model
from convergent.record import collect


def _trained(arch: str, **kw) -> torch.nn.Module:
    from convergent.data import load_dataset
    from convergent.train import TrainConfig, train_net

    model, _ = train_net(
        "net",
        arch,
        load_dataset("digits", subset=300),
        seeds={"init": 0, "order": 0},
        config=TrainConfig(epochs=2, batch_size=32),
        model_kwargs=kw,
        progress=False,
    )
    return model.eval()


def _planted(arch: str, *, trained: bool = False, **kw):
    torch.manual_seed(0)
    if trained:
        model = _trained(arch, **kw)
    else:
        model = build_model(arch, in_channels=1, input_size=8, num_classes=10, **kw).eval()
    x = torch.randn(64, 1, 8, 8)
    spec = find_permutation_groups(model, x[:2])
    planted = spec.random_permutations(seed=5)
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(model.state_dict(), spec, planted))
    return model, other, spec, planted, x


def _identity_after(spec, model, other, perms) -> bool:
    back = apply_permutation(other.state_dict(), spec, perms)
    return all(torch.allclose(back[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("arch", "kw"),
    [("mlp", {"width": 32}), ("convnet", {"width": 0.25}), ("resnet", {"width": 0.5})],
)
def test_weight_matching_recovers_a_planted_permutation_of_a_trained_net(arch, kw):
    model, other, spec, planted, _ = _planted(arch, trained=True, **kw)
    alignment = weight_matching(spec, model.state_dict(), other.state_dict())
    assert _identity_after(spec, model, other, alignment.perms)
    assert alignment.iterations >= 1 and alignment.method == "weight"


@pytest.mark.parametrize("kind", ["correlation", "cross-moment", "cosine"])
def test_activation_matching_recovers_a_planted_permutation(kind):
    model, other, spec, planted, x = _planted("mlp", trained=True, width=16, depth=3)
    layers = [g.layers[-1] for g in spec.groups.values()]  # the post-ReLU output of each group
    stats = collect({"a": model, "b": other}, x, layers, exact=True, topk=None, progress=False)
    sims = {}
    for name, group in spec.groups.items():
        ls = stats[group.layers[-1]]
        m = ls.moments
        sims[name] = similarity_from_moments(
            m.mean, m.cov(ddof=0), ls.units("a"), ls.units("b"), kind
        )
    alignment = match_from_similarities(sims, spec)
    assert _identity_after(spec, model, other, alignment.perms)
    with pytest.raises(ValueError, match="'kind' parameter must be one of"):
        similarity_from_moments(m.mean, m.cov(ddof=0), ls.units("a"), ls.units("b"), "l2")


def test_interpolation_endpoints_are_exact_and_self_barrier_is_zero():
    model, other, spec, planted, x = _planted("resnet", width=0.5)
    y = torch.randint(0, 10, (64,))
    sa, sb = model.state_dict(), other.state_dict()
    for k in sa:
        assert torch.equal(interpolate_state(sa, sb, 0.0)[k], sa[k])
        assert torch.equal(interpolate_state(sa, sb, 1.0)[k], sb[k])
    same = interpolation_curve(
        model, copy.deepcopy(model), {"test": (x, y)}, points=5, progress=False
    )
    assert same.barriers["test"]["loss"] == pytest.approx(0.0, abs=1e-6)
    assert same.barriers["test"]["accuracy"] == pytest.approx(0.0, abs=1e-9)
    curve = interpolation_curve(
        model,
        other,
        {"test": (x, y)},
        points=3,
        repair_mode="reset-bn",
        calibration=x,
        progress=False,
    )
    d = curve.to_dict()
    assert d["definitions"]["loss"].startswith("max_alpha") and len(d["alphas"]) == 3
    # the permuted copy computes the same function: the endpoints agree
    assert curve.curves["test"]["loss"][0] == pytest.approx(
        curve.curves["test"]["loss"][-1], abs=1e-5
    )
    repaired = interpolation_curve(
        model,
        other,
        {"test": (x, y)},
        points=3,
        repair_mode="repair",
        calibration=x,
        progress=False,
    )
    assert np.isfinite(repaired.curves["test"]["loss"]).all()
    with pytest.raises(ValueError, match="'repair' parameter must be one of"):
        interpolation_curve(model, other, {"test": (x, y)}, repair_mode="magic")
    with pytest.raises(ValueError, match="needs calibration inputs"):
        interpolation_curve(model, other, {"test": (x, y)}, repair_mode="reset-bn")
    with pytest.raises(ValueError, match="'points' parameter must be an integer >= 2"):
        interpolation_curve(model, other, {"test": (x, y)}, points=1)


def test_barrier_definition_and_batchnorm_reset():
    alphas = np.linspace(0, 1, 5)
    assert barrier([1.0, 2.0, 3.0, 2.0, 1.0], alphas) == pytest.approx(2.0)
    assert barrier([0.9, 0.5, 0.9, 0.9, 0.9], alphas, higher_is_better=True) == pytest.approx(0.4)
    model = build_model("resnet", in_channels=1, input_size=8, num_classes=10).eval()
    x = torch.randn(32, 1, 8, 8) * 3 + 1
    reset_batchnorm(model, x)
    assert not model.training
    assert float(model.stem.bn.running_mean.abs().sum()) > 0
