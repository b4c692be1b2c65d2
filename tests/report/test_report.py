"""`convergent demo` and `convergent report`: stages chained, resumable, a self-contained report."""

from __future__ import annotations

import csv
import json
import re

import pytest

from convergent import ConvergentError
from convergent.cli import main
from convergent.pipeline import run_demo
from convergent.report import build_report
from convergent.results import load_results, summary_rows
from tests.helpers.tiny import TINY_DEMO as TINY

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


def test_demo_runs_every_stage_and_logs_them(tiny_demo):
    out, done, logs = tiny_demo
    assert [line[:5] for line in logs] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for stage in ("zoo/manifest.json", "stats/manifest.json", "results/results.json"):
        assert (out / stage).is_file()
    # the training split's statistics, where one-to-many prediction is fitted
    assert (out / "stats" / "fit" / "manifest.json").is_file()
    assert done["report"] == out / "report" / "report.html"
    assert list(done["results"].layers) == LAYERS
    assert done["results"].run["fit"] == {
        "fitted_on": "train",
        "scored_on": "test",
        "held_out": True,
        "fit_inputs": 300,  # the demo trained on a 300-image subset: the fit split is that subset
        "scored_inputs": 450,
    }
    assert set(done["seconds"]) == {"train", "collect", "analyze", "report"}


def test_report_is_self_contained_with_one_row_per_layer(tiny_demo):
    out, done, _ = tiny_demo
    page = done["report"].read_text()
    # nothing fetched from elsewhere: every image is embedded, no script or stylesheet links
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page and "<link" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    table = re.search(r'<table id="summary-table">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    assert table.count("<tr>") == len(LAYERS)
    for layer in LAYERS:
        assert f'id="layer-{layer}"' in page
    # every section's figure is there, as PNG (SVG only on request: see test_formats)
    figures = out / "report" / "figures"
    for kind in ("matrices", "curves", "patches", "sparse", "clusters", "means"):
        assert (figures / f"conv1_{kind}.png").stat().st_size > 1000
        assert not (figures / f"conv1_{kind}.svg").exists()
    assert (figures / "trends.png").is_file()
    # the explanations a reader needs
    assert "within-net baseline" in page and "input-gradient support" in page
    # nets with their seeds and test accuracy
    assert page.count("seed0") >= 1 and "test accuracy" in page


def test_summary_files_match_the_results(tiny_demo):
    out, done, _ = tiny_demo
    rows = json.loads((out / "report" / "summary.json").read_text())
    assert rows == json.loads(json.dumps(summary_rows(done["results"])))
    with open(out / "report" / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["layer"] for r in table] == LAYERS
    assert float(table[0]["bipartite"]) == pytest.approx(rows[0]["bipartite"])


def test_rerun_redoes_nothing_and_an_interrupted_analysis_redoes_only_what_is_missing(tiny_demo):
    out, done, _ = tiny_demo
    stamps = {p: p.stat().st_mtime_ns for p in (out / "zoo").glob("*.safetensors")}
    again = run_demo(out, progress=False, log=lambda _: None, **TINY)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no net retrained
    assert summary_rows(again["results"]) == summary_rows(done["results"])
    # simulate an interruption during fc7: the manifest, results.json and fc7's layer record
    # never written
    (out / "results" / "manifest.json").unlink()
    (out / "results" / "results.json").unlink()
    (out / "results" / "partial" / "fc7.json").unlink()
    kept = out / "results" / "partial" / "conv1.json"
    before = kept.stat().st_mtime_ns
    third = run_demo(out, progress=False, log=lambda _: None, **TINY)
    assert kept.stat().st_mtime_ns == before  # finished layers were not redone
    assert (out / "results" / "partial" / "fc7.json").is_file()
    assert summary_rows(third["results"]) == summary_rows(done["results"])
    assert summary_rows(load_results(out / "results")) == summary_rows(done["results"])


def test_report_command_picks_a_pair_and_rejects_unknown_ones(tiny_demo, tmp_path, capsys):
    out, _, _ = tiny_demo
    assert main(["report", str(out / "results"), "--out", str(tmp_path / "r"), "--no-patches"]) == 0
    assert "report:" in capsys.readouterr().out
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Top-input patches left out: not asked for" in page
    with pytest.raises(ValueError, match="'pair' parameter must be one of the analysed pairs"):
        build_report(out / "results", tmp_path / "r2", pair="seed0~seed9")
    with pytest.raises(ConvergentError, match="holds no results.json"):
        build_report(tmp_path, tmp_path / "r3")


def test_demo_needs_two_nets_and_keeps_other_runs(tiny_demo, tmp_path):
    with pytest.raises(ValueError, match="'nets' parameter of demo must be an integer >= 2"):
        run_demo(tmp_path / "x", nets=1, progress=False, log=lambda _: None)
    out, _, _ = tiny_demo
    # other settings in the same directory: refused, nothing overwritten
    with pytest.raises(
        ConvergentError, match="trained with different settings.*nothing was changed"
    ):
        run_demo(out, progress=False, log=lambda _: None, **{**TINY, "epochs": 3})


def test_report_shows_the_interpolation_barrier_when_there_is_one(tiny_demo, tmp_path):
    from convergent.align._run import interpolate_run, merge_run

    out, _, _ = tiny_demo
    interp = tmp_path / "interp"
    interpolate_run(
        out / "zoo" / "seed0",
        out / "zoo" / "seed1",
        interp,
        align="activation",
        repair_mode="repair",
        points=5,
        train_inputs=200,
        progress=False,
    )
    page = build_report(
        out / "results", tmp_path / "r", interpolation=interp, patches=False
    ).read_text()
    table = re.search(r'<table id="interpolation-table">.*?<tbody>(.*?)</tbody>', page, re.S)
    # naive, aligned, aligned + repair; test and train each
    assert table is not None and table.group(1).count("<tr>") == 6
    assert "max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))" in page
    assert page.count("data:image/png;base64,") >= 2
    assert 'id="merge-table"' not in page  # no merge yet
    merge_run(
        out / "zoo",
        interp / "merged.safetensors",
        method="activation",
        repair_mode="repair",
        train_inputs=200,
        progress=False,
    )
    page = build_report(
        out / "results", tmp_path / "r", interpolation=interp, patches=False
    ).read_text()
    merge = re.search(r'<table id="merge-table">.*?<tbody>(.*?)</tbody>', page, re.S)
    # seed0, seed1, their naive average, the merged net, the ensemble
    assert merge is not None and merge.group(1).count("<tr>") == 5
    assert 'href="#merge"' in page or 'id="merge"' in page
    with pytest.raises(ConvergentError, match="holds no interpolation.json"):
        build_report(out / "results", tmp_path / "r2", interpolation=tmp_path, patches=False)


def test_demo_command_prints_the_layer_table_timings_and_report_path(tiny_demo, capsys):
    out, done, _ = tiny_demo
    argv = ["demo", "--out", str(out), "--nets", "2", "--epochs", "2", "--subset", "300"]
    assert main([*argv, "--set", "width=0.25"]) == 0  # everything reused but the report
    printed = capsys.readouterr().out
    assert "[1/4] train 2 x convnet on digits (2 epochs)" in printed
    table = printed[printed.index("layer  units") :]
    assert all(f"\n{layer} " in table for layer in LAYERS)
    assert "time: train" in printed and f"report: {out / 'report' / 'report.html'}" in printed


def test_layer_figures_drawn_by_worker_processes_are_the_same_bytes(tiny_demo, tmp_path):
    out, _, _ = tiny_demo
    pages = {}
    for workers in (1, 2):
        report = build_report(
            out / "results", tmp_path / f"w{workers}", workers=workers, patches=False
        )
        figures = sorted((report.parent / "figures").iterdir())
        pages[workers] = (report.read_bytes(), [(f.name, f.read_bytes()) for f in figures])
    assert pages[1][0] == pages[2][0]
    assert pages[1][1] == pages[2][1] and len(pages[1][1]) > len(
        load_results(out / "results").layers
    )
    with pytest.raises(ValueError, match="'workers' parameter must be an integer >= 1"):
        build_report(out / "results", tmp_path / "w0", workers=0)
