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


@pytest.mark.parametrize(("arch", "kw"), [("mlp", {"width": 32}), ("convnet", {"width": 0.25})])
def test_activation_matching_places_dead_units_so_a_permuted_copy_is_restored(arch, kw):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, input_size=8, num_classes=10, **kw).eval()
    first = model.fc1.linear if arch == "mlp" else model.conv1.conv
    with torch.no_grad():
        first.bias[:5] = -100.0  # five units that never fire: zero variance after the ReLU
    x = torch.randn(128, 1, 8, 8)
    spec = find_permutation_groups(model, x[:2])
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(model.state_dict(), spec, spec.random_permutations(3)))
    from convergent.align import activation_matching

    alignment = activation_matching(model, other, spec, x, progress=False)
    assert _identity_after(spec, model, other, alignment.perms)
    back = apply_permutation(other.state_dict(), spec, alignment.perms)
    assert max(float((back[k] - v).abs().max()) for k, v in model.state_dict().items()) == 0.0


def _algorithm1(spec, state_a, state_b, seed=0, max_iter=100):
    """Git Re-Basin Algorithm 1, written independently: identity start, random group order per
    sweep, stop after a sweep without progress; weights only (no BatchNorm statistics)."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    perms = {n: np.arange(g.size) for n, g in spec.groups.items()}

    def rows(t, axis, offset, size, repeat):
        return t.narrow(axis, offset, size * repeat).movedim(axis, 0).reshape(size, -1).double()

    for _ in range(max_iter):
        progress = False
        for i in rng.permutation(len(names)):
            name, size = names[i], spec.groups[names[i]].size
            b = apply_permutation(state_b, spec, {**perms, name: np.arange(size)})
            cost = np.zeros((size, size))
            for param, axis, offset, repeat in spec.groups[name].axes:
                if "running_" in param:
                    continue
                wa = rows(state_a[param], axis, offset, size, repeat)
                cost += (wa @ rows(b[param], axis, offset, size, repeat).T).numpy()
            r, c = linear_sum_assignment(cost, maximize=True)
            if cost[r, c].sum() > cost[np.arange(size), perms[name]].sum() + 1e-12:
                perms[name] = c[np.argsort(r)]
                progress = True
        if not progress:
            break
    b = apply_permutation(state_b, spec, perms)
    return sum(
        float((state_a[p].double() * b[p].double()).sum())
        for p in {a[0] for g in spec.groups.values() for a in g.axes}
        if "running_" not in p
    )


@pytest.mark.parametrize(
    ("arch", "kw"),
    [
        ("mlp", {"width": 32}),
        ("convnet", {"width": 0.25}),
        ("resnet", {"width": 0.5}),
        ("resnet", {"width": 0.5, "blocks": 2}),
    ],
)
def test_weight_matching_objective_is_at_least_git_rebasin_algorithm1(arch, kw):
    a, b = _trained(arch, **kw), None
    from convergent.data import load_dataset
    from convergent.train import TrainConfig, train_net

    b, _ = train_net(
        "net",
        arch,
        load_dataset("digits", subset=300),
        seeds={"init": 1, "order": 1},
        config=TrainConfig(epochs=2, batch_size=32),
        model_kwargs=kw,
        progress=False,
    )
    spec = find_permutation_groups(a, torch.randn(2, 1, 8, 8))
    from convergent.align._match import weight_objective

    for seed in (0, 1):
        ours = weight_matching(spec, a.state_dict(), b.state_dict(), seed=seed)
        reference = _algorithm1(spec, a.state_dict(), b.state_dict(), seed=seed)
        assert ours.objective == pytest.approx(
            weight_objective(spec, a.state_dict(), b.state_dict(), ours.perms)
        )
        assert ours.objective >= reference - 1e-9 * abs(reference)
    with pytest.raises(ValueError, match="'starts' parameter must hold 'forward' and/or"):
        weight_matching(spec, a.state_dict(), b.state_dict(), starts=("random",))
    with pytest.raises(ValueError, match="must name at least one start"):
        weight_matching(spec, a.state_dict(), b.state_dict(), starts=())


def test_interpolation_at_chosen_alphas_with_known_endpoints():
    model, other, spec, planted, x = _planted("resnet", width=0.5)
    y = torch.randint(0, 10, (64,))
    full = interpolation_curve(model, other, {"test": (x, y)}, points=3, progress=False)
    known = {
        "test": {
            a: (full.curves["test"]["loss"][i], full.curves["test"]["accuracy"][i])
            for i, a in ((0, 0.0), (2, 1.0))
        }
    }
    again = interpolation_curve(
        model, other, {"test": (x, y)}, alphas=[0.0, 0.5, 1.0], endpoints=known, progress=False
    )
    np.testing.assert_allclose(again.curves["test"]["loss"], full.curves["test"]["loss"])
    assert again.barriers == full.barriers
