"""The built-in vision transformer: structure, layer names, token samples, tracing, symmetries."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from convergent.collect import to_samples
from convergent.collect._hooks import capture, resolve_layers
from convergent.collect._samples import is_channels_first
from convergent.data import load_dataset
from convergent.models import ViT, build_model, default_layers, layer_names
from convergent.models._vit import default_patch
from convergent.train import default_config, train_net


def _tiny(**kwargs) -> ViT:
    torch.manual_seed(0)
    args = {"in_channels": 1, "input_size": 8, "num_classes": 10, "dim": 8, "depth": 2, "heads": 2}
    return ViT(**{**args, **kwargs}).eval()


def _jitter(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random LayerNorm gains/biases and biases, so that no symmetry hides behind an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def _images(n: int = 5, size: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------------------------------------------
# structure and names


def test_every_module_and_its_output_shape_on_digits():
    model = build_model("vit", in_channels=1, input_size=(8, 8), num_classes=10)
    assert (model.patch, model.dim, model.depth, model.heads, model.hidden) == (2, 64, 4, 4, 128)
    block = [
        "norm1",
        "attn",
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.proj",
        "drop1",
        "norm2",
        "mlp",
        "mlp.fc1",
        "mlp.act",
        "mlp.fc2",
        "drop2",
    ]
    expected = ["embed", "drop"]
    for k in range(1, 5):
        expected += [f"block{k}"] + [f"block{k}.{part}" for part in block]
    assert layer_names(model) == [*expected, "norm", "head"]
    assert [name for name, _ in model.named_parameters(recurse=False)] == ["cls", "pos"]
    assert model.cls.shape == (1, 1, 64) and model.pos.shape == (1, 17, 64)
    with capture({"m": model}, layer_names(model)) as store:
        out = model(_images(3))
        shapes = {layer: tuple(o.shape) for (_, layer), o in store.outputs.items()}
    assert out.shape == (3, 10)
    assert shapes["embed"] == (3, 64, 4, 4)  # a conv map: one position per 2x2 patch
    assert shapes["head"] == (3, 10)
    for k in range(1, 5):
        for part in ("", ".norm1", ".attn", ".attn.q", ".attn.proj", ".mlp", ".mlp.fc2", ".norm2"):
            assert shapes[f"block{k}{part}"] == (3, 17, 64)
        assert shapes[f"block{k}.mlp.fc1"] == shapes[f"block{k}.mlp.act"] == (3, 17, 128)


def test_default_layers_alternate_ffn_units_and_residual_stream():
    model = ViT(input_size=8, depth=3)
    assert default_layers(model) == [
        "block1.mlp.act",
        "block1",
        "block2.mlp.act",
        "block2",
        "block3.mlp.act",
        "block3",
        "head",
    ]
    resolved = resolve_layers(model, default_layers(model))
    assert isinstance(resolved["block2.mlp.act"], nn.GELU)
    assert isinstance(resolved["head"], nn.Linear)
    # every layer output is read as tokens (B, T, C), not as a (B, C, L) channels-first map
    assert not any(is_channels_first(m) for m in resolved.values())


def test_block_output_is_the_residual_stream_and_mlp_act_the_hidden_units():
    model = _jitter(_tiny(depth=1))
    x = _images()
    with capture({"m": model}, ["embed", "block1", "block1.mlp.act", "block1.mlp.fc1"]) as store:
        model(x)
        out = {layer: o for (_, layer), o in store.outputs.items()}
    tokens = out["embed"].flatten(2).transpose(1, 2)
    stream = torch.cat([model.cls.expand(len(x), -1, -1), tokens], 1) + model.pos
    block = model.block1
    stream = stream + block.attn(block.norm1(stream))
    hidden = nn.functional.gelu(block.mlp.fc1(block.norm2(stream)))
    torch.testing.assert_close(out["block1.mlp.act"], hidden)
    torch.testing.assert_close(out["block1.mlp.act"], nn.functional.gelu(out["block1.mlp.fc1"]))
    torch.testing.assert_close(out["block1"], stream + block.mlp.fc2(hidden))


def test_attention_is_softmax_over_tokens_per_head():
    """A hand-written reference: each head attends with its own block of q, k, v features."""
    model = _jitter(_tiny(depth=1, dim=8, heads=2))
    attn = model.block1.attn
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(4))
    q, k, v = attn.q(x), attn.k(x), attn.v(x)
    heads = []
    for h in range(2):
        cols = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / 2.0, dim=-1)
        heads.append(weights @ v[..., cols])
    torch.testing.assert_close(attn(x), attn.proj(torch.cat(heads, -1)))


@pytest.mark.parametrize(
    ("size", "patch"),
    [((8, 8), 2), ((16, 16), 4), ((28, 28), 7), ((32, 32), 8), ((5, 7), 1), ((28, 14), 7)],
)
def test_default_patch_is_the_smallest_divisor_with_at_most_16_tokens(size, patch):
    assert default_patch(*size) == patch
    model = ViT(in_channels=3, input_size=size, depth=1)
    assert model.patch == patch
    assert model.num_patches == (size[0] // patch) * (size[1] // patch)
    assert model.num_patches <= 16 or patch == 1
    assert model(torch.randn(2, 3, *size)).shape == (2, 10)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_pooling_decides_tokens_and_what_the_head_reads(pool):
    model = _jitter(_tiny(pool=pool, patch=4))
    assert model.pos.shape[1] == (5 if pool == "cls" else 4)
    assert hasattr(model, "cls") == (pool == "cls")
    x = _images()
    with capture({"m": model}, ["norm"]) as store:
        logits = model(x)
        normed = store.outputs[("m", "norm")]
    pooled = normed[:, 0] if pool == "cls" else normed.mean(1)
    torch.testing.assert_close(logits, model.head(pooled))


# ------------------------------------------------------------------------------------------------
# what the pipeline relies on


def test_token_layers_become_one_sample_per_token():
    model = _jitter(_tiny())
    x = _images(4)
    with capture({"m": model}, ["block2", "block2.mlp.act"]) as store:
        model(x)
        outputs = dict(store.outputs)
    for layer, units in (("block2", 8), ("block2.mlp.act", 16)):
        out = outputs[("m", layer)]
        samples, map_shape = to_samples(out)
        assert samples.shape == (4 * 17, units) and map_shape == (17,)
        # row i*T + t is token t of input i
        torch.testing.assert_close(samples[2 * 17 + 5], out[2, 5])
        means, shape = to_samples(out, spatial="mean")
        assert means.shape == (4, units) and shape == ()


def test_torch_fx_traces_the_model():
    for pool in ("cls", "mean"):
        model = _jitter(_tiny(pool=pool))
        graph = fx.symbolic_trace(model)
        x = _images()
        torch.testing.assert_close(graph(x), model(x))
        called = {n.target for n in graph.graph.nodes if n.op == "call_module"}
        assert {"block1.attn.q", "block1.attn.k", "block1.attn.v", "block1.attn.proj"} <= called
        assert {"block2.mlp.fc1", "block2.mlp.act", "block2.mlp.fc2", "head", "embed"} <= called


def test_same_seed_same_weights_and_deterministic_training():
    a, b, c = (build_model("vit", in_channels=1, input_size=8, num_classes=10) for _ in range(3))
    for model, seed in ((a, 0), (b, 0), (c, 1)):
        torch.manual_seed(seed)
        model.reset_parameters()
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["pos"], sc["pos"])
    data = load_dataset("digits", subset=96)
    config = default_config("digits", epochs=2, batch_size=32)
    kwargs = {"dim": 16, "depth": 1, "heads": 2}
    runs = [
        train_net("n", "vit", data, seeds={"init": 3, "order": 3}, config=config,
                  model_kwargs=kwargs, progress=False)[0].state_dict()
        for _ in range(2)
    ]  # fmt: skip
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_default_digits_vit_trains_well():
    """The digits training defaults (SGD, lr 0.01, 20 epochs) train the default ViT well: the
    initialisation (unit-scale position embedding, 1/sqrt(fan_in) weights) is what makes SGD work."""
    data = load_dataset("digits")
    _, metrics = train_net(
        "seed0",
        "vit",
        data,
        seeds={"init": 0, "order": 0},
        config=default_config("digits"),
        progress=False,
    )
    assert metrics["test_accuracy"] >= 0.95


# ------------------------------------------------------------------------------------------------
# symmetries, applied by hand (the permutation groups the aligner must find)


def _permute_ffn(block: nn.Module, perm: torch.Tensor) -> None:
    with torch.no_grad():
        block.mlp.fc1.weight.copy_(block.mlp.fc1.weight[perm])
        block.mlp.fc1.bias.copy_(block.mlp.fc1.bias[perm])
        block.mlp.fc2.weight.copy_(block.mlp.fc2.weight[:, perm])


def _permute_attention(attn: nn.Module, head_perm: list[int], qk_perm, v_perm) -> None:
    """Heads move as blocks of q, k, v rows and proj columns; inside each head, q and k share one
    feature permutation and v and proj another."""
    d = attn.head_dim
    qk = torch.cat([h * d + torch.as_tensor(qk_perm[h]) for h in head_perm])
    vp = torch.cat([h * d + torch.as_tensor(v_perm[h]) for h in head_perm])
    with torch.no_grad():
        for lin, idx in ((attn.q, qk), (attn.k, qk), (attn.v, vp)):
            lin.weight.copy_(lin.weight[idx])
            lin.bias.copy_(lin.bias[idx])
        attn.proj.weight.copy_(attn.proj.weight[:, vp])


def test_permuting_ffn_units_heads_and_head_features_keeps_the_function():
    model = _jitter(_tiny(dim=12, heads=3))
    x = _images()
    before = model(x)
    gen = torch.Generator().manual_seed(5)
    for block in (model.block1, model.block2):
        _permute_ffn(block, torch.randperm(24, generator=gen))
        qk = [torch.randperm(4, generator=gen) for _ in range(3)]
        vp = [torch.randperm(4, generator=gen) for _ in range(3)]
        _permute_attention(block.attn, [2, 0, 1], qk, vp)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    # a permutation that moves q features without k breaks it: the test can fail
    attn = model.block1.attn
    with torch.no_grad():
        attn.q.weight.copy_(attn.q.weight[torch.arange(12).roll(1)])
    assert not torch.allclose(model(x), before, atol=1e-3)


def _rotate_residual_stream(model: ViT, rot: torch.Tensor) -> None:
    """x -> rot @ x on every token of the residual stream: writers rotate their outputs, readers
    (through LayerNorm) their inputs."""
    with torch.no_grad():
        model.embed.weight.copy_(torch.einsum("ij,jcab->icab", rot, model.embed.weight))
        model.embed.bias.copy_(rot @ model.embed.bias)
        model.pos.copy_(model.pos @ rot.T)
        model.cls.copy_(model.cls @ rot.T)
        for k in range(1, model.depth + 1):
            block = getattr(model, f"block{k}")
            for reader in (block.attn.q, block.attn.k, block.attn.v, block.mlp.fc1):
                reader.weight.copy_(reader.weight @ rot.T)
            for writer in (block.attn.proj, block.mlp.fc2):
                writer.weight.copy_(rot @ writer.weight)
                writer.bias.copy_(rot @ writer.bias)
        model.head.weight.copy_(model.head.weight @ rot.T)


def _orthogonal_fixing_ones(dim: int, seed: int) -> torch.Tensor:
    """A random orthogonal matrix that maps the all-ones vector to itself."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(
        torch.cat([torch.ones(dim, 1), torch.randn(dim, dim - 1, generator=gen)], 1)
    )[0]
    comp = basis[:, 1:]  # orthonormal basis of the complement of ones
    r = torch.linalg.qr(torch.randn(dim - 1, dim - 1, generator=gen))[0]
    return torch.ones(dim, dim) / dim + comp @ r @ comp.T


def test_residual_stream_has_no_privileged_basis_until_layernorm_gains_differ():
    """With LayerNorm at identity (as initialised), any rotation of the residual stream that fixes
    the all-ones direction (which LayerNorm subtracts) is a symmetry; the FFN hidden units have no
    such freedom, and learned per-unit LayerNorm gains break the rotation symmetry down to
    permutations."""
    model = _tiny(dim=8, heads=2)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.bias, std=0.3)
    x = _images()
    before = model(x)
    rot = _orthogonal_fixing_ones(8, seed=6)
    torch.testing.assert_close(rot @ torch.ones(8), torch.ones(8))
    torch.testing.assert_close(rot @ rot.T, torch.eye(8), atol=1e-6, rtol=0)
    _rotate_residual_stream(model, rot)
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    # the same rotation with learned gains is no symmetry; a permutation still is
    jittered = _jitter(_tiny(dim=8, heads=2))
    before = jittered(x)
    rotated = _jitter(_tiny(dim=8, heads=2))
    _rotate_residual_stream(rotated, rot)
    assert not torch.allclose(rotated(x), before, atol=1e-3)
    perm = torch.eye(8)[torch.randperm(8, generator=torch.Generator().manual_seed(7))]
    _rotate_residual_stream(jittered, perm)
    with torch.no_grad():
        for name, p in jittered.named_parameters():
            if "norm" in name:
                p.copy_(perm @ p)
    torch.testing.assert_close(jittered(x), before, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "'dim' parameter of ViT must be an integer >= 1. Got 0"),
        ({"dim": 6.5}, ValueError, "'dim' parameter of ViT must be an integer"),
        ({"dim": "64"}, TypeError, "'dim' parameter of ViT must be an integer"),
        ({"depth": 0}, ValueError, "'depth' parameter of ViT must be an integer >= 1"),
        ({"heads": True}, TypeError, "'heads' parameter of ViT must be an integer"),
        ({"heads": 5}, ValueError, r"'heads' parameter of ViT must divide 'dim' \(64\). Got 5"),
        ({"patch": 3}, ValueError, "'patch' parameter of ViT must divide the input size 8x8"),
        ({"patch": 0}, ValueError, "'patch' parameter of ViT must be an integer >= 1"),
        ({"mlp_ratio": 0}, ValueError, "'mlp_ratio' parameter of ViT must be a number > 0"),
        ({"mlp_ratio": "2"}, TypeError, "'mlp_ratio' parameter of ViT must be a number"),
        ({"pool": "max"}, ValueError, r"'pool' parameter of ViT must be one of \('cls', 'mean'\)"),
        ({"dropout": 1.0}, ValueError, r"'dropout' parameter of ViT must be in \[0, 1\)"),
        ({"dropout": False}, TypeError, r"'dropout' parameter of ViT must be a number"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    # the architecture checks its own arguments (build_model checks kinds against the signature
    # before, with the same exception types: tests/models/test_user_factories.py)
    with pytest.raises(error, match=match):
        ViT(in_channels=1, input_size=8, num_classes=10, **kwargs)
    with pytest.raises(error):
        build_model("vit", in_channels=1, input_size=8, num_classes=10, **kwargs)


def test_hidden_units_follow_mlp_ratio():
    assert ViT(input_size=8, dim=16, mlp_ratio=4).hidden == 64
    assert ViT(input_size=8, dim=10, heads=2, mlp_ratio=0.25).hidden == 2  # rounded
    assert ViT(input_size=8, dim=2, heads=1, mlp_ratio=0.01).hidden == 1  # at least 1
