"""`convergent analyze` end to end on a tiny real zoo: results files, summary, MI, held-out, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convergent import ConvergentError
from convergent._io import load_arrays
from convergent.analysis import AnalysisSettings, analyze_layer
from convergent.cli import main
from convergent.record import collect_run
from convergent.report import terminal_summary
from convergent.results import Results, analyze_run, encode, load_results, summary_rows
from tests.helpers.planted import FakeLayer, joint_moments, permuted_pair, sparse_mixing
from tests.helpers.tiny import tiny_zoo

SETTINGS = AnalysisSettings(n_penalties=6, clusters=(2, 4))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tiny_zoo(root / "zoo", seeds=(0, 1, 2), epochs=3, subset=300)
    collect_run(
        root / "stats",
        zoo=root / "zoo",
        layers=["conv1", "conv3", "fc7"],
        max_inputs=120,
        mi="first",
        mi_inputs=60,
        progress=False,
    )
    collect_run(
        root / "train-stats",
        zoo=root / "zoo",
        split="train",
        layers=["conv1", "conv3", "fc7"],
        max_inputs=120,
        progress=False,
    )
    return root


def test_analyze_writes_results_arrays_and_summary(run):
    out = run / "results"
    results = analyze_run(
        run / "stats",
        out,
        settings=SETTINGS,
        held_out=run / "train-stats",
        progress=False,
    )
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["settings"]["analysis"]["clusters"] == [2, 4]
    assert on_disk["convergent_version"] and on_disk["nets"] == ["seed0", "seed1", "seed2"]
    assert on_disk["pairs"] == ["seed0~seed1", "seed0~seed2", "seed1~seed2"]
    assert on_disk["layer_order"] == ["conv1", "conv3", "fc7"] == list(results.layers)
    conv1 = on_disk["layers"]["conv1"]
    pair = conv1["pairs"]["seed0~seed1"]
    assert {"one_to_one", "one_to_many", "many_to_many", "mutual_information"} <= set(pair)
    assert pair["mutual_information"] is not None  # MI histograms of the first pair were kept
    assert conv1["pairs"]["seed1~seed2"]["mutual_information"] is None
    assert 0 < pair["one_to_one"]["bipartite"] <= pair["one_to_one"]["semi"] <= 1
    typed = results.layers["conv1"]
    assert (
        len(typed.pairs) == 3 and typed.pairs["seed0~seed1"].one_to_many.held_out_full is not None
    )
    assert typed.samples == 120 * 64 and typed.units["seed0"] == 8
    # one summary row per layer, in CSV too
    assert [r["layer"] for r in summary_rows(results)] == ["conv1", "conv3", "fc7"]
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("layer,")
    arrays, meta = load_arrays(out / "arrays" / "conv1.safetensors")
    assert meta["layer"] == "conv1"
    assert arrays["pairs/seed0~seed1/one_to_one/bipartite_permutation"].shape == (8,)
    assert arrays["pairs/seed0~seed1/one_to_many/coef"].shape == (6, 8, 8)
    assert arrays["pairs/seed0~seed1/mutual_information/matrix"].shape == (8, 8)
    assert arrays["pairs/seed0~seed1/one_to_many/held_out_mean_error"].shape == (6,)
    # the patches behind the matched units' top inputs, for the report (8 units x 3 nets)
    assert set(arrays["patch_units"].tolist()) <= set(range(24))
    assert arrays["patch_images"].shape[1:] == (9, 16, 16)
    assert arrays["patch_images"].dtype == np.uint8
    table = terminal_summary(results)
    assert "conv3" in table and "bipartite" in table
    # the typed results read back equal to what was written
    back = load_results(out)
    assert back.pairs == results.pairs and list(back.layers) == list(results.layers)
    np.testing.assert_array_equal(
        back.layers["fc7"].pairs["seed0~seed2"].one_to_one.bipartite_partner,
        results.layers["fc7"].pairs["seed0~seed2"].one_to_one.bipartite_partner,
    )
    # no NaN anywhere: JSON was written with allow_nan=False
    # re-running with the same inputs reuses the results; other settings are refused
    again = analyze_run(
        run / "stats",
        out,
        settings=SETTINGS,
        held_out=run / "train-stats",
        progress=False,
    )
    assert again.seconds == on_disk["seconds"]
    with pytest.raises(ConvergentError, match="already holds results"):
        analyze_run(run / "stats", out, settings=AnalysisSettings(), progress=False)


def test_cli_analyze(run, tmp_path, capsys):
    assert (
        main(
            [
                "analyze",
                str(run / "stats"),
                "--out",
                str(tmp_path / "r"),
                "--layers",
                "conv3",
                "--clusters",
                "2",
                "--n-penalties",
                "5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "conv3" in text and "results:" in text
    assert main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "is not a statistics directory" in capsys.readouterr().err


def test_one_net_is_a_clear_error_not_nan():
    a, _, _ = permuted_pair(d=6)
    layer = FakeLayer("fc1", joint_moments(a))
    with pytest.raises(ConvergentError, match="comparing needs at least 2"):
        analyze_layer(layer, SETTINGS)


def test_constant_layer_and_dead_units_give_finite_results():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(500, 6)), 0)
    a[:, 0] = 0.0
    b = np.zeros((500, 6))  # a wholly constant (dead) layer in net B
    layer = FakeLayer("fc1", joint_moments(a, b))
    result = analyze_layer(layer, SETTINGS)
    pair = result.pairs["net0~net1"]
    assert pair.one_to_one.dead_b == 6 and pair.one_to_one.dead_a == 1
    assert pair.one_to_one.bipartite == 0.0 and pair.one_to_one.agreement == 0.0
    data, arrays = encode(result)
    json.dumps(data, allow_nan=False)
    assert all(np.isfinite(v).all() for v in arrays.values())


def test_held_out_of_other_nets_is_refused(run, tmp_path):
    collect_run(
        tmp_path / "other", zoo=run / "zoo", layers=["conv1"], max_inputs=20, progress=False
    )
    with pytest.raises(ValueError, match=r"held-out statistics lack layers \['conv3', 'fc7'\]"):
        analyze_run(
            run / "stats",
            tmp_path / "r",
            settings=SETTINGS,
            held_out=tmp_path / "other",
            progress=False,
        )
    manifest = json.loads((tmp_path / "other" / "manifest.json").read_text())
    manifest["nets"] = ["x", "y", "z"]
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"held-out statistics are of nets \['x', 'y', 'z'\]"):
        analyze_run(
            run / "stats",
            tmp_path / "r",
            settings=SETTINGS,
            held_out=tmp_path / "other",
            layers=["conv1"],
            progress=False,
        )


def test_layer_records_carry_the_refit_headline_with_fit_and_held_out_variants():
    a, b, _ = sparse_mixing(n=2000, d_a=10, d_b=6, seed=2)
    fit = FakeLayer("fc1", joint_moments(a[:1500], b[:1500]))
    held = FakeLayer("fc1", joint_moments(a[1500:], b[1500:]))
    settings = AnalysisSettings(n_penalties=8, clusters=(2,), refit_k=(1, 3))
    result = analyze_layer(fit, settings, held_out=held)
    sparse = result.pairs["net0~net1"].one_to_many
    assert [r.k for r in sparse.refit] == [1, 3]
    three = sparse.refit[1]
    assert three.scored == 6 and "fit split" in sparse.refit_convention
    assert three.mean <= sparse.one_to_one
    assert three.held_out_median >= 0 and sparse.scoring["scored_held_out"] == 6
    assert sparse.scoring["min_variance_fraction"] == settings.min_variance_fraction
    assert sparse.refit_held_out_error.shape == (2, 6) and sparse.refit_size.shape == (2, 6)
    results = Results(
        nets=["net0", "net1"],
        pairs=["net0~net1"],
        layers={"fc1": result},
        settings={"analysis": settings.to_dict()},
        run={"split": "test", "fit": {"fitted_on": "train", "scored_on": "test", "held_out": True}},
    )
    row = summary_rows(results)[0]
    assert row["refit_3"] == pytest.approx(three.held_out_mean)  # held out: the scored split
    assert row["refit_3_median"] == pytest.approx(three.held_out_median)
    assert row["refit_1_reached"] == 1.0 and row["scored"] == 6
    assert row["one_to_one"] == pytest.approx(sparse.held_out_one_to_one)
    assert settings.to_dict()["refit_k"] == [1, 3]
    data, _ = encode(result)
    json.dumps(data, allow_nan=False)
