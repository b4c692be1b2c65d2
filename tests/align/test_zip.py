"""Beyond one-to-one merging (ZipIt!-style): the greedy pairing within and across nets, a zip of a
net with a permuted copy of itself gives back that net, merging no group gives the ensemble, partial
merges keep the last layers per net, and every refusal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from convergent.align import apply_permutation, find_permutation_groups
from convergent.align._zip import ZippedNets, greedy_pairs, merge_matrices, zip_models
from convergent.models import build_model
from tests.helpers.attention_models import TinyViT


def _pair(arch: str, **kw):
    torch.manual_seed(0)
    a = build_model(arch, in_channels=1, input_size=8, num_classes=10, **kw).eval()
    torch.manual_seed(1)
    b = build_model(arch, in_channels=1, input_size=8, num_classes=10, **kw).eval()
    x = torch.randn(64, 1, 8, 8)
    return a, b, find_permutation_groups(a, x[:2]), x


def test_greedy_pairs_take_the_most_correlated_features_within_or_across():
    # A = units 0, 1; B = units 2, 3. A0~A1 0.9 (within), A0~B2 0.8, A1~B3 0.7, B2~B3 0.95
    c = np.eye(4)
    for i, j, v in [(0, 1, 0.9), (0, 2, 0.8), (1, 3, 0.7), (2, 3, 0.95), (0, 3, 0.1), (1, 2, 0.1)]:
        c[i, j] = c[j, i] = v
    assert greedy_pairs(c, 2, within=True).tolist() == [[0, 1], [2, 3]]
    assert greedy_pairs(c, 2, within=False).tolist() == [[0, 2], [1, 3]]
    merge, unmerge = merge_matrices(np.array([[0, 2], [1, 3]]), 2)
    np.testing.assert_array_equal(merge, [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    np.testing.assert_array_equal(unmerge, 2 * merge.T)


@pytest.mark.parametrize(
    ("arch", "kw"),
    [("mlp", {"width": 16}), ("convnet", {"width": 0.25}), ("resnet", {"width": 0.5})],
)
@pytest.mark.parametrize("within", [False, True])
def test_zipping_a_net_with_a_permuted_copy_gives_back_the_net(arch, kw, within):
    a, _, spec, x = _pair(arch, **kw)
    b = copy.deepcopy(a)
    b.load_state_dict(apply_permutation(a.state_dict(), spec, spec.random_permutations(2)))
    result = zip_models({"a": a, "b": b}, spec, x, within=within)
    assert type(result.model) is type(a) and result.merged == list(spec.groups)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), a(x), atol=1e-5, rtol=1e-5)


def test_merging_no_group_is_the_ensemble_and_partial_merges_keep_one_head_per_net():
    a, b, spec, x = _pair("convnet", width=0.25)
    none = zip_models({"a": a, "b": b}, spec, x, groups=0)
    assert isinstance(none.model, ZippedNets)
    with torch.no_grad():
        torch.testing.assert_close(none.model(x), (a(x) + b(x)) / 2, atol=1e-6, rtol=1e-6)
        partial = zip_models({"a": a, "b": b}, spec, x, groups=5)
        trunk, heads = partial.model.copies
        assert partial.merged == [f"conv{i}.conv" for i in range(1, 6)]
        # the merged trunk is one: both copies hold the same conv weights; the heads are the nets'
        assert torch.equal(trunk.conv3.conv.weight, heads.conv3.conv.weight)
        assert torch.equal(trunk.fc8.weight, a.fc8.weight) and torch.equal(
            heads.fc8.weight, b.fc8.weight
        )
        assert torch.equal(trunk.fc7.linear.weight, a.fc7.linear.weight)
        # REPAIR of each copy: merged units to their pair's mean statistics (the same in both
        # copies, so the trunk stays shared), the heads' units to their own net's
        repaired = zip_models({"a": a, "b": b}, spec, x, groups=5, repair_mode="repair")
        again = zip_models(  # the same from the correlations and statistics it used
            {"a": a, "b": b},
            spec,
            x,
            groups=5,
            repair_mode="repair",
            correlations=repaired.correlations,
            statistics=repaired.statistics,
        )
        torch.testing.assert_close(again.model(x), repaired.model(x))
        one, two = repaired.model.copies
        torch.testing.assert_close(one.conv5.conv.weight, two.conv5.conv.weight)
        assert not torch.equal(one.conv5.conv.weight, trunk.conv5.conv.weight)


def test_zip_refusals():
    a, b, spec, x = _pair("resnet", width=0.5)
    with pytest.raises(ValueError, match="Zipping takes exactly two nets. Got 1"):
        zip_models({"a": a}, spec, x)
    with pytest.raises(ValueError, match="does not make a trunk: 'layer1.0.conv2.weight'"):
        zip_models({"a": a, "b": b}, spec, x, groups=1)
    with pytest.raises(ValueError, match="'groups' parameter must be between 0 and 6. Got 7"):
        zip_models({"a": a, "b": b}, spec, x, groups=7)
    with pytest.raises(ValueError, match=r"Unknown groups \['fc'\]"):
        zip_models({"a": a, "b": b}, spec, x, groups=["fc"])
    vit = TinyViT().eval()
    vit_spec = find_permutation_groups(vit, x[:2])
    with pytest.raises(ValueError, match="does not merge attention heads"):
        zip_models({"a": vit, "b": vit}, vit_spec, x)
