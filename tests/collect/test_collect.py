"""The collection loop against brute-force references: stored activations + two-pass NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convergent import ConvergentError, CorruptFileError
from convergent.models import build_model
from convergent.record import Statistics, TopK, collect, to_samples


def _nets(k=2, arch="convnet", **kw):
    out = {}
    for seed in range(k):
        torch.manual_seed(seed)
        out[f"net{seed}"] = build_model(
            arch,
            in_channels=1,
            input_size=8,
            num_classes=10,
            **({"width": 0.25} | kw if arch == "convnet" else kw),
        )
    return out


def _inputs(n=37, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _reference(models, x, layer, spatial="positions", batch_size=None):
    """All activations stored, then a float64 two-pass mean / covariance (the brute-force way).
    With ``batch_size`` the nets run on the same batches as collect (bit-identical activations)."""
    acts = {name: [] for name in models}
    handles = []
    for name, m in models.items():
        mod = dict(m.named_modules())[layer]
        handles.append(mod.register_forward_hook(lambda mod, i, o, name=name: acts[name].append(o)))
    step = batch_size or len(x)
    try:
        with torch.no_grad():
            for m in models.values():
                m.eval()
                for start in range(0, len(x), step):
                    m(x[start : start + step])
    finally:
        for h in handles:
            h.remove()
    parts = [
        torch.cat([to_samples(o, spatial=spatial)[0] for o in acts[n]]).double().numpy()
        for n in models
    ]
    joint = np.concatenate(parts, axis=1)
    mean = joint.mean(axis=0)
    centered = joint - mean
    return joint, mean, centered.T @ centered


@pytest.mark.parametrize("spatial", ["positions", "mean"])
def test_joint_moments_equal_two_pass_reference(spatial):
    models = _nets(3)
    x = _inputs()
    stats = collect(
        models,
        x,
        ["conv1", "conv3", "fc7"],
        batch_size=8,
        exact=True,
        spatial=spatial,
        progress=False,
    )
    for layer in ["conv1", "conv3", "fc7"]:
        joint, mean, comoment = _reference(models, x, layer, spatial)
        ls = stats[layer]
        assert ls.samples == joint.shape[0]
        np.testing.assert_allclose(ls.moments.mean, mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            ls.moments.comoment, comoment, rtol=1e-10, atol=1e-10 * np.abs(comoment).max()
        )
        widths = [ls.width(n) for n in models]
        assert len(set(widths)) == 1
        assert ls.unit_ranges == {f"net{i}": (i * widths[0], (i + 1) * widths[0]) for i in range(3)}
    assert stats["conv1"].samples == (37 * 64 if spatial == "positions" else 37)
    assert stats["conv1"].map_shape == ((8, 8) if spatial == "positions" else ())
    assert stats.num_inputs == 37 and stats.nets == ["net0", "net1", "net2"]


def test_float32_products_are_close_to_exact():
    models = _nets(2)
    x = _inputs()
    fast = collect(models, x, ["conv2"], batch_size=16, exact=False, progress=False)
    exact = collect(models, x, ["conv2"], batch_size=16, exact=True, progress=False)
    np.testing.assert_allclose(
        fast["conv2"].moments.corr(), exact["conv2"].moments.corr(), atol=1e-5
    )


def test_within_and_between_blocks_are_slices_of_one_matrix():
    models = _nets(2)
    stats = collect(models, _inputs(), ["conv2"], progress=False)
    ls = stats["conv2"]
    corr = ls.moments.corr()
    np.testing.assert_array_equal(
        ls.corr_block("net0", "net1"), corr[ls.units("net0"), ls.units("net1")]
    )
    with pytest.raises(ValueError, match="has no net 'net7'"):
        ls.units("net7")


def test_hand_checkable_linear_model():
    """Known weights and inputs: the activations and so the moments are known exactly."""
    lin = nn.Linear(2, 2, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, 10.0]))
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    # unit 0 = x0 -> 0,1,2,3 ; unit 1 = x0 + x1 + 10 -> 11,12,13,14
    stats = collect({"m": nn.Sequential(lin)}, x, ["0"], batch_size=3, exact=True, progress=False)
    m = stats["0"].moments
    np.testing.assert_allclose(m.mean, [1.5, 12.5])
    np.testing.assert_allclose(m.cov(ddof=0), np.full((2, 2), 1.25))
    np.testing.assert_allclose(m.corr(), np.ones((2, 2)))
    assert stats["0"].topk.index[0, :2].tolist() == [3, 2]


def test_token_sequence_layer_gives_b_times_t_samples():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(8, 6)

        def forward(self, x):  # x: (B, 1, 8, 8) -> 8 tokens of 8 features
            return self.embed(x[:, 0])

    models = {"a": Tokens(), "b": Tokens()}
    x = _inputs(5)
    stats = collect(models, x, ["embed"], exact=True, progress=False)
    assert stats["embed"].samples == 5 * 8 and stats["embed"].map_shape == (8,)
    joint, mean, _ = _reference(models, x, "embed")
    np.testing.assert_allclose(stats["embed"].moments.mean, mean, rtol=1e-10)


def test_nets_disagreeing_on_sample_count_get_a_clear_error():
    models = {
        "small": build_model("convnet", in_channels=1, input_size=8, width=0.25),
        "other": build_model("resnet", in_channels=1, input_size=8, width=0.25),
    }
    # 'pool2' does not exist in a resnet: unknown layer error names the valid ones
    with pytest.raises(ValueError, match="Model 'other' has no layer named 'conv1'"):
        collect(models, _inputs(4), ["conv1"], progress=False)

    class Wrap(nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, stride=stride, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ConvergentError, match="disagree on the number of samples.*spatial='mean'"):
        collect({"a": Wrap(1), "b": Wrap(2)}, _inputs(4), ["conv"], progress=False)
    stats = collect(
        {"a": Wrap(1), "b": Wrap(2)}, _inputs(4), ["conv"], spatial="mean", progress=False
    )
    assert stats["conv"].samples == 4


def test_non_finite_activations_name_layer_units_and_inputs():
    model = nn.Sequential(nn.Linear(2, 3))
    x = torch.zeros(8, 2)
    x[6, 0] = torch.inf
    with pytest.raises(
        ValueError, match=r"while collecting layer '0' \(joint units: m 0-2\) at inputs 4-7"
    ):
        collect({"m": model}, x, ["0"], batch_size=4, progress=False)


def test_topk_matches_brute_force():
    models = _nets(2)
    x = _inputs(29)
    stats = collect(models, x, ["conv2", "fc6"], batch_size=7, topk=5, progress=False)
    for layer in ["conv2", "fc6"]:
        joint, _, _ = _reference(models, x, layer, batch_size=7)
        per_input = joint.shape[0] // 29
        idx = np.repeat(np.arange(29), per_input)
        pos = np.tile(np.arange(per_input), 29)
        tk = stats[layer].topk
        for unit in range(joint.shape[1]):
            order = np.lexsort((pos, idx, -joint[:, unit]))[:5]
            np.testing.assert_array_equal(tk.index[unit], idx[order])
            np.testing.assert_array_equal(tk.position[unit], pos[order])
            np.testing.assert_array_equal(tk.value[unit], joint[order, unit])


def test_topk_merge_and_errors():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 3)).astype(np.float32)
    whole = TopK(3, 4).update(values, np.arange(50), np.zeros(50, dtype=np.int64))
    a = TopK(3, 4).update(values[:20], np.arange(20), np.zeros(20, dtype=np.int64))
    b = TopK(3, 4).update(values[20:], np.arange(20, 50), np.zeros(30, dtype=np.int64))
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.index, whole.index)
    few = TopK(2, 5).update(np.ones((2, 2)), np.arange(2), np.zeros(2, dtype=np.int64))
    assert few.index[0].tolist() == [0, 1, -1, -1, -1]
    with pytest.raises(ValueError, match="'k' parameter of TopK"):
        TopK(3, 0)
    with pytest.raises(ValueError, match=r"expects values of shape \(n, 3\)"):
        TopK(3).update(np.ones((2, 4)), np.arange(2), np.arange(2))
    with pytest.raises(TypeError, match="expects a TopK"):
        TopK(3).merge("x")
    with pytest.raises(ValueError, match="Cannot merge TopK of 2 units"):
        TopK(3).merge(TopK(2))


def test_save_load_round_trip_and_corruption(tmp_path):
    models = _nets(2)
    stats = collect(models, _inputs(), ["conv1", "fc8"], progress=False, info={"note": "x"})
    stats.save(tmp_path / "s")
    back = Statistics.load(tmp_path / "s")
    assert back.nets == stats.nets and back.num_inputs == stats.num_inputs
    assert back.info == {"note": "x"}
    for layer in ["conv1", "fc8"]:
        np.testing.assert_array_equal(back[layer].moments.comoment, stats[layer].moments.comoment)
        np.testing.assert_array_equal(back[layer].topk.index, stats[layer].topk.index)
        assert back[layer].unit_ranges == stats[layer].unit_ranges
    only = Statistics.load(tmp_path / "s", layers=["fc8"])
    assert list(only.layers) == ["fc8"]
    with pytest.raises(ValueError, match=r"No statistics for layers \['conv9'\]"):
        Statistics.load(tmp_path / "s", layers=["conv9"])
    with pytest.raises(ValueError, match="No statistics for layer 'conv9'"):
        stats["conv9"]
    f = tmp_path / "s" / "conv1.moments.safetensors"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(CorruptFileError, match="changed or truncated"):
        Statistics.load(tmp_path / "s")
    f.unlink()
    with pytest.raises(CorruptFileError, match="is missing"):
        Statistics.load(tmp_path / "s")
    with pytest.raises(ConvergentError, match="is not a statistics directory"):
        Statistics.load(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text('{"format": "convergent-zoo"}')
    with pytest.raises(ConvergentError, match="not a convergent statistics manifest"):
        Statistics.load(tmp_path / "x")


def test_argument_errors():
    models = _nets(1)
    with pytest.raises(ValueError, match="at least one model"):
        collect({}, _inputs())
    with pytest.raises(ValueError, match="'batch_size' parameter"):
        collect(models, _inputs(), batch_size=0)
    with pytest.raises(ValueError, match="'topk' parameter"):
        collect(models, _inputs(), topk=0)
    with pytest.raises(TypeError, match="'data' parameter of collect must be"):
        collect(models, 3)
    with pytest.raises(ValueError, match="holds no inputs"):
        collect(models, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ConvergentError, match="needs an initialised torch.distributed"):
        collect(models, _inputs(), distributed=True)


def test_dataset_inputs_and_default_layers():
    models = _nets(2)
    x = _inputs(10)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(10))
    a = collect(models, ds, progress=False, batch_size=4)
    b = collect(models, (x, torch.zeros(10)), progress=False, batch_size=4)
    assert list(a.layers) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    np.testing.assert_allclose(a["conv4"].moments.mean, b["conv4"].moments.mean)
