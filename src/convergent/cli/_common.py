"""What every command shares: option groups as argparse parent parsers (so a flag is named and
documented the same way everywhere) and the parsing of their values."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from convergent._device import DEVICE_HELP
from convergent.collect import SPATIAL_MODES
from convergent.data import available_datasets
from convergent.models import parse_model_kwargs


def model_kwargs(pairs: Sequence[str] | None, arch: str | None = None) -> dict[str, Any]:
    """``--set width=0.5 --set depth=4`` -> ``{"width": 0.5, "depth": 4}``: values read as JSON,
    else as text, checked against the architecture's signature when it is known."""
    return parse_model_kwargs(pairs, arch)


def layer_list(text: str | None) -> list[str] | None:
    """``conv1,fc6`` -> ``["conv1", "fc6"]``; None when not given."""
    return [v for v in (text or "").split(",") if v] or None


def threads(args: argparse.Namespace) -> None:
    """Apply ``--threads``."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def data_options(*, default: str | None = "digits") -> argparse.ArgumentParser:
    p = _parent()
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=default,
        help=f"one of {', '.join(available_datasets())} (default: "
        + (f"{default})" if default else "the zoo's or the checkpoint's dataset)"),
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset's files (IDX, CIFAR-10 binary, images.npy); default: "
        "where the dataset is installed (Fashion-MNIST: Debian's dataset-fashion-mnist)",
    )
    return p


def model_options(*, default: str | None = "convnet") -> argparse.ArgumentParser:
    p = _parent()
    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        "--model",
        dest="arch",
        default=default,
        metavar="ARCH",
        help="architecture: convnet, mlp, resnet, vit, or your own as module:factory (module.py in "
        "the working directory or on PYTHONPATH) (default: "
        + (f"{default})" if default else "the zoo's, or the checkpoint's metadata)")
        + "; --model is the same flag",
    )
    g.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an argument of the architecture, e.g. --set width=0.5; repeatable; values are read "
        "as JSON (numbers, true/false, null, [lists]), else as text (default: the architecture's "
        "defaults)",
    )
    return p


def run_options() -> argparse.ArgumentParser:
    p = _parent()
    g = p.add_argument_group("machine")
    g.add_argument("--device", default="cpu", help=DEVICE_HELP)
    g.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    return p


def inputs_options() -> argparse.ArgumentParser:
    """What the nets are fed: a dataset split (or token files) and how many inputs."""
    p = _parent()
    g = p.add_argument_group("inputs")
    g.add_argument(
        "--split",
        default="test",
        choices=["train", "test"],
        help="the split measured (default: test)",
    )
    g.add_argument(
        "--max-inputs", type=int, default=None, help="only the first N inputs (default: all)"
    )
    g.add_argument(
        "--inputs",
        default=None,
        metavar="FILE",
        help="instead of a dataset: token inputs for a text model, a .npz of named arrays "
        "(input_ids, attention_mask, ...; labels optional) or a directory of .npy files, passed "
        "to the models as keyword arguments; padding masked by attention_mask (default: none)",
    )
    g.add_argument(
        "--vocab",
        default=None,
        metavar="FILE",
        help="with --inputs: one token per line (e.g. BERT's vocab.txt), so the report shows "
        "tokens, not ids (default: none)",
    )
    return p


def precision(args: argparse.Namespace) -> bool:
    """``--precision`` / ``--exact``: whether per-batch products run in float64."""
    return bool(args.exact or args.precision == "float64")


def collect_options() -> argparse.ArgumentParser:
    p = _parent()
    g = p.add_argument_group("collection")
    g.add_argument(
        "--layers",
        default=None,
        help="comma-separated dotted layer names (default: the model's analysed layers; see "
        "`convergent layers`)",
    )
    g.add_argument(
        "--spatial",
        default="positions",
        choices=SPATIAL_MODES,
        help="positions: every spatial position (token) is a sample, as in the paper (default); "
        "mean: one averaged sample per input",
    )
    g.add_argument(
        "--batch-size", type=int, default=256, help="inputs per forward pass (default 256)"
    )
    g.add_argument(
        "--precision",
        default="float64",
        choices=("float64", "float32"),
        help="per-batch products: float64 (default, exact to double rounding) or float32 (about 2x "
        "faster products; relative errors ~1e-7 in co-moments, ~1e-5 in correlations)",
    )
    g.add_argument(
        "--exact", action="store_true", help="float64 products (the default; kept for old scripts)"
    )
    return p
