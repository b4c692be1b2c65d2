"""`convergent compare A B`: one pair of nets next to a reference level (a zoo's seed-to-seed
variation, or the initialisation null), thresholds that fail a training pipeline, and what the
check cost."""

from __future__ import annotations

import json

import pytest

from convergent import ConvergentError
from convergent.cli import main
from convergent.pipeline import run_compare
from convergent.results import Threshold, load_comparison, summary_columns
from tests.helpers.tiny import tiny_zoo

LAYERS = ["conv3", "fc7"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    tiny_zoo(out, seeds=(0, 1, 2, 3), epochs=1, subset=120)
    return out


def test_a_pair_against_the_seed_to_seed_variation_of_a_zoo(zoo, tmp_path, capsys):
    argv = ["compare", str(zoo / "seed0"), str(zoo / "seed1"), "--baseline", str(zoo)]
    argv += ["--layers", ",".join(LAYERS), "--max-inputs", "90", "--out", str(tmp_path / "c")]
    assert main([*argv, "--fail-under", "*:cka=0.0,fc7:bipartite=-1"]) == 0
    printed = capsys.readouterr().out
    assert "all 2 threshold(s) pass" in printed and "time: load" in printed and "collect" in printed
    comparison = load_comparison(tmp_path / "c")
    assert comparison.pair == "seed0~seed1" and comparison.reference_kind == "zoo"
    # A and B are in the baseline zoo too: they are not their own reference
    assert comparison.reference_pairs == ["ref.seed2~ref.seed3"]
    assert set(comparison.seconds) >= {"load", "collect", "analyze", "report", "total"}
    fc7 = comparison.layers["fc7"]["cka"]
    one_ref = fc7.reference_min == fc7.reference_max == fc7.reference_mean
    assert one_ref and fc7.reference_std == 0.0
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert data["format"] == "convergent-compare" and data["failed"] == []
    page = (tmp_path / "c" / "report" / "report.html").read_text()
    assert 'id="comparison"' in page and 'href="#comparison"' in page
    assert 'id="comparison-table"' in page
    # every per-pair column is compared
    keys = {c.key for c in summary_columns(run_compare_results(tmp_path / "c")) if c.per_pair}
    assert set(comparison.layers["conv3"]) == keys


def run_compare_results(path):
    from convergent.results import load_results

    return load_results(path / "results")


def test_thresholds_fail_the_check_with_a_nonzero_status(zoo, tmp_path, capsys):
    argv = ["compare", str(zoo / "seed0"), str(zoo / "seed1"), "--baseline", str(zoo)]
    argv += ["--layers", "fc7", "--max-inputs", "60", "--no-report", "--out", str(tmp_path / "c")]
    assert main([*argv, "--fail-under", "fc7:cka=1.5,fc7:one_to_one=-0.5"]) == 1
    err = capsys.readouterr().err
    assert "FAILED fc7: cka = " in err and "is below 1.5" in err
    assert "FAILED fc7: one_to_one = " in err and "is above -0.5" in err  # an error: fails above
    assert not (tmp_path / "c" / "report").exists()
    assert main([*argv, "--fail-under", "fc7:cka"]) == 2
    assert "A threshold is LAYER:METRIC=VALUE" in capsys.readouterr().err
    assert main([*argv, "--fail-under", "fc7:nope=1"]) == 2
    assert "Unknown metric 'nope'" in capsys.readouterr().err
    assert main([*argv, "--fail-under", "fc9:cka=1"]) == 2
    assert "Unknown layer 'fc9'" in capsys.readouterr().err


def test_without_a_baseline_the_reference_is_the_initialisation_null(zoo, tmp_path):
    done = run_compare(
        zoo / "seed0.safetensors",  # a checkpoint file: its architecture from its metadata
        zoo / "seed2",
        tmp_path / "c",
        layers=["fc7"],
        max_inputs=60,
        report=False,
        log=lambda _: None,
    )
    comparison = done["comparison"]
    assert comparison.reference_kind == "initialisation"
    assert comparison.reference_pairs == ["init.0~init.1"]
    layer = done["results"].layers["fc7"]
    assert set(layer.pairs) == {"seed0~seed2", "init.0~init.1"}
    assert comparison.layers["fc7"]["cka"].value == pytest.approx(
        layer.pairs["seed0~seed2"].similarity["cka"]
    )


def test_a_baseline_without_two_other_nets_is_refused(zoo, tmp_path):
    small = tmp_path / "small"
    tiny_zoo(small, seeds=(0, 1), epochs=1, subset=120)
    with pytest.raises(ConvergentError, match="needs at least 2"):
        run_compare(
            small / "seed0", small / "seed1", tmp_path / "c", baseline=small, log=lambda _: None
        )
    assert Threshold.parse(" fc7:cka=0.9, *:bipartite=0.5 ") == [
        Threshold("fc7", "cka", 0.9),
        Threshold("*", "bipartite", 0.5),
    ]
    with pytest.raises(ValueError, match="must be a number"):
        Threshold.parse("fc7:cka=high")


def test_compare_takes_the_collection_options_of_collect(zoo, tmp_path):
    out = tmp_path / "c"
    argv = ["compare", str(zoo / "seed0"), str(zoo / "seed1"), "--layers", "fc7"]
    argv += ["--max-inputs", "40", "--precision", "float32", "--batch-size", "16"]
    assert main([*argv, "--no-report", "--out", str(out)]) == 0
    settings = json.loads((out / "stats" / "manifest.json").read_text())["settings"]
    assert settings["exact"] is False and settings["batch_size"] == 16
