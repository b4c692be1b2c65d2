"""The results folder: typed results read back exactly, the one table of columns honours the
settings everywhere, run folders are relocatable, files get the user's permissions, and a failed
write ends with one line and leaves nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import numpy as np
import pytest

from convergent import ConvergentError
from convergent._errors import CorruptFileError
from convergent._io import WriteError, atomic_write_bytes
from convergent.analysis import AnalysisSettings, LayerAnalysis, analyze_layer
from convergent.cli import main
from convergent.report import build_report, terminal_summary
from convergent.results import (
    Results,
    analyze_run,
    decode,
    encode,
    load_results,
    summary_columns,
    summary_csv,
    summary_rows,
)
from convergent.stats import Statistics
from tests.helpers.planted import FakeLayer, joint_moments, permuted_pair


def _planted_layer(name: str = "fc1", seed: int = 0) -> LayerAnalysis:
    a, b, _ = permuted_pair(n=600, d=6, noise=0.6, seed=seed)
    c = a @ np.random.default_rng(seed).normal(size=(6, 6))
    layer = FakeLayer(name, joint_moments(a, b, c))
    return analyze_layer(
        layer, AnalysisSettings(thresholds=(0.3, 0.8), n_penalties=5, clusters=(2,))
    )


def _results(layers: dict[str, LayerAnalysis], settings: AnalysisSettings) -> Results:
    first = next(iter(layers.values()))
    return Results(
        nets=list(first.units),
        pairs=list(first.pairs),
        layers=layers,
        settings={"analysis": settings.to_dict(), "similarity": {}},
        run={"split": "test", "num_inputs": 600, "fit": {"fitted_on": "test", "scored_on": "test"}},
    )


def test_typed_results_survive_the_codec_exactly():
    layer = _planted_layer()
    data, arrays = encode(layer)
    json.dumps(data, allow_nan=False)
    back = decode(LayerAnalysis, json.loads(json.dumps(data)), arrays)
    assert back.name == layer.name and back.units == layer.units
    assert list(back.pairs) == list(layer.pairs) == ["net0~net1", "net0~net2", "net1~net2"]
    for key, pair in layer.pairs.items():
        got = back.pairs[key]
        assert got.one_to_one.above == pair.one_to_one.above
        np.testing.assert_array_equal(
            got.one_to_one.bipartite_partner, pair.one_to_one.bipartite_partner
        )
        np.testing.assert_array_equal(got.one_to_many.coef, pair.one_to_many.coef)
        assert [c.n_clusters for c in got.many_to_many] == [2]
        np.testing.assert_array_equal(got.many_to_many[0].labels, pair.many_to_many[0].labels)
        assert got.one_to_many.at_k == pair.one_to_many.at_k
        assert got.similarity == pair.similarity
    np.testing.assert_array_equal(back.correlation, layer.correlation)
    assert set(back.unit_means) == {"net0", "net1", "net2"}


def test_thresholds_are_honoured_in_every_table():
    settings = AnalysisSettings(thresholds=(0.3, 0.8), n_penalties=5, clusters=(2,))
    layer = _planted_layer()
    results = _results({"fc1": layer}, settings)
    keys = [c.key for c in summary_columns(results)]
    assert "above_0.3" in keys and "above_0.8" in keys and "above_0.5" not in keys
    row = summary_rows(results)[0]
    # the share of live A units whose bipartite partner correlates at least t, mean over pairs
    for t in (0.3, 0.8):
        want = np.mean(
            [
                (p.one_to_one.bipartite_score[p.one_to_one.bipartite_partner >= 0] >= t).mean()
                for p in layer.pairs.values()
            ]
        )
        assert row[f"above_{t:g}"] == pytest.approx(want)
    assert row["above_0.3"] > 0  # planted matches are found at the lower threshold
    table = terminal_summary(results)
    assert ">0.3" in table and ">0.8" in table and ">0.5" not in table
    header = summary_csv(results).decode().splitlines()[0].split(",")
    assert "above_0.3" in header and "above_0.8" in header


def test_the_settings_reach_the_results_through_analyze(tiny_demo, tmp_path):
    out, _, _ = tiny_demo
    settings = AnalysisSettings(thresholds=(0.3, 0.8), n_penalties=5, clusters=(2,))
    results = analyze_run(out / "stats", tmp_path / "r", settings=settings, layers=["fc7"])
    assert "above_0.3" in summary_rows(results)[0] and "above_0.5" not in summary_rows(results)[0]
    page = build_report(tmp_path / "r", tmp_path / "report", patches=False).read_text()
    assert "&gt;0.3" in page and "&gt;0.8" in page and "&gt;0.5</th>" not in page


def test_a_copied_run_folder_is_finished_and_gives_the_same_report(tiny_demo, tmp_path):
    out, done, _ = tiny_demo
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, copy)
    manifest = copy / "results" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    # analyze accepts the copy as finished: nothing is recomputed (paths are relative, the reuse
    # rule compares checksums)
    again = analyze_run(copy / "stats", copy / "results", progress=False)
    assert manifest.stat().st_mtime_ns == before
    assert summary_rows(again) == summary_rows(done["results"])
    inputs = json.loads(manifest.read_text())["inputs"]
    assert inputs["stats"] == "../stats" and inputs["other"] == "../stats/fit"
    # no absolute path anywhere in what was written
    for path in [*copy.rglob("*.json")]:
        assert str(out) not in path.read_text(), path
    report = build_report(copy / "results", copy / "report", progress=False)
    assert report.read_bytes() == (out / "report" / "report.html").read_bytes()
    shutil.rmtree(copy / "stats")  # the report reads results only
    rebuilt = build_report(copy / "results", tmp_path / "again", progress=False)
    assert rebuilt.read_bytes() == report.read_bytes()


def test_files_get_the_users_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("where", "code", "cause"),
    [("replace", errno.EROFS, "Read-only file system"), ("fsync", errno.ENOSPC, "No space left")],
)
def test_a_failed_write_is_one_line_and_leaves_no_partial_file(
    tiny_demo, tmp_path, monkeypatch, capsys, where, code, cause
):
    out, _, _ = tiny_demo

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(WriteError, match=f"cannot write .*{cause}"):
        atomic_write_bytes(tmp_path / "x" / "f.json", b"{}")
    assert list((tmp_path / "x").iterdir()) == []
    target = tmp_path / "stats"
    code_ = main(
        ["collect", str(out / "zoo"), "--layers", "fc7", "--max-inputs", "20", "--out", str(target)]
    )
    err = capsys.readouterr().err
    assert code_ == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write" in err and cause in err
    leftovers = [p for p in target.rglob("*") if p.is_file()] if target.exists() else []
    assert not any(p.name.endswith(".tmp") for p in leftovers)
    assert not (target / "manifest.json").exists()


def test_results_folders_refuse_what_they_cannot_read(tmp_path, tiny_demo):
    out, _, _ = tiny_demo
    with pytest.raises(ConvergentError, match="is not a results directory"):
        load_results(tmp_path)
    copy = tmp_path / "r"
    shutil.copytree(out / "results", copy)
    arrays = copy / "arrays" / "fc7.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(ConvergentError, match="changed or truncated"):
        load_results(copy)


@pytest.mark.parametrize(
    ("folder", "loader", "noun", "rerun"),
    [
        ("results", load_results, "results", "convergent analyze"),
        ("stats", Statistics.load, "statistics", "convergent collect"),
    ],
)
def test_folders_of_an_older_format_are_refused_naming_both_versions(
    tmp_path, tiny_demo, folder, loader, noun, rerun
):
    out, _, _ = tiny_demo
    copy = tmp_path / folder
    shutil.copytree(out / folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    current = manifest["format_version"]
    manifest["format_version"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CorruptFileError,
        match=rf"holds {noun} of format 1 .*reads format {current}\. Re-run `{rerun}`",
    ):
        loader(copy)
