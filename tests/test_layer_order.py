"""Layers keep the model's forward order in every stage: statistics, results, the summary rows and
the report (a resnet, whose names would sort ``fc`` first, and a user model whose modules are
registered in another order than they run)."""

from __future__ import annotations

import re

import torch
from torch import nn

from convergent.collect import collect
from convergent.models import build_model, default_layers
from convergent.report import build_report
from convergent.results import analyze_run, load_results, summary_rows
from convergent.stats import Statistics


class Backwards(nn.Module):
    """Registered out, mid, stem; runs stem, mid, out."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(6, 3)
        self.mid = nn.Sequential(nn.Linear(8, 6), nn.Tanh())
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())

    def forward(self, x):
        return self.out(self.mid(self.stem(x)))


def _check(models, x, tmp_path, want):
    layers = default_layers(next(iter(models.values())), x[:2])
    assert layers == want
    stats = collect(models, x, progress=False)
    assert list(stats.layers) == want
    stats.save(tmp_path / "stats")
    assert list(Statistics.load(tmp_path / "stats").layers) == want
    results = analyze_run(tmp_path / "stats", tmp_path / "results", progress=False)
    assert list(results.layers) == want == list(load_results(tmp_path / "results").layers)
    assert [r["layer"] for r in summary_rows(results)] == want
    page = build_report(tmp_path / "results", tmp_path / "report", patches=False).read_text()
    table = re.search(r'<table id="summary-table">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    assert re.findall(r"<tr><td>([^<]+)</td>", table) == want


def test_a_resnet_keeps_its_forward_order(tmp_path):
    torch.manual_seed(0)
    models = {
        f"net{i}": build_model("resnet", in_channels=1, input_size=8, width=0.25) for i in range(2)
    }
    x = torch.randn(40, 1, 8, 8)
    layers = default_layers(models["net0"], x[:2])
    assert layers[0] == "stem" and layers[-1] == "fc" and layers != sorted(layers)
    _check(models, x, tmp_path, layers)


def test_a_user_model_keeps_its_forward_order(tmp_path):
    torch.manual_seed(0)
    models = {"a": Backwards(), "b": Backwards()}
    _check(models, torch.randn(60, 1, 4, 4), tmp_path, ["stem.2", "mid.1", "out"])
