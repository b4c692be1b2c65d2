"""A tiny real zoo (paper-like convnet at width 0.25 on a digits subset) for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from convergent.data import load_dataset
from convergent.train import TrainConfig, Zoo, train_zoo


def tiny_zoo(out: Path, *, seeds=(0, 1), epochs: int = 1, subset: int = 100) -> Zoo:
    return train_zoo(
        out,
        arch="convnet",
        model_kwargs={"width": 0.25},
        dataset=load_dataset("digits", subset=subset),
        seeds=seeds,
        config=TrainConfig(epochs=epochs, batch_size=32),
        progress=False,
    )


#: The tiny demo every pipeline test shares (tests/conftest.py: ``tiny_demo``).
TINY_DEMO = {"nets": 2, "epochs": 2, "subset": 300, "model_kwargs": {"width": 0.25}}
