"""Shared test settings: deterministic, single-threaded torch so the suite behaves on 2 shared cores."""

from __future__ import annotations

import os

os.environ.setdefault("CONVERGENT_NO_PROGRESS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
