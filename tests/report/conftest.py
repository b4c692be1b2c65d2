"""A tiny demo run shared by the report tests (narrow convnet, a digits subset, two nets)."""

from __future__ import annotations

import pytest

from convergent.pipeline import run_demo

TINY = {"nets": 2, "epochs": 2, "subset": 300, "model_kwargs": {"width": 0.25}}


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    logs: list[str] = []
    done = run_demo(out, progress=False, log=logs.append, **TINY)
    return out, done, logs
