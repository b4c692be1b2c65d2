"""Merging K nets: permuted copies of one net merge back into exactly that net; averaging is exact;
renormalisation and evaluation; every refusal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from convergent.align import (
    align_zoo,
    apply_permutation,
    average_states,
    find_permutation_groups,
    match_pair,
    merge_models,
)
from convergent.models import build_model


def _copies(arch: str, k: int = 4, **kw):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, input_size=8, num_classes=10, **kw).eval()
    x = torch.randn(64, 1, 8, 8)
    spec = find_permutation_groups(model, x[:2])
    models = {"net": model}
    for seed in range(1, k):
        other = copy.deepcopy(model)
        other.load_state_dict(
            apply_permutation(model.state_dict(), spec, spec.random_permutations(seed))
        )
        models[f"copy{seed}"] = other
    return model, models, spec, x


@pytest.mark.parametrize(
    ("arch", "kw", "method", "reference"),
    [
        ("mlp", {"width": 16}, "weight", None),
        ("mlp", {"width": 16}, "activation", None),
        ("mlp", {"width": 16}, "weight", "average"),
        ("mlp", {"width": 16}, "activation", "average"),
        ("resnet", {"width": 0.5}, "weight", None),
        ("resnet", {"width": 0.5}, "activation", None),
        ("resnet", {"width": 0.5}, "weight", "average"),
    ],
)
def test_merging_permuted_copies_of_one_net_gives_back_that_net_exactly(
    arch, kw, method, reference
):
    model, models, spec, x = _copies(arch, **kw)
    result = merge_models(models, spec, method=method, reference=reference, images=x, naive=False)
    for key, value in model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key
    assert set(result.alignments) == set(models)
    assert all(
        np.array_equal(p, np.arange(len(p))) for p in result.alignments["net"].perms.values()
    )


def test_average_states_is_an_exact_running_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["n"] == 3
    odd = {"w": torch.tensor([0.1, 1 / 3])}
    assert torch.equal(average_states([odd] * 7)["w"], odd["w"])
    with pytest.raises(ValueError, match="at least one state dict"):
        average_states([])


def test_merge_renormalises_and_evaluates_every_net_the_naive_and_the_merged_average():
    model, models, spec, x = _copies("resnet", k=3, width=0.5)
    y = torch.randint(0, 10, (64,))
    for mode in ("reset-bn", "repair"):
        result = merge_models(
            models, spec, repair_mode=mode, images=x, splits={"test": (x, y)}, reference="copy2"
        )
        # identical nets: reset-bn gives the net with BatchNorm statistics recomputed; REPAIR, which
        # sets every hidden channel to the nets' own statistics, gives back the nets' function
        with torch.no_grad():
            reset = copy.deepcopy(model)
            from convergent.align import reset_batchnorm

            reset_batchnorm(reset, x)
            expected = reset(x) if mode == "reset-bn" else model(x)
            torch.testing.assert_close(result.model(x), expected, atol=1e-4, rtol=1e-4)
            if mode == "repair":  # and that differs from resetting BatchNorm alone
                assert not torch.allclose(result.model(x), reset(x), atol=1e-2)
        assert set(result.members) == set(models)
        assert result.evaluation["test"]["accuracy"] == pytest.approx(
            result.members["net"]["test"]["accuracy"], abs=1 / 64
        )
        assert result.naive["test"]["loss"] > 0
        d = result.to_dict()
        assert d["reference"] == "copy2" and d["repair"] == mode and d["nets"] == list(models)


def test_merge_and_match_refusals():
    model, models, spec, x = _copies("mlp", k=2, width=8)
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        match_pair(model, model, spec, method="cka")
    with pytest.raises(ValueError, match="'similarity' parameter must be one of"):
        match_pair(model, model, spec, method="activation", similarity="l2", images=x)
    with pytest.raises(ValueError, match="Activation matching needs input images"):
        match_pair(model, model, spec, method="activation")
    with pytest.raises(ValueError, match="at least two nets. Got 1"):
        align_zoo({"net": model}, spec)
    with pytest.raises(
        ValueError, match=r"'reference' parameter must name a net \(\['net', 'copy1'\]\)"
    ):
        align_zoo(models, spec, reference="seed9")
    with pytest.raises(ValueError, match="'repair' parameter must be one of"):
        merge_models(models, spec, repair_mode="magic")
    with pytest.raises(ValueError, match="needs calibration inputs"):
        merge_models(models, spec, repair_mode="repair")


def test_merge_reports_the_ensemble_and_warns_when_the_merged_net_falls_behind():
    torch.manual_seed(0)
    models = {
        f"net{i}": build_model("mlp", in_channels=1, input_size=8, num_classes=10, width=16)
        for i in range(3)
    }
    first = next(iter(models.values()))
    x = torch.randn(64, 1, 8, 8)
    # labels the members agree on: their ensemble's own predictions
    from convergent.align._merge import evaluate_ensemble

    with torch.no_grad():
        y = torch.stack([m(x) for m in models.values()]).mean(0).argmax(1)
    spec = find_permutation_groups(first, x[:2])
    result = merge_models(models, spec, method="weight", splits={"test": (x, y)}, naive=True)
    assert result.ensemble["test"]["accuracy"] == 1.0
    assert evaluate_ensemble(list(models.values()), x, y) == (
        pytest.approx(result.ensemble["test"]["loss"]),
        1.0,
    )
    d = result.to_dict()
    assert set(d) >= {"members", "naive_average", "evaluation", "ensemble", "notes"}
    from convergent.align._run import merge_summary

    labels = [r["net"] for r in merge_summary(result)]
    assert labels[:3] == list(models) and labels[-1].startswith("ensemble of the 3 nets")
    from convergent.align._merge import merge_notes

    result.members = {"a": {"test": {"accuracy": 0.9}}, "b": {"test": {"accuracy": 0.8}}}
    result.evaluation = {"test": {"accuracy": 0.0978}}
    (note,) = merge_notes(result)
    assert "(9.78%) is far below its worst member's (80.00%): try --repair repair" in note
    result.repair, result.method = "repair", "weight"
    assert "try --method activation" in merge_notes(result)[0]
    result.method = "activation"
    assert "try fewer or wider nets" in merge_notes(result)[0]
    result.evaluation = {"test": {"accuracy": 0.75}}
    assert merge_notes(result) == []


def test_merge_refuses_reset_bn_without_batchnorm():
    model, models, spec, x = _copies("mlp", k=2, width=8)
    with pytest.raises(ValueError, match="has no BatchNorm layer: it would change nothing"):
        merge_models(models, spec, repair_mode="reset-bn", images=x)
