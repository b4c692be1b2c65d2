"""Attention: head-structured permutation groups found by tracing a pre-norm ViT (separate q, k, v,
proj modules, explicit reshape into heads) and a BERT encoder built from Hugging Face's own
``BertLayer`` (a small config, no download); outputs unchanged under random permutations; the
structured assignment is the optimum over head permutations; planted permutations recovered."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from convergent.align import (
    UnsupportedOperationError,
    activation_matching,
    apply_permutation,
    check_permutation_invariance,
    find_permutation_groups,
    weight_matching,
)
from convergent.align._check import check_model
from convergent.align._groups import PermutationGroup, PermutationSpec
from convergent.align._match import solve_unit
from convergent.models import ViT
from tests.helpers.attention_models import BertStyle, TinyViT

pytest.importorskip("transformers")


def _vit(**kw):
    torch.manual_seed(0)
    return TinyViT(**kw).eval(), torch.randn(6, 1, 8, 8)


def _builtin_vit():
    """convergent's own ``vit``: heads split by ``unflatten`` and merged by ``flatten``."""
    torch.manual_seed(0)
    model = ViT(in_channels=1, input_size=8, num_classes=3, patch=2, dim=16, depth=2, heads=4)
    return model.eval(), torch.randn(6, 1, 8, 8)


def _bert():
    torch.manual_seed(0)
    return BertStyle().eval(), torch.randn(6, 5, 6)


MODELS = {
    "vit-cls": lambda: _vit(),
    "vit-mean-sdpa": lambda: _vit(pool="mean", sdpa=True),
    "bert": _bert,
    "builtin-vit": _builtin_vit,
}


@pytest.mark.parametrize("which", list(MODELS))
def test_attention_models_are_permutation_invariant_with_heads_as_groups(which):
    model, x = MODELS[which]()
    for seed in range(3):
        assert check_permutation_invariance(model, x, seed=seed) <= 1e-5
    row = check_model(model, x, name=which)  # what `convergent align --check` runs
    assert row["ok"] == "yes"
    spec = find_permutation_groups(model, x)
    heads = {n: g for n, g in spec.groups.items() if g.heads > 1}
    # per block: one query/key group and one value group, 4 heads of 4 units, tied together
    assert len(heads) == 4 and all(g.heads == 4 and g.size == 16 for g in heads.values())
    first = "block1" if which == "builtin-vit" else "blocks.0"
    q = "layers.0.attention.self.query" if which == "bert" else f"{first}.attn.q"
    v = q.replace("query", "value") if which == "bert" else f"{first}.attn.v"
    assert set(spec.groups[q].layers) >= {q, q.replace("query", "key").replace(".q", ".k")}
    assert spec.groups[v].tie == spec.groups[q].tie == q
    out = "layers.0.attention.output.dense" if which == "bert" else f"{first}.attn.proj"
    assert (f"{out}.weight", 1, 0, 1) in spec.groups[v].axes  # proj reads the value units
    # the FFN's hidden units are a plain group of 2 * 16
    ffn = [g for g in spec.groups.values() if g.heads == 1 and g.size == 32]
    assert len(ffn) == 2
    # the residual stream: every LayerNorm and every Linear reading or writing it, in one group
    stream = next(g for g in spec.groups.values() if g.size == 16 and g.heads == 1)
    params = {a[0] for a in stream.axes}
    norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert {f"{n}.weight" for n in norms} | {f"{n}.bias" for n in norms} <= params
    if which == "vit-cls":
        assert {"cls_token", "pos_embed", "patch_embed.weight", "head.weight"} <= params
    if which == "builtin-vit":
        assert {"cls", "pos", "embed.weight", "head.weight"} <= params


def test_check_cli_on_a_vit_factory(capsys):
    import argparse

    from convergent.cli._align import add_commands

    parser = argparse.ArgumentParser(prog="convergent")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "align",
            "--check",
            "--model",
            "tests.helpers.attention_models:tiny_vit",
            "--input-shape",
            "1,8,8",
        ]
    )
    assert args.func(args) == 0
    assert " yes " in capsys.readouterr().out


def test_structured_assignment_is_the_optimum_over_head_permutations():
    heads, d = 3, 2
    groups = {
        "qk": PermutationGroup("qk", heads * d, heads=heads, tie="qk"),
        "v": PermutationGroup("v", heads * d, heads=heads, tie="qk"),
    }
    spec = PermutationSpec(groups, [])
    rng = np.random.default_rng(0)
    costs = {n: rng.normal(size=(heads * d, heads * d)) for n in groups}
    found = solve_unit(costs, spec, ["qk", "v"])
    spec.check(found)

    def value(perms):
        return sum(costs[n][np.arange(heads * d), perms[n]].sum() for n in groups)

    best = -np.inf
    inner = list(itertools.permutations(range(d)))
    for sigma in itertools.permutations(range(heads)):
        for choice in itertools.product(inner, repeat=2 * heads):
            perms = {
                n: np.concatenate(
                    [sigma[h] * d + np.array(choice[k * heads + h]) for h in range(heads)]
                )
                for k, n in enumerate(groups)
            }
            best = max(best, value(perms))
    assert value(found) == pytest.approx(best)


def test_head_structure_and_ties_are_enforced():
    model, x = _vit()
    spec = find_permutation_groups(model, x)
    perms = spec.identity()
    mixed = np.arange(16)
    mixed[[3, 4]] = mixed[[4, 3]]  # swaps units of heads 0 and 1
    with pytest.raises(ValueError, match="mixes units of different heads"):
        apply_permutation(model.state_dict(), spec, {**perms, "blocks.0.attn.q": mixed})
    heads_moved = np.concatenate([np.arange(4, 8), np.arange(4), np.arange(8, 16)])
    with pytest.raises(ValueError, match="moves its heads unlike the other groups of tie"):
        apply_permutation(model.state_dict(), spec, {**perms, "blocks.0.attn.v": heads_moved})


@pytest.mark.parametrize("which", ["vit-cls", "bert", "builtin-vit"])
@pytest.mark.parametrize("method", ["weight", "activation"])
def test_matching_recovers_a_planted_permutation_of_an_attention_model(which, method):
    model, x = MODELS[which]()
    spec = find_permutation_groups(model, x)
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(model.state_dict(), spec, spec.random_permutations(7)))
    if method == "weight":
        alignment = weight_matching(spec, model.state_dict(), other.state_dict())
    else:
        alignment = activation_matching(model, other, spec, x, progress=False)
    back = apply_permutation(other.state_dict(), spec, alignment.perms)
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value), key


class FusedQKV(torch.nn.Module):
    """timm's fused qkv (one Linear, reshaped to (3, heads, dim)): refused, not mis-grouped."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.out(y.mean(1))


class ParamMatmul(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.w = torch.nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return self.fc(x) @ self.w


@pytest.mark.parametrize(
    ("model", "shape", "match"),
    [
        (FusedQKV(), (2, 3, 8), r"reshape from \(2, 3, 24\) to \(2, 3, 3, 2, 4\) is not supported"),
        (ParamMatmul(), (2, 4), r"reads a parameter or buffer directly"),
    ],
)
def test_unsupported_attention_forms_are_named(model, shape, match):
    with pytest.raises(UnsupportedOperationError, match=match):
        find_permutation_groups(model, torch.randn(*shape))
