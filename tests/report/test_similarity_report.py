"""Whole-layer similarity through `analyze` and `report`: results.json, the summary rows and the
report's table and figures agree."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from convergent.results import summary_rows
from tests.report.test_report import LAYERS

SIMILARITY_COLUMNS = (
    "cka",
    "debiased_cka",
    "cca",
    "svcca",
    "pwcca",
    "procrustes",
    "procrustes_perm",
    "basis_alignment_ratio",
)


def _cells(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.findall(r"<td>(.*?)</td>", r, re.S) for r in rows]


def test_results_hold_every_layers_similarity_and_its_means_in_the_summary(tiny_demo):
    out, done, _ = tiny_demo
    results = json.loads((out / "results" / "results.json").read_text())
    rows = summary_rows(done["results"])
    for row in rows:
        sim = results["layers"][row["layer"]]["similarity"]
        assert sim["layer"] == row["layer"] and list(sim["pairs"]) == ["seed0~seed1"]
        for key in SIMILARITY_COLUMNS:
            assert row[key] == pytest.approx(sim["summary"][key], abs=1e-12), key
        # kernel sums were collected, so debiased CKA is there; CKA lies in [0, 1]
        assert row["debiased_cka"] is not None and 0 <= row["cka"] <= 1
    # the resumable partial record keeps it too
    partial = json.loads((out / "results" / "partial" / "conv1.json").read_text())
    assert partial["layer"]["similarity"]["summary"]["cka"] == pytest.approx(rows[0]["cka"])


def test_layer_by_layer_cka_of_the_first_two_nets(tiny_demo):
    out, done, _ = tiny_demo
    lbl = done["results"].layer_by_layer
    assert lbl["nets"] == ["seed0", "seed1"]
    for key in ("cka", "debiased_cka"):
        assert lbl[key]["rows"] == lbl[key]["cols"] == LAYERS
        assert np.asarray(lbl[key]["values"]).shape == (len(LAYERS), len(LAYERS))
    values = np.asarray(lbl["cka"]["values"])
    assert ((values >= 0) & (values <= 1 + 1e-9)).all()
    # fc layers are vectors: pooled == collected, so the diagonal entry is the layer's own CKA
    i = LAYERS.index("fc7")
    assert values[i, i] == pytest.approx(summary_rows(done["results"])[i]["cka"], abs=1e-9)


def test_report_similarity_table_has_one_row_per_layer_equal_to_the_results(tiny_demo):
    out, done, _ = tiny_demo
    page = done["report"].read_text()
    assert '<h2 id="similarity">Whole-layer similarity</h2>' in page
    assert "rotation-invariant" in page or "rotated" in page
    cells = _cells(page, "similarity-table")
    assert [c[0] for c in cells] == LAYERS
    header = re.search(r'<table id="similarity-table"><thead><tr>(.*?)</tr>', page).group(1)
    labels = re.findall(r"<th>(.*?)</th>", header)
    assert labels[:4] == ["layer", "bipartite", "CKA", "debiased CKA"]
    keys = ["bipartite", "cka", "debiased_cka", "cca", "svcca", "pwcca", "procrustes"]
    keys += ["procrustes_perm", "basis_alignment_ratio"]
    for row, shown in zip(summary_rows(done["results"]), cells):
        for key, text in zip(keys, shown[1:]):
            assert float(text) == pytest.approx(row[key], abs=5e-4), (row["layer"], key)
    figures = out / "report" / "figures"
    for stem in ("similarity", "layer_cka"):
        assert (figures / f"{stem}.png").stat().st_size > 1000
