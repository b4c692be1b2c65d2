"""Command-line interface: argument parsing only; every command calls one library function.

Shared options come from parent parsers (``convergent.cli._common``), so a flag is named and
documented the same way in every command. Errors users can fix (bad values, missing or damaged
files, a read-only or full disk) end with one line naming the problem, not a traceback; set
``CONVERGENT_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from convergent._errors import ConvergentError
from convergent._version import __version__
from convergent.cli._align import add_commands as add_align_commands
from convergent.cli._commands import (
    cmd_analyze,
    cmd_collect,
    cmd_compare,
    cmd_demo,
    cmd_layers,
    cmd_report,
    cmd_train,
)
from convergent.cli._common import (
    collect_options,
    data_options,
    inputs_options,
    model_options,
    run_options,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convergent",
        description="Do different neural networks learn the same representations? "
        "(Li et al., Convergent Learning, ICLR 2016)",
    )
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "train",
        help="train several nets that differ only in their seed",
        description="Train one net per seed. Re-running the same command completes the zoo: "
        "finished nets are kept untouched, an interrupted net resumes, new seeds are added, and "
        "nets whose checkpoints are missing or damaged are retrained.",
        parents=[data_options(), model_options(), run_options()],
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3],
        help="one net per seed (default 0 1 2 3)",
    )
    p.add_argument(
        "--vary",
        default="init",
        help="what the seed changes: init, order, or init,order (default: init)",
    )
    p.add_argument(
        "--base-seed", type=int, default=0, help="seed of whatever is not varied (default 0)"
    )
    for flag, kind, what in (
        ("--epochs", int, "epochs"),
        ("--batch-size", int, "batch size"),
        ("--lr", float, "learning rate"),
        ("--momentum", float, "SGD momentum"),
        ("--weight-decay", float, "weight decay"),
    ):
        p.add_argument(
            flag, type=kind, default=None, help=f"{what} (default: the dataset's default)"
        )
    p.add_argument(
        "--subset",
        type=int,
        default=None,
        help="use only the first N training images (default: all)",
    )
    p.add_argument("--out", default="runs/zoo", help="zoo directory (default: runs/zoo)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "layers",
        help="list a model's layers by their dotted names",
        parents=[data_options(), model_options()],
    )
    p.add_argument(
        "--input-shape",
        default=None,
        help="C,H,W instead of the dataset's shape (default: the dataset's)",
    )
    p.add_argument(
        "--num-classes", type=int, default=10, help="classes, with --input-shape (default 10)"
    )
    p.add_argument("--all", action="store_true", help="every module, not only the analysed layers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser(
        "collect",
        help="one pass over a dataset split: joint activation statistics",
        parents=[
            data_options(default=None),
            model_options(default=None),
            inputs_options(),
            collect_options(),
            run_options(),
        ],
    )
    p.add_argument("zoo", nargs="?", default=None, help="zoo directory from `convergent train`")
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="instead of a zoo: one weights file per net (safetensors, or a .pt state dict read "
        "with weights_only=True), with --arch (repeatable; default: none, use ZOO)",
    )
    p.add_argument(
        "--fit-split",
        default="auto",
        choices=["auto", "train", "test", "none"],
        help="also collect this split's moments into OUT/fit, where analyze fits one-to-many "
        "prediction (auto, the default: train when --split is test, else none)",
    )
    p.add_argument(
        "--fit-inputs",
        type=int,
        default=10000,
        help="at most this many inputs of the fit split (default 10000)",
    )
    p.add_argument(
        "--preprocessing",
        default="dataset",
        help="what the nets see: dataset (default: the dataset's normalisation, as convergent "
        "trains), none (pixels in [0, 1]), or package.module:function applied to [0, 1] pixels",
    )
    p.add_argument(
        "--topk", type=int, default=9, help="top inputs kept per unit (default 9; 0: none)"
    )
    p.add_argument(
        "--mi",
        default="none",
        choices=["none", "first", "all"],
        help="keep joint histograms for mutual-information matching of the first pair of nets, "
        "or of all pairs (default: none)",
    )
    p.add_argument("--mi-bins", type=int, default=10, help="bins per unit for MI (default 10)")
    p.add_argument(
        "--mi-inputs", type=int, default=500, help="inputs counted for MI (default: the first 500)"
    )
    p.add_argument(
        "--no-pooled",
        action="store_true",
        help="skip the all-layer moments of spatially averaged units (layer x layer CKA)",
    )
    p.add_argument(
        "--no-kernel-sums", action="store_true", help="skip the kernel sums (exact debiased CKA)"
    )
    p.add_argument(
        "--no-patches", action="store_true", help="skip the input patches behind the top-k inputs"
    )
    p.add_argument("--out", default="runs/stats", help="statistics directory (default: runs/stats)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "analyze",
        help="one-to-one, one-to-many, many-to-many and whole-layer analyses of statistics",
        parents=[run_options()],
    )
    p.add_argument("stats", help="statistics directory from `convergent collect`")
    p.add_argument(
        "--out", default="runs/results", help="results directory (default: runs/results)"
    )
    p.add_argument(
        "--fit",
        default=None,
        metavar="DIR",
        help="statistics to fit one-to-many prediction on, scored on STATS (default: STATS/fit "
        "when collect kept a fit split, else in-sample)",
    )
    p.add_argument(
        "--held-out",
        default=None,
        metavar="DIR",
        help="instead: statistics to score one-to-many prediction on, fitted on STATS (default: "
        "none)",
    )
    p.add_argument("--layers", default=None, help="comma-separated layers (default: all collected)")
    p.add_argument(
        "--absolute", action="store_true", help="match on |correlation| (default: signed)"
    )
    p.add_argument(
        "--thresholds",
        default="0.5,0.9",
        help="report the share of units matched at least this well (default 0.5,0.9)",
    )
    p.add_argument(
        "--unique-threshold",
        type=float,
        default=0.5,
        help="a unit is unique when its best |corr| with the other net is below this (default 0.5)",
    )
    p.add_argument(
        "--n-penalties", type=int, default=24, help="sparse-prediction path length (default 24)"
    )
    p.add_argument(
        "--penalty-ratio",
        type=float,
        default=1e-2,
        help="smallest over largest L1 penalty of the path (default 1e-2)",
    )
    p.add_argument(
        "--clusters", default="2,4,8,16", help="spectral cluster counts (default 2,4,8,16)"
    )
    p.add_argument(
        "--affinity",
        default="absolute",
        choices=["absolute", "positive", "signed-shift", "squared"],
        help="spectral clustering affinity from correlations (default: absolute)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means step (default 0)")
    p.add_argument(
        "--no-mi",
        action="store_true",
        help="skip mutual-information matching even where histograms were collected",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "report", help="HTML report (figures embedded) of an analyze results directory"
    )
    p.add_argument("results", help="results directory from `convergent analyze`")
    p.add_argument("--out", default=None, help="report directory (default: RESULTS/report)")
    p.add_argument(
        "--pair", default=None, help="pair shown per layer, e.g. seed0~seed2 (default: the first)"
    )
    p.add_argument(
        "--all-pairs",
        action="store_true",
        help="correlation matrices of every pair per layer, not only --pair's",
    )
    p.add_argument("--no-patches", action="store_true", help="leave out the top-input patches")
    p.add_argument(
        "--formats",
        default="png",
        help="figure files to write: png (default), png,svg",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes drawing the layers' figures (default: one per usable CPU; 1: none)",
    )
    p.add_argument(
        "--interpolation",
        default=None,
        help="an `interpolate` output directory to include (default: RESULTS/../interpolation "
        "when there is one)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "demo",
        help="the main job: train, collect, analyze and report (each stage resumable)",
        parents=[data_options(), model_options(), run_options()],
    )
    p.add_argument("--nets", type=int, default=4, help="number of nets, seeds 0..N-1 (default 4)")
    p.add_argument("--epochs", type=int, default=None, help="default: the dataset's default")
    p.add_argument(
        "--subset",
        type=int,
        default=None,
        help="use only the first N training images (default: all)",
    )
    p.add_argument("--no-mi", action="store_true", help="skip mutual-information matching")
    p.add_argument(
        "--interpolate",
        action="store_true",
        help="also the loss barrier between seed0 and seed1, naive vs aligned (+ REPAIR)",
    )
    p.add_argument("--formats", default="png", help="report figure files: png (default), png,svg")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "compare",
        help="how two nets differ, layer by layer, next to a reference level (a check to run "
        "after each model update)",
        description="Collect, analyse and report one pair of nets (two checkpoints, or two nets "
        "of a zoo; any architecture) in one command, next to the seed-to-seed variation of a "
        "zoo (--baseline) or, without one, the same architecture at initialisation. Writes "
        "compare.json and a report; exits with status 1 when a threshold (--fail-under) fails.",
        parents=[
            data_options(default=None),
            model_options(default=None),
            inputs_options(),
            collect_options(),
            run_options(),
        ],
    )
    p.add_argument("a", metavar="A", help="ZOO/NET or a checkpoint file")
    p.add_argument("b", metavar="B", help="ZOO/NET or a checkpoint file")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="ZOO",
        help="a zoo whose nets' pairs give the reference level (default: none, the "
        "initialisation null)",
    )
    p.add_argument(
        "--fail-under",
        default="",
        metavar="LAYER:METRIC=VALUE,...",
        help="thresholds, e.g. fc7:cka=0.9,conv1:bipartite=0.6 (or *:cka=0.8 for every layer); "
        "errors and distances fail above their value (default: none)",
    )
    p.add_argument("--no-report", action="store_true", help="only compare.json, no report")
    p.add_argument("--out", default="runs/compare", help="output directory (default: runs/compare)")
    p.set_defaults(func=cmd_compare)

    add_align_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConvergentError, ValueError, TypeError, FileNotFoundError) as exc:
        if os.environ.get("CONVERGENT_DEBUG"):
            raise
        print(f"convergent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if os.environ.get("CONVERGENT_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"convergent {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"convergent {args.command}: interrupted; finished work is kept, re-run the same "
            "command to continue.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
