"""The statistics directory keeps what whole-layer similarity needs: kernel sums (debiased CKA)
and the pooled all-layer moments (layer x layer CKA); old plain directories still load."""

from __future__ import annotations

import numpy as np
import pytest

from convergent import ConvergentError
from convergent.analysis import layer_by_layer_cka
from convergent.cli import main
from convergent.data import load_dataset
from convergent.record import Statistics, collect, collect_run
from convergent.similarity import KernelMoments, debiased_cka, linear_cka
from convergent.stats import Moments
from convergent.train import load_zoo
from tests.helpers.tiny import tiny_zoo

LAYERS = ["conv1", "conv4", "fc6"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    tiny_zoo(out)
    return out


@pytest.fixture(scope="module")
def collected(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "stats"
    stats = collect_run(out, zoo=zoo, layers=LAYERS, max_inputs=60, exact=True, progress=False)
    return out, stats


def test_collect_run_keeps_kernel_sums_that_load_back(collected):
    out, stats = collected
    loaded = Statistics.load(out)
    assert stats.settings["kernel_sums"] is True and loaded.settings["kernel_sums"] is True
    for layer in LAYERS:
        assert isinstance(stats[layer].moments, KernelMoments)
        assert isinstance(loaded[layer].moments, KernelMoments)
        assert loaded[layer].moments == stats[layer].moments
        kept = debiased_cka(loaded[layer].moments, nets=("seed0", "seed1")).value
        fresh = debiased_cka(stats[layer].moments, nets=("seed0", "seed1")).value
        assert kept == pytest.approx(fresh, abs=1e-12)
        assert np.isfinite(kept)


def test_pooled_moments_round_trip_and_give_a_layer_by_layer_cka(collected):
    out, stats = collected
    loaded = Statistics.load(out)
    manifest_pooled = (out / "pooled.moments.safetensors").is_file()
    assert manifest_pooled and loaded.pooled_layers == LAYERS == stats.pooled_layers
    assert isinstance(loaded.pooled, KernelMoments) and loaded.pooled == stats.pooled
    assert loaded.pooled.count == 60  # one spatially averaged sample per input
    self_cka = layer_by_layer_cka(loaded, "seed0", "seed0")
    assert self_cka.rows == self_cka.cols == LAYERS
    np.testing.assert_allclose(np.diag(self_cka.values), 1.0, atol=1e-9)
    np.testing.assert_allclose(self_cka.values, self_cka.values.T, atol=1e-12)
    cross = layer_by_layer_cka(loaded, "seed0", "seed1", debiased=True)
    np.testing.assert_allclose(
        cross.values, layer_by_layer_cka(stats, "seed0", "seed1", debiased=True).values, atol=1e-12
    )
    # fc6 is a vector layer: its pooled block is the layer's own units, so the entry is the
    # layer's CKA
    i = LAYERS.index("fc6")
    direct = linear_cka(stats["fc6"].moments, nets=("seed0", "seed1")).value
    assert layer_by_layer_cka(loaded, "seed0", "seed1").values[i, i] == pytest.approx(
        direct, abs=1e-9
    )
    with pytest.raises(ValueError, match="No net 'seed7'"):
        layer_by_layer_cka(loaded, "seed0", "seed7")


def test_plain_statistics_still_load_and_are_reused(zoo, tmp_path):
    ds = load_dataset("digits")
    images, _ = ds.split("test")
    plain = collect(load_zoo(zoo).models(), images[:30], ["fc6", "fc7"], progress=False)
    plain.save(tmp_path / "old")
    loaded = Statistics.load(tmp_path / "old")
    assert type(loaded["fc6"].moments) is Moments and loaded.pooled is None
    assert loaded["fc6"].moments == plain["fc6"].moments
    with pytest.raises(ConvergentError, match="no pooled all-layer moments"):
        layer_by_layer_cka(loaded, "seed0", "seed1")
    # a directory collected without the extras is reused, not refused
    first = collect_run(
        tmp_path / "s", zoo=zoo, layers=["fc7"], max_inputs=20, kernel_sums=False, pooled=False
    )
    again = collect_run(tmp_path / "s", zoo=zoo, layers=["fc7"], max_inputs=20)
    assert type(again["fc7"].moments) is Moments and again.pooled is None
    assert again["fc7"].moments == first["fc7"].moments


def test_cli_collect_no_pooled_leaves_the_pooled_moments_out(zoo, tmp_path):
    out = tmp_path / "stats"
    args = ["collect", str(zoo), "--layers", "fc6", "--max-inputs", "20", "--no-pooled"]
    assert main([*args, "--out", str(out)]) == 0
    stats = Statistics.load(out)
    assert stats.pooled is None and not (out / "pooled.moments.safetensors").exists()
    assert stats.settings["pooled"] is False
    assert isinstance(stats["fc6"].moments, KernelMoments)
