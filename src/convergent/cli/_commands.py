"""The commands' bodies: turn parsed arguments into one library call each and print its outcome."""

from __future__ import annotations

import argparse
import json
import os
import sys

from convergent._device import resolve_device
from convergent.analysis import AnalysisSettings
from convergent.cli._common import layer_list, model_kwargs, precision, threads
from convergent.collect import collect_run, stats_summary
from convergent.data import load_dataset
from convergent.models import build_model, describe_layers, example_input
from convergent.pipeline import run_compare, run_demo
from convergent.report import build_report, format_table, terminal_summary
from convergent.results import Threshold, analyze_run
from convergent.train import default_config, train_zoo, zoo_summary


def _formats(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def cmd_train(args: argparse.Namespace) -> int:
    threads(args)
    device = str(resolve_device(args.device))
    kwargs = model_kwargs(args.set, args.arch)
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
        model_kwargs=kwargs,
        vary=[v.strip() for v in args.vary.split(",") if v.strip()],
        base_seed=args.base_seed,
        device=device,
        log=lambda line: print(f"convergent train: {line}", file=sys.stderr),
    )
    print(format_table(zoo_summary(zoo)))
    print(f"zoo: {zoo.path}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    if args.input_shape:
        try:
            c, h, w = (int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise ValueError(
                f"--input-shape expects C,H,W (e.g. 1,28,28). Got {args.input_shape!r} instead."
            ) from None
        num_classes = args.num_classes
    else:
        ds = load_dataset(args.dataset, args.data_dir)
        (c, h, w), num_classes = ds.input_shape, ds.num_classes
    model = build_model(
        args.arch,
        in_channels=c,
        input_size=(h, w),
        num_classes=num_classes,
        **model_kwargs(args.set, args.arch),
    )
    rows = describe_layers(model, example_input(model, (c, h, w)))
    if not args.all:
        rows = [r for r in rows if r["default"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        {
            "name": r["name"],
            "type": r["type"],
            "output": "x".join(map(str, r["output_shape"] or [])) or "-",
            "units": r["units"],
            "samples/input": r["samples_per_input"],
            "parameters": r["parameters"],
            "default": r["default"],
            **({"calls": r["calls"]} if args.all else {}),
        }
        for r in rows
    ]
    print(format_table(table))
    for r in rows:
        if (r["calls"] or 0) > 1:
            print(
                f"note: {r['name']} ({r['type']}) runs {r['calls']} times in one forward pass (one "
                "module reused in forward), so it cannot be analysed as one layer; convergent "
                "uses the layers that feed it."
            )
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    threads(args)
    device = str(resolve_device(args.device))
    fit_split = args.fit_split
    if fit_split == "auto":
        fit_split = "train" if args.split == "test" and args.inputs is None else None
    elif fit_split == "none":
        fit_split = None
    exact = precision(args)
    stats = collect_run(
        args.out,
        zoo=args.zoo,
        arch=args.arch if args.zoo is None else None,
        checkpoints=args.checkpoint or (),
        model_kwargs=model_kwargs(args.set, args.arch),
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        layers=layer_list(args.layers),
        spatial=args.spatial,
        batch_size=args.batch_size,
        topk=args.topk or None,
        exact=exact,
        device=device,
        max_inputs=args.max_inputs,
        kernel_sums=not args.no_kernel_sums,
        pooled=not args.no_pooled,
        mi=args.mi,
        mi_bins=args.mi_bins,
        mi_inputs=args.mi_inputs,
        patches=not args.no_patches,
        preprocessing=args.preprocessing,
        fit_split=fit_split,
        fit_inputs=args.fit_inputs,
        inputs=args.inputs,
        vocab=args.vocab,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(stats_summary(stats)))
        print(f"statistics: {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    threads(args)
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
    results = analyze_run(
        args.stats,
        args.out,
        settings=settings,
        fit=args.fit,
        held_out=args.held_out,
        layers=layer_list(args.layers),
        mi=not args.no_mi,
    )
    print(terminal_summary(results))
    print(f"results: {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = build_report(
        args.results,
        args.out,
        pair=args.pair,
        patches=not args.no_patches,
        interpolation=args.interpolation,
        formats=_formats(args.formats),
        all_pairs=args.all_pairs,
        workers=args.workers,
    )
    print(f"report: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    threads(args)
    device = str(resolve_device(args.device))
    done = run_demo(
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        nets=args.nets,
        arch=args.arch,
        model_kwargs=model_kwargs(args.set, args.arch) or None,
        epochs=args.epochs,
        subset=args.subset,
        mi=not args.no_mi,
        interpolate=args.interpolate,
        formats=_formats(args.formats),
        device=device,
    )
    print()
    print(terminal_summary(done["results"]))
    times = ", ".join(f"{k} {v:.1f} s" for k, v in done["seconds"].items())
    print(f"\ntime: {times} (total {sum(done['seconds'].values()):.1f} s)")
    print(f"report: {done['report']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    threads(args)
    device = str(resolve_device(args.device))
    thresholds = Threshold.parse(args.fail_under)
    done = run_compare(
        args.a,
        args.b,
        args.out,
        baseline=args.baseline,
        arch=args.arch,
        model_kwargs=model_kwargs(args.set, args.arch),
        dataset=args.dataset,
        data_dir=args.data_dir,
        inputs=args.inputs,
        vocab=args.vocab,
        split=args.split,
        layers=layer_list(args.layers),
        max_inputs=args.max_inputs,
        spatial=args.spatial,
        batch_size=args.batch_size,
        exact=precision(args),
        thresholds=thresholds,
        report=not args.no_report,
        device=device,
    )
    comparison = done["comparison"]
    rows = []
    for name, metrics in comparison.layers.items():
        row = {"layer": name}
        for key in ("bipartite", "cka", "refit_4"):
            m = metrics.get(key)
            if m is not None:
                row[key] = None if m.value is None else round(m.value, 3)
                row[f"{key} ref"] = None if m.reference_mean is None else round(m.reference_mean, 3)
        rows.append(row)
    print(format_table(rows))
    print(
        f"reference: {comparison.reference_kind} ({len(comparison.reference_pairs)} pairs); "
        "'ref' columns are the reference mean"
    )
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in done["seconds"].items()))
    print(f"comparison: {os.path.join(args.out, 'compare.json')}")
    if done["report"] is not None:
        print(f"report: {done['report']}")
    if comparison.failed:
        for line in comparison.failed:
            print(f"FAILED {line}", file=sys.stderr)
        return 1
    if comparison.thresholds:
        print(f"all {len(comparison.thresholds)} threshold(s) pass")
    return 0
