"""The collect hooks: kernel sums per layer and the observers, against stored activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convergent import ConvergentError
from convergent.models import build_model
from convergent.record import Statistics, collect, to_samples
from convergent.similarity import (
    FlatMinibatchCKA,
    KernelMoments,
    LayerSampleBuffers,
    PooledLayerMoments,
    ShuffledLayerPairs,
    ShuffledPairs,
    debiased_cka,
    joint_moments,
    layer_cka_matrix,
    linear_cka,
    rsa,
)
from convergent.stats._minibatch import unbiased_hsic_matrix
from tests.helpers import refs

LAYERS = ["conv1", "conv3", "fc7"]
BATCH = 8


def _nets(k=2):
    out = {}
    for seed in range(k):
        torch.manual_seed(seed)
        out[f"net{seed}"] = build_model(
            "convnet", in_channels=1, input_size=8, num_classes=10, width=0.25
        )
    return out


def _inputs(n=37):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _outputs(models, x):
    """Raw outputs per (net, layer) per batch, with the batches collect uses."""
    acts = {(n, layer): [] for n in models for layer in LAYERS}
    handles = []
    for name, m in models.items():
        mods = dict(m.named_modules())
        for layer in LAYERS:
            hook = mods[layer].register_forward_hook(
                lambda mod, i, o, key=(name, layer): acts[key].append(o.detach())
            )
            handles.append(hook)
    try:
        with torch.no_grad():
            for m in models.values():
                m.eval()
                for start in range(0, len(x), BATCH):
                    m(x[start : start + BATCH])
    finally:
        for h in handles:
            h.remove()
    return acts


def _cat(acts, net, layer, spatial):
    return (
        torch.cat([to_samples(o, spatial=spatial)[0] for o in acts[(net, layer)]]).double().numpy()
    )


@pytest.fixture(scope="module")
def run():
    models, x = _nets(), _inputs()
    acts = _outputs(models, x)
    observers = {
        "pooled": PooledLayerMoments(exact=True),
        "buffers": LayerSampleBuffers(10, seed=1),
        "flat": FlatMinibatchCKA(["conv1", "fc7"]),
        "shuffled": ShuffledLayerPairs("conv3", exact=True),
    }
    stats = collect(
        models,
        x,
        LAYERS,
        batch_size=BATCH,
        exact=True,
        kernel_sums=True,
        observers=list(observers.values()),
        progress=False,
    )
    return models, x, acts, stats, observers


def test_kernel_sums_per_layer_equal_stored_activations(run, tmp_path):
    models, x, acts, stats, _ = run
    for layer in LAYERS:
        m = stats[layer].moments
        assert isinstance(m, KernelMoments) and m.unit_ranges == stats[layer].unit_ranges
        ref = joint_moments({n: _cat(acts, n, layer, "positions") for n in models})
        np.testing.assert_allclose(m.norm_products, ref.norm_products, rtol=1e-9)
        a, b = _cat(acts, "net0", layer, "positions"), _cat(acts, "net1", layer, "positions")
        ac, bc = refs.centred(a), refs.centred(b)  # two-pass feature-space formula
        want = np.sum((ac.T @ bc) ** 2) / np.sqrt(
            np.sum((ac.T @ ac) ** 2) * np.sum((bc.T @ bc) ** 2)
        )
        assert abs(linear_cka(m).value - want) < 1e-8
        assert abs(debiased_cka(m).value - debiased_cka(a, b).value) < 1e-8
    assert stats.settings["kernel_sums"] is True
    stats.save(tmp_path / "stats")
    back = KernelMoments.load(tmp_path / "stats" / "conv3.moments.safetensors")
    assert back == stats["conv3"].moments
    plain = Statistics.load(tmp_path / "stats")["conv3"].moments  # still readable as Moments
    np.testing.assert_array_equal(plain.comoment, back.comoment)


def test_debiased_cka_on_pooled_layer_equals_textbook(run):
    models, x, acts, _, observers = run
    pooled = observers["pooled"]
    mat = pooled.matrix("net0", "net1", debiased=True)
    assert mat.rows == LAYERS and mat.cols == LAYERS and not mat.estimate
    for i, la in enumerate(LAYERS):
        for j, lb in enumerate(LAYERS):
            a, b = _cat(acts, "net0", la, "mean"), _cat(acts, "net1", lb, "mean")
            assert abs(mat.values[i, j] - refs.debiased_cka_gram(a, b)) < 1e-8
    blocks = [f"net0/{layer}" for layer in LAYERS]
    same = layer_cka_matrix(pooled.moments, blocks, blocks)
    np.testing.assert_allclose(np.diag(same.values), 1.0)


def test_sample_buffers_keep_the_same_inputs_in_every_layer(run):
    models, x, acts, _, observers = run
    buffers = observers["buffers"]
    kept = buffers["conv1"].index
    assert len(kept) == 10 and buffers["fc7"].index.tolist() == kept.tolist()
    for layer in LAYERS:
        want = np.concatenate([_cat(acts, n, layer, "mean") for n in models], 1)[kept]
        np.testing.assert_allclose(buffers[layer].features, want, rtol=1e-6, atol=1e-7)
    a, b = (_cat(acts, n, "conv3", "mean")[kept] for n in models)
    assert abs(rsa(buffers["conv3"]).value - refs.rsa_ref(a, b)) < 1e-6


def test_flat_minibatch_cka_equals_per_batch_reference(run):
    models, x, acts, _, observers = run
    mat = observers["flat"].matrix("net0", "net1")
    assert mat.estimate and mat.rows == ["conv1", "fc7"] and "estimate" in mat.note
    keys = [(n, layer) for n in models for layer in ["conv1", "fc7"]]
    total = 0.0
    for t in range(len(acts[keys[0]])):
        feats = [acts[k][t].reshape(acts[k][t].shape[0], -1).double().numpy() for k in keys]
        if feats[0].shape[0] >= 4:
            total = total + unbiased_hsic_matrix(np.stack([f @ f.T for f in feats]))
    # keys: net0/conv1, net0/fc7, net1/conv1, net1/fc7
    want = total[0, 3] / np.sqrt(total[0, 0] * total[3, 3])
    assert abs(mat.values[0, 1] - want) < 1e-8
    assert observers["flat"].estimator.skipped == 0  # 37 = 4 * 8 + 5


def test_shuffled_layer_pairs_equal_the_pure_accumulator(run):
    models, x, acts, stats, observers = run
    shuffled = observers["shuffled"].moments
    ref = ShuffledPairs(stats["conv3"].unit_ranges, exact=True)
    for t in range(len(acts[("net0", "conv3")])):
        parts = [to_samples(acts[(n, "conv3")][t], spatial="positions")[0] for n in models]
        ref.update(torch.cat(parts, 1), parts[0].shape[0] // acts[("net0", "conv3")][t].shape[0])
    np.testing.assert_allclose(shuffled.comoment, ref.moments.comoment, rtol=1e-12)
    assert linear_cka(shuffled).value < linear_cka(stats["conv3"].moments).value


def test_observers_merge_as_shards():
    models, x = _nets(), _inputs(24)
    whole = PooledLayerMoments(["fc7"], exact=True)
    collect(models, x, LAYERS, batch_size=BATCH, observers=[whole], progress=False)
    halves = [PooledLayerMoments(["fc7"], exact=True) for _ in range(2)]
    for part, obs in zip((x[:16], x[16:]), halves):
        collect(models, part, LAYERS, batch_size=BATCH, observers=[obs], progress=False)
    merged = PooledLayerMoments().merge(halves[0]).merge(halves[1])
    want = whole.moments.norm_products
    np.testing.assert_allclose(merged.moments.norm_products, want, rtol=1e-9)
    assert merged.merge(PooledLayerMoments()).moments.count == 24


def test_errors(monkeypatch):
    models, x = _nets(), _inputs(9)
    with pytest.raises(TypeError, match="must have an observe\\(view\\) method"):
        collect(models, x, LAYERS, observers=[object()], progress=False)
    with pytest.raises(ValueError, match="are not collected"):
        collect(models, x, ["conv1"], observers=[PooledLayerMoments(["fc7"])], progress=False)
    from convergent.collect import _loop as collect_module

    monkeypatch.setattr(collect_module, "_world", lambda: (0, 2))
    # kernel sums are merged across ranks like every statistic (tests/collect/test_torchrun.py);
    # a world without a process group cannot merge anything and says so
    with pytest.raises(
        ConvergentError, match="needs an initialised torch.distributed process group"
    ):
        collect(models, x, LAYERS, kernel_sums=True, progress=False)
    monkeypatch.undo()
    pooled, flat, shuffled = PooledLayerMoments(), FlatMinibatchCKA(), ShuffledLayerPairs("fc7")
    with pytest.raises(ValueError, match="has seen no batch"):
        pooled.matrix("net0", "net1")
    with pytest.raises(ValueError, match="has seen no batch"):
        _ = shuffled.moments
    collect(models, x, LAYERS, observers=[pooled, flat, shuffled], progress=False)
    with pytest.raises(ValueError, match="No net 'net7'"):
        pooled.matrix("net0", "net7")
    with pytest.raises(ValueError, match="No net 'net7'"):
        flat.matrix("net7", "net1")
    with pytest.raises(ValueError, match="No buffer for layer"):
        LayerSampleBuffers()["fc7"]
