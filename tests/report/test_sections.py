"""The report's sections, each a function of the results, checked on small synthetic results:
escaping of names from files, captions computed from the data they describe, undefined values
said as such, navigation, the merge table, and figure formats."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from convergent.analysis import AnalysisSettings, analyze_layer
from convergent.report import render
from convergent.report._build import (
    _Figures,
    _matrices_caption,
    _pair_parts,
    build_report,
    interpolation_section,
    layer_section,
    merge_table,
    run_section,
    similarity_section,
    summary_section,
)
from convergent.results import Interpolation, Results
from tests.helpers.planted import FakeLayer, joint_moments, permuted_pair

EVIL = "<script>x</script>"


def _results(nets=(EVIL, "b")) -> Results:
    a, b, _ = permuted_pair(n=800, d=6, noise=0.5, seed=3)
    m = joint_moments(a, b)
    m.metadata["unit_ranges"] = {nets[0]: [0, 6], nets[1]: [6, 12]}
    layer = analyze_layer(FakeLayer("blk.1", m), AnalysisSettings(n_penalties=5, clusters=(2,)))
    return Results(
        nets=list(nets),
        pairs=list(layer.pairs),
        layers={"blk.1": layer},
        settings={"analysis": AnalysisSettings().to_dict(), "similarity": {}},
        run={
            "dataset": {"name": "planted", "source": "tests"},
            "split": "test",
            "num_inputs": 800,
            "nets": [
                {
                    "name": nets[0],
                    "arch": "mlp",
                    "source": {"kind": "checkpoint", "path": "../a.pt"},
                },
                {
                    "name": nets[1],
                    "arch": "mlp",
                    "source": {"kind": "checkpoint", "path": "../b.pt"},
                },
            ],
            "scores": {nets[0]: {"accuracy": 0.91}},
            "collect_settings": {"kernel_sums": False},
            "fit": {"fitted_on": "test", "scored_on": "test", "held_out": False},
        },
    )


def _draw(tmp_path):
    return _Figures(tmp_path / "figures", ("png",))


def test_names_from_files_appear_as_text(tmp_path):
    results = _results()
    context = {
        "title": "t",
        "pair": results.pairs[0],
        "version": "x",
        "source": "s",
        "formats": "png",
        "run": run_section(results, results.pairs[0]),
        "summary": summary_section(results, _draw(tmp_path)),
        "similarity": similarity_section(results, _draw(tmp_path)),
        "interpolation": None,
        "comparison": None,
        "layers": [
            layer_section(results.layers["blk.1"], results.pairs[0], results, _draw(tmp_path))
        ],
        "nav": [{"anchor": "layer-blk.1", "text": "blk.1"}],
    }
    page = render(context)
    assert EVIL not in page and "<script" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    # the spread of a value is markup the report makes itself, not escaped text
    assert "&lt;span" not in page


def test_captions_are_computed_from_the_data(tmp_path):
    results = _results(("a", "b"))
    layer = results.layers["blk.1"]
    p, ra, rb = _pair_parts(layer, "a~b")
    corr = np.asarray(layer.correlation, dtype=np.float64)
    block = np.abs(corr[slice(*ra), slice(*ra)])
    mean_within = block[~np.eye(6, dtype=bool)].mean()
    caption = _matrices_caption(corr, ra, rb, p)
    assert f"|r| = {mean_within:.2f}" in caption
    strong = int((p.one_to_one.bipartite_score >= 0.5).sum())
    assert f"{strong} of 6 one-to-one matched pairs reach" in caption
    section = layer_section(layer, "a~b", results, _draw(tmp_path))
    captions = [f["caption"] for f in section["figures"]]
    assert any(f"bipartite (mean {p.one_to_one.bipartite:.2f})" in c for c in captions)
    assert any(f"balance {p.many_to_many[-1].balance:.2f}" in c for c in captions)
    assert "Top-input patches left out: these statistics hold no input patches." in section["notes"]
    # a planted permutation with noise 0.5 is matched well: the sentence says how well
    assert f"bipartite r = {p.one_to_one.bipartite:.3f}" in section["summary"]


def test_undefined_debiased_cka_says_why(tmp_path):
    section = similarity_section(_results(("a", "b")), _draw(tmp_path))
    row = section["table"]["rows"][0]
    assert row[0] == "blk.1"
    assert row[3] == "undefined (the statistics were collected without kernel sums)"
    assert "0.000" not in row[3]


def test_run_section_shows_each_nets_source_architecture_and_accuracy():
    section = run_section(_results(("a", "b")), "a~b")
    rows = section["nets"]["rows"]
    assert rows[0][:3] == ["a", "mlp", "checkpoint: ../a.pt"]
    assert rows[0][-1] == "0.910" and rows[1][-1] == "\u2013"  # b was not scored
    facts = dict((k, v) for k, v in section["facts"]["rows"])
    assert "in-sample" in facts["one-to-many prediction"]


def test_interpolation_and_merge_sections(tmp_path):
    alphas = [0.0, 0.5, 1.0]
    curve = {
        "alphas": alphas,
        "curves": {"test": {"loss": [0.3, 0.9, 0.3], "accuracy": [0.9, 0.6, 0.9]}},
        "barriers": {"test": {"loss": 0.6, "accuracy": 0.3}},
        "matching_seconds": 1.5,
        "definitions": {"loss": "max L - line"},
    }
    data = Interpolation(
        endpoints={"a": {}, "b": {}},
        order=["naive"],
        curves={"naive": curve},
        definitions={"loss": "max L - line"},
        merge={
            "method": "activation",
            "reference": "seed0",
            "repair": "repair",
            "train_inputs": 100,
            "members": {
                "a": {
                    "train": {"loss": 0.1, "accuracy": 0.95},
                    "test": {"loss": 0.2, "accuracy": 0.9},
                }
            },
            "naive_average": {"test": {"loss": 2.0, "accuracy": 0.3}},
            "evaluation": {"test": {"loss": 0.5, "accuracy": 0.85}},
            "ensemble": {"test": {"loss": 0.15, "accuracy": 0.93}},
            "notes": ["the merged net is far below its members"],
        },
    )
    section = interpolation_section(data, _draw(tmp_path))
    assert section["table"]["rows"] == [["naive", "test", "0.600", "30.0", "1.5"]]
    assert "loss barrier = max L - line" in section["definitions"]
    rows = section["merge"]["table"]["rows"]
    assert [r[0] for r in rows] == ["a", "naive average", "merged", "ensemble"]
    assert rows[0][2:] == ["95.0", "90.0"] and rows[1][2:] == ["\u2013", "30.0"]
    assert "far below its members" in section["merge"]["text"]
    assert "activation matching of every net to seed0" in section["merge"]["text"]
    assert (
        merge_table({**data.merge, "naive_average": None, "ensemble": None})["table"]["rows"][-1][0]
        == "merged"
    )


def test_report_navigation_formats_and_pairs(tiny_demo, tmp_path):
    out, done, _ = tiny_demo
    page = build_report(
        out / "results", tmp_path / "r", formats=("png", "svg"), all_pairs=True, patches=False
    ).read_text()
    nav = re.search(r'<nav id="nav">(.*?)</nav>', page, re.S).group(1)
    anchors = re.findall(r'href="#([^"]+)"', nav)
    assert anchors[:3] == ["run", "summary", "similarity"]
    assert [a for a in anchors if a.startswith("layer-")] == [
        f"layer-{n}" for n in done["results"].layers
    ]
    for anchor in anchors:
        assert f'id="{anchor}"' in page
    assert (tmp_path / "r" / "figures" / "conv1_matrices.svg").is_file()
    with pytest.raises(ValueError, match="'formats' parameter must name formats among"):
        build_report(out / "results", tmp_path / "r2", formats=("gif",))


def test_layers_of_one_kind_over_depth_get_their_own_curves(tmp_path):
    from convergent.report._figures import block_kinds

    kinds = block_kinds(["embed", "block1", "block1.mlp.act", "block2", "block2.mlp.act", "head"])
    assert kinds == {
        "block*": [(1, "block1"), (2, "block2")],
        "block*.mlp.act": [(1, "block1.mlp.act"), (2, "block2.mlp.act")],
    }
    assert block_kinds(["conv1", "fc6"]) == {}
    base = _results(("a", "b"))
    layer = base.layers["blk.1"]
    names = ["block1", "block1.mlp.act", "block2", "block2.mlp.act"]
    results = Results(
        nets=base.nets,
        pairs=base.pairs,
        layers={n: dataclasses.replace(layer, name=n) for n in names},
        settings=base.settings,
        run=base.run,
    )
    section = summary_section(results, _draw(tmp_path))
    assert section["blocks"] is not None
    cka = layer.pairs["a~b"].similarity["cka"]
    assert (
        f"block*.mlp.act: bipartite {layer.pairs['a~b'].one_to_one.bipartite:.2f}, CKA {cka:.2f}"
        in (section["blocks"]["caption"])
    )
    assert summary_section(base, _draw(tmp_path))["blocks"] is None
