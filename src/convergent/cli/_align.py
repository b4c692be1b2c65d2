"""The `align` and `interpolate` subcommands: argument parsing only, each calls one library function.

Registered by ``convergent.cli.build_parser`` through :func:`add_commands`.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from convergent._device import resolve_device
from convergent.align._check import check_model, check_run
from convergent.align._interpolate import BARRIER_DEFINITIONS, REPAIRS
from convergent.align._match import SIMILARITIES
from convergent.align._run import (
    ALIGN_METHODS,
    INTERPOLATE_ALIGN,
    align_run,
    interpolate_run,
    interpolation_summary,
    merge_run,
    merge_summary,
)
from convergent.cli._common import (
    data_options,
    layer_list,
    model_kwargs,
    model_options,
    run_options,
    threads,
)
from convergent.data import load_dataset
from convergent.report import format_table
from convergent.zoo import load_dataset_for, load_net, locate_net


def _input_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(
            f"--input-shape expects C,H,W (e.g. 1,28,28). Got {text!r} instead."
        ) from None
    return c, h, w


def _common(args: argparse.Namespace) -> dict[str, Any]:
    threads(args)
    return {
        "similarity": args.similarity,
        "stats": args.stats,
        "arch": args.arch,
        "model_kwargs": model_kwargs(args.set, args.arch),
        "device": resolve_device(args.device),
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "train_inputs": args.train_inputs,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def cmd_align(args: argparse.Namespace) -> int:
    if args.check and args.merge:
        raise ValueError("Choose one of --check and --merge.")
    if args.check:
        return _check(args)
    common = _common(args)
    if args.merge:
        if len(args.nets) != 1:
            raise ValueError(f"--merge takes one zoo directory. Got {len(args.nets)} arguments.")
        result = merge_run(
            args.nets[0],
            args.out or "runs/merged.safetensors",
            method=args.method or "weight",
            reference=args.reference,
            similarity=args.similarity,
            repair_mode=args.repair,
            nets=layer_list(args.members),
            data_dir=args.data_dir,
            train_inputs=args.train_inputs,
            seed=args.seed,
            device=common["device"],
        )
        print(format_table(merge_summary(result)))
        for note in result.notes:
            print(f"warning: {note}")
        print(f"merged model: {args.out or 'runs/merged.safetensors'}")
        return 0
    if len(args.nets) != 2:
        raise ValueError(
            "align takes two nets A B (B is aligned to A), each ZOO/NET or a checkpoint file; "
            f"or ZOO with --merge; or --check. Got {len(args.nets)} arguments."
        )
    run = align_run(
        args.nets[0],
        args.nets[1],
        args.out or "runs/aligned",
        method=args.method or "activation",
        **common,
    )
    a = run.alignment
    rows = [
        {
            "group": g,
            "units": len(p),
            "moved": int((p != np.arange(len(p))).sum()),
            "score": a.scores.get(g),
        }
        for g, p in a.perms.items()
    ]
    print(format_table(rows))
    print(f"method: {a.method}; {a.seconds:.2f} s matching")
    print(f"aligned model: {run.model_path}")
    print(f"permutation: {run.permutation_path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    threads(args)
    kwargs = model_kwargs(args.set, args.arch)
    if len(args.nets) > 1:
        raise ValueError(f"--check takes at most one net. Got {len(args.nets)}.")
    if args.nets:
        located = locate_net(args.nets[0])
        ds = load_dataset_for([located], args.dataset, args.data_dir)
        net = load_net(located, ds, arch=args.arch, model_kwargs=kwargs)
        rows = [check_model(net.model, ds.test_images[:4], name=net.name)]
    else:
        if args.input_shape:
            shape, classes = _input_shape(args.input_shape), args.num_classes
        else:
            ds = load_dataset(args.dataset or "digits", args.data_dir)
            shape, classes = ds.input_shape, ds.num_classes
        archs = [args.arch] if args.arch else None
        rows = check_run(archs, model_kwargs=kwargs, input_shape=shape, num_classes=classes)
    print(format_table(rows))
    print(
        "every permutation group permuted at random (3 draws): outputs unchanged within "
        f"{rows[0]['tolerance']:g}"
    )
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    run = interpolate_run(
        args.a,
        args.b,
        args.out,
        align=args.align,
        repair_mode=args.repair,
        points=args.points,
        **_common(args),
    )
    print("barriers (the straight path between A and B, weights (1 - alpha) A + alpha B):")
    for key, text in BARRIER_DEFINITIONS.items():
        print(f"  {key} barrier = {text}")
    print(format_table(interpolation_summary(run)))
    for kind, path in run.paths.items():
        print(f"{kind}: {path}")
    return 0


def _shared() -> argparse.ArgumentParser:
    """Options `align` and `interpolate` share (matching, inputs), as a parent parser."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("matching")
    g.add_argument(
        "--similarity",
        default="correlation",
        choices=SIMILARITIES,
        help="unit similarity for activation matching (default: correlation)",
    )
    g.add_argument(
        "--stats",
        default=None,
        metavar="DIR",
        help="activation matching from this statistics directory of both nets (`convergent "
        "collect ZOO --split train`) instead of collecting here (default: collect here)",
    )
    g.add_argument(
        "--train-inputs",
        type=int,
        default=10000,
        help="first N training inputs used for matching statistics, renormalisation and the train "
        "curve (default 10000)",
    )
    g.add_argument(
        "--batch-size", type=int, default=256, help="inputs per forward pass (default 256)"
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="order of the groups in weight matching's first start (default 0)",
    )
    return p


def add_commands(subparsers: Any) -> None:
    """Register `align` and `interpolate` on the ``add_subparsers()`` object of the main parser."""
    parents = [
        data_options(default=None),
        model_options(default=None),
        _shared(),
        run_options(),
    ]
    p = subparsers.add_parser(
        "align",
        parents=parents,
        help="permute one net's units onto another's; self-test; merge a zoo",
    )
    p.add_argument(
        "nets",
        nargs="*",
        metavar="NET",
        help="A B: align B to A (each ZOO/NET or a checkpoint file); ZOO with --merge; none or one "
        "with --check",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="self-test: permute every group at random, outputs must not change (every built-in "
        "architecture, or --arch, or the net given)",
    )
    p.add_argument("--merge", action="store_true", help="align every net of ZOO, average them")
    p.add_argument(
        "--method",
        default=None,
        choices=ALIGN_METHODS,
        help="activation or weight matching (default: activation; weight with --merge)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="with --merge: the net the others are aligned to, or 'average' (MergeMany) "
        "(default: the first net)",
    )
    p.add_argument(
        "--members",
        default=None,
        metavar="NET,NET,...",
        help="with --merge: the nets of ZOO to merge, comma-separated (default: all)",
    )
    p.add_argument(
        "--repair",
        default="none",
        choices=REPAIRS,
        help="with --merge: renormalise the merged net: reset-bn (BatchNorm statistics) or repair "
        "(REPAIR, every normalised layer) (default: none)",
    )
    p.add_argument(
        "--input-shape",
        default=None,
        help="with --check: C,H,W instead of a dataset's (default: the dataset's)",
    )
    p.add_argument(
        "--num-classes", type=int, default=10, help="with --input-shape: classes (default 10)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="directory (default runs/aligned); with --merge a .safetensors file (default "
        "runs/merged.safetensors; named merged.safetensors in an interpolation directory, the "
        "report shows the merge)",
    )
    p.set_defaults(func=cmd_align)

    p = subparsers.add_parser(
        "interpolate",
        parents=parents,
        help="loss and accuracy along the straight path between two nets",
    )
    p.add_argument("a", metavar="A", help="ZOO/NET or a checkpoint file (alpha = 0)")
    p.add_argument("b", metavar="B", help="ZOO/NET or a checkpoint file (alpha = 1)")
    p.add_argument(
        "--align",
        default="weight",
        choices=INTERPOLATE_ALIGN,
        help="align B to A first: none, activation or weight matching (default: weight)",
    )
    p.add_argument(
        "--repair",
        default="none",
        choices=REPAIRS,
        help="also the path renormalised at every alpha: reset-bn or repair (default: none)",
    )
    p.add_argument("--points", type=int, default=25, help="alphas from 0 to 1 (default 25)")
    p.add_argument(
        "--out",
        default="runs/interpolate",
        help="directory for JSON, CSV and PNG (default: runs/interpolate)",
    )
    p.set_defaults(func=cmd_interpolate)
