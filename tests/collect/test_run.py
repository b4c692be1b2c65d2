"""`collect_run` keeps what later stages need: each net's accuracy on exactly the inputs measured
(with the preprocessing it was given), mutual-information histograms whatever the nets came from,
and the fit split; and analyze refuses statistics of other nets that share names."""

from __future__ import annotations

import os

import pytest
import torch

from convergent import ConvergentError
from convergent.collect import collect_run
from convergent.data import load_dataset, pixels, preprocessed
from convergent.results import analyze_run
from convergent.zoo import evaluate, load_zoo
from tests.helpers.tiny import tiny_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    tiny_zoo(out, epochs=2, subset=300)
    return out


def test_scores_are_each_nets_accuracy_on_the_inputs_measured(zoo, tmp_path):
    stats = collect_run(tmp_path / "s", zoo=zoo, layers=["fc7"], progress=False)
    # the zoo was trained on the first 300 images: its inputs are normalised with their statistics
    images, labels = load_dataset("digits", subset=300).split("test")
    for name, model in load_zoo(zoo).models().items():
        loss, acc = evaluate(model, images, labels)
        assert stats.scores[name].accuracy == pytest.approx(acc)
        assert stats.scores[name].loss == pytest.approx(loss, rel=1e-6)
        net = next(n for n in stats.info["nets"] if n["name"] == name)
        assert net["scores"]["accuracy"] == pytest.approx(acc)
        # the source is recorded relative to the statistics directory
        where = os.path.relpath(zoo / f"{name}.safetensors", tmp_path / "s")
        assert net["source"]["checkpoint"] == where and not where.startswith("/")


def test_preprocessing_is_chosen_recorded_and_checked(zoo, tmp_path):
    ds = load_dataset("digits")
    raw = pixels(ds, "test")
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1
    torch.testing.assert_close(preprocessed(ds, "test", "none"), raw)
    torch.testing.assert_close(preprocessed(ds, "test"), ds.split("test")[0])
    spec = "tests.helpers.preprocessing:centred"
    torch.testing.assert_close(preprocessed(ds, "test", spec), raw - 0.5)
    stats = collect_run(
        tmp_path / "s",
        arch="convnet",
        model_kwargs={"width": 0.25},
        checkpoints=[zoo / "seed0.safetensors", zoo / "seed1.safetensors"],
        layers=["fc7"],
        preprocessing="none",
        progress=False,
    )
    assert stats.info["preprocessing"]["name"] == "none"
    dataset_way = collect_run(tmp_path / "d", zoo=zoo, layers=["fc7"], progress=False)
    # the nets were trained on the dataset's normalisation: raw pixels are not what they expect
    assert stats.scores["seed0"].accuracy != dataset_way.scores["seed0"].accuracy
    with pytest.raises(ValueError, match="must return a float tensor with one row per image"):
        preprocessed(ds, "test", "tests.helpers.preprocessing:one_row")
    with pytest.raises(TypeError, match="names a int, not a function"):
        preprocessed(ds, "test", "tests.helpers.preprocessing:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match="'preprocessing' parameter must be one of"):
        preprocessed(ds, "test", "standardise")
    with pytest.raises(ConvergentError, match="Could not import module 'nowhere'"):
        preprocessed(ds, "test", "nowhere:f")


def test_mutual_information_works_from_checkpoint_statistics(zoo, tmp_path):
    stats_dir = tmp_path / "s"
    collect_run(
        stats_dir,
        arch="convnet",
        model_kwargs={"width": 0.25},
        checkpoints=[zoo / "seed0.safetensors", zoo / "seed1.safetensors"],
        layers=["conv2", "fc7"],
        mi="first",
        mi_inputs=80,
        progress=False,
    )
    results = analyze_run(stats_dir, tmp_path / "r", progress=False)
    for layer in ("conv2", "fc7"):
        info = results.layers[layer].pairs["seed0~seed1"].mutual_information
        assert info is not None and info.samples == 80 * results.layers[layer].samples // 450
        assert 0 < info.bipartite <= info.semi


def test_statistics_of_other_nets_with_the_same_names_are_refused(zoo, tmp_path):
    other = tmp_path / "other-zoo"
    tiny_zoo(other, seeds=(5, 6), epochs=1, subset=100)
    for path in other.glob("seed*.safetensors"):  # same names as the first zoo's nets
        path.rename(path.with_name(path.name.replace("seed5", "seed0").replace("seed6", "seed1")))
    collect_run(tmp_path / "a", zoo=zoo, layers=["fc7"], progress=False)
    collect_run(
        tmp_path / "b",
        arch="convnet",
        model_kwargs={"width": 0.25},
        checkpoints=sorted(other.glob("seed*.safetensors")),
        layers=["fc7"],
        split="train",
        max_inputs=100,
        progress=False,
    )
    with pytest.raises(ConvergentError, match=r"different nets that share names: seed0 is"):
        analyze_run(tmp_path / "a", tmp_path / "r", fit=tmp_path / "b", progress=False)


def test_fit_split_must_be_the_other_split(zoo, tmp_path):
    with pytest.raises(ValueError, match="'fit_split' parameter must be the other split"):
        collect_run(tmp_path / "s", zoo=zoo, split="test", fit_split="test")
    with pytest.raises(ValueError, match="'mi' parameter must be one of"):
        collect_run(tmp_path / "s", zoo=zoo, mi="some")
