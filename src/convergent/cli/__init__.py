"""Command-line interface: argument parsing only; every command calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from convergent._errors import ConvergentError
from convergent._version import __version__


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _model_kwargs(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--set width=0.5 --set depth=4`` -> ``{"width": 0.5, "depth": 4}`` (values parsed as JSON)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--set expects KEY=VALUE (e.g. --set width=0.5). Got {pair!r} instead."
            )
        out[key.strip()] = _parse_value(value.strip())
    return out


def _vary(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


# ---------------------------------------------------------------------------------------------
# commands


def cmd_train(args: argparse.Namespace) -> int:
    from convergent.data import load_dataset
    from convergent.report import format_table
    from convergent.train import default_config, train_zoo, zoo_summary

    _threads(args)
    dataset = load_dataset(args.dataset, args.data_dir, subset=args.subset)
    config = default_config(
        dataset.name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
    )
    zoo = train_zoo(
        args.out,
        arch=args.arch,
        dataset=dataset,
        seeds=args.seeds,
        config=config,
        model_kwargs=_model_kwargs(args.set),
        vary=_vary(args.vary),
        base_seed=args.base_seed,
        device=args.device,
    )
    print(format_table(zoo_summary(zoo)))
    print(f"zoo: {zoo.path}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from convergent.models import build_model, describe_layers
    from convergent.report import format_table

    if args.input_shape:
        try:
            c, h, w = (int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise ValueError(
                f"--input-shape expects C,H,W (e.g. 1,28,28). Got {args.input_shape!r} instead."
            ) from None
        num_classes = args.num_classes
    else:
        from convergent.data import load_dataset

        ds = load_dataset(args.dataset, args.data_dir)
        (c, h, w), num_classes = ds.input_shape, ds.num_classes
    model = build_model(
        args.arch,
        in_channels=c,
        input_size=(h, w),
        num_classes=num_classes,
        **_model_kwargs(args.set),
    )
    rows = describe_layers(model)
    if not args.all:
        rows = [r for r in rows if r["default"]]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, ["name", "type", "parameters", "default"]))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from convergent.collect import collect_run, stats_summary
    from convergent.report import format_table

    _threads(args)
    layers = [v for v in (args.layers or "").split(",") if v] or None
    stats = collect_run(
        args.out,
        zoo=args.zoo,
        arch=args.model,
        checkpoints=args.checkpoint or (),
        model_kwargs=_model_kwargs(args.set),
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        layers=layers,
        spatial=args.spatial,
        batch_size=args.batch_size,
        topk=args.topk or None,
        exact=args.exact,
        device=args.device,
        max_inputs=args.max_inputs,
        pooled=not args.no_pooled,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(stats_summary(stats)))
        print(f"statistics: {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from convergent.analysis import AnalysisSettings
    from convergent.results._analyze import analyze_run, terminal_summary

    _threads(args)
    settings = AnalysisSettings(
        absolute=args.absolute,
        clusters=tuple(int(v) for v in args.clusters.split(",") if v),
        thresholds=tuple(float(v) for v in args.thresholds.split(",") if v),
        unique_threshold=args.unique_threshold,
        n_penalties=args.n_penalties,
        penalty_ratio=args.penalty_ratio,
        affinity=args.affinity,
        seed=args.seed,
    )
    layers = [v for v in (args.layers or "").split(",") if v] or None
    results = analyze_run(
        args.stats,
        args.out,
        settings=settings,
        held_out=args.held_out,
        layers=layers,
        mi=args.mi,
        mi_pairs=args.mi_pairs,
        mi_bins=args.mi_bins,
        mi_inputs=args.mi_inputs,
    )
    print(terminal_summary(results))
    print(f"results: {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from convergent.report import build_report

    _threads(args)
    path = build_report(
        args.results,
        args.out,
        pair=args.pair,
        patches=not args.no_patches,
        interpolation=args.interpolation,
    )
    print(f"report: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from convergent.pipeline import run_demo
    from convergent.results._analyze import terminal_summary

    _threads(args)
    done = run_demo(
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        nets=args.nets,
        arch=args.arch,
        model_kwargs=_model_kwargs(args.set),
        epochs=args.epochs,
        subset=args.subset,
        mi=not args.no_mi,
        interpolate=args.interpolate,
        device=args.device,
    )
    print()
    print(terminal_summary(done["results"]))
    times = ", ".join(f"{k} {v:.1f} s" for k, v in done["seconds"].items())
    print(f"\ntime: {times} (total {sum(done['seconds'].values()):.1f} s)")
    print(f"report: {done['report']}")
    return 0


# ---------------------------------------------------------------------------------------------
# parser


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded default), fashion-mnist, mnist, cifar10 or npy",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the dataset's files (IDX, CIFAR-10 binary, images.npy)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convergent",
        description="Do different neural networks learn the same representations? "
        "(Li et al., Convergent Learning, ICLR 2016)",
    )
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train several nets that differ only in their seed")
    _add_data_args(p)
    p.add_argument(
        "--arch",
        default="convnet",
        help="convnet, mlp, resnet, or your own as package.module:factory",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="architecture argument, e.g. --set width=0.5 (repeatable)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="one net per seed")
    p.add_argument(
        "--vary",
        default="init",
        help="what the seed changes: init, order, or init,order (default: init)",
    )
    p.add_argument("--base-seed", type=int, default=0, help="seed of whatever is not varied")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--subset", type=int, default=None, help="use only the first N training images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="runs/zoo", help="zoo directory (default: runs/zoo)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("layers", help="list a model's layers by their dotted names")
    _add_data_args(p)
    p.add_argument("--arch", default="convnet")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--input-shape", default=None, help="C,H,W instead of a dataset's shape")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--all", action="store_true", help="every module, not only the analysed layers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("collect", help="one pass over a dataset split: joint activation statistics")
    p.add_argument("zoo", nargs="?", default=None, help="zoo directory from `convergent train`")
    p.add_argument(
        "--model",
        default=None,
        metavar="ARCH",
        help="instead of a zoo: an architecture (or package.module:factory) ...",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="... and one weights file per net (safetensors, or a .pt state dict)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="architecture argument")
    p.add_argument("--dataset", default=None, help="default: the zoo's dataset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument(
        "--layers",
        default=None,
        help="comma-separated dotted layer names (default: the analysed layers)",
    )
    p.add_argument(
        "--spatial",
        default="positions",
        choices=["positions", "mean"],
        help="positions: every spatial position is a sample (the paper); mean: one per input",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--topk", type=int, default=9, help="top inputs kept per unit (0: none)")
    p.add_argument("--exact", action="store_true", help="float64 per-batch products")
    p.add_argument("--max-inputs", type=int, default=None, help="use only the first N inputs")
    p.add_argument(
        "--no-pooled",
        action="store_true",
        help="skip the all-layer moments of spatially averaged units (layer x layer CKA)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/stats", help="statistics directory (default: runs/stats)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "analyze", help="one-to-one, one-to-many, many-to-many analyses of statistics"
    )
    p.add_argument("stats", help="statistics directory from `convergent collect`")
    p.add_argument(
        "--out", default="runs/results", help="results directory (default: runs/results)"
    )
    p.add_argument(
        "--held-out",
        default=None,
        help="statistics of the same nets on other data (sparse errors evaluated there)",
    )
    p.add_argument("--layers", default=None, help="comma-separated layers (default: all collected)")
    p.add_argument("--absolute", action="store_true", help="match on |correlation|")
    p.add_argument(
        "--thresholds", default="0.5,0.9", help="report units matched at least this well"
    )
    p.add_argument(
        "--unique-threshold",
        type=float,
        default=0.5,
        help="a unit is unique when its best |corr| with the other net is below this",
    )
    p.add_argument("--n-penalties", type=int, default=24, help="sparse-prediction path length")
    p.add_argument(
        "--penalty-ratio",
        type=float,
        default=1e-2,
        help="smallest over largest L1 penalty of the path (default 1e-2)",
    )
    p.add_argument("--clusters", default="2,4,8,16", help="spectral cluster counts")
    p.add_argument(
        "--affinity",
        default="absolute",
        choices=["absolute", "positive", "signed-shift", "squared"],
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mi",
        action="store_true",
        help="also mutual-information matching (a second pass over the data)",
    )
    p.add_argument("--mi-pairs", default="first", choices=["first", "all"])
    p.add_argument("--mi-bins", type=int, default=10)
    p.add_argument("--mi-inputs", type=int, default=500)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "report", help="HTML report (figures embedded) of an analyze results directory"
    )
    p.add_argument("results", help="results directory from `convergent analyze`")
    p.add_argument("--out", default=None, help="report directory (default: RESULTS/report)")
    p.add_argument("--pair", default=None, help="pair shown per layer, e.g. seed0~seed2")
    p.add_argument("--no-patches", action="store_true", help="leave out the top-input patches")
    p.add_argument(
        "--interpolation",
        default=None,
        help="an `interpolate` output directory to include (default: RESULTS/../interpolation)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "demo", help="the main job: train, collect, analyze and report (each stage resumable)"
    )
    _add_data_args(p)
    p.add_argument("--nets", type=int, default=4, help="number of nets (seeds 0..N-1)")
    p.add_argument(
        "--arch", default="convnet", help="convnet, mlp, resnet or package.module:factory"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="architecture argument")
    p.add_argument("--epochs", type=int, default=None, help="default: the dataset's default")
    p.add_argument("--subset", type=int, default=None, help="use only the first N training images")
    p.add_argument("--no-mi", action="store_true", help="skip mutual-information matching")
    p.add_argument(
        "--interpolate",
        action="store_true",
        help="also the loss barrier between seed0 and seed1, naive vs aligned (+ REPAIR)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.set_defaults(func=cmd_demo)

    from convergent.cli._align import add_commands as add_align_commands

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
    except KeyboardInterrupt:
        print(
            f"convergent {args.command}: interrupted; finished work is kept, re-run the same "
            "command to continue.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
