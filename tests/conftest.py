"""Shared test settings and fixtures.

- deterministic, single-threaded torch so the suite behaves on 2 shared cores;
- ``tiny_demo``: one tiny run of the whole pipeline (zoo -> stats -> results -> report), made once
  per session and shared by every test that needs real folders on disk (tests must not change it:
  copy it first).
"""

from __future__ import annotations

import os

os.environ.setdefault("CONVERGENT_NO_PROGRESS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers.tiny import TINY_DEMO  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """(run folder, what run_demo returned, its log lines) of a 2-net tiny demo."""
    from convergent.pipeline import run_demo

    out = tmp_path_factory.mktemp("demo") / "run"
    logs: list[str] = []
    done = run_demo(out, progress=False, log=logs.append, **TINY_DEMO)
    return out, done, logs
