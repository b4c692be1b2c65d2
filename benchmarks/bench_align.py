"""Align, then average: the loss/accuracy barrier between two nets that differ only in their seed,
before and after permutation alignment and renormalisation, on Fashion-MNIST, on one CPU thread.

The published shape of the result (REPAIR, Jordan et al. 2023, MNIST MLPs of width 512): the naive
midpoint of two nets collapses (9.7% accuracy), aligning the units first recovers much of it (82.4%),
and aligning + REPAIR almost all of it (98.0% vs. endpoints 99.1 / 99.0). This script measures the
same path for three architectures of this project, side by side:

- ``mlp``: 4 hidden layers of 512 units (fc1..fc5), the whole training split (shallower than the
  published MLPs: the project's MLP, default PyTorch init and no normalisation, did not train at
  depth 8 or 12 in a few epochs here: depth 12 stayed at chance after 2 epochs);
- ``convnet``: the paper-like conv1..conv5, fc6..fc8 at width 0.5, trained on a subset;
- ``resnet``: the small residual net with BatchNorm, trained on a subset.

Rows per model: the endpoints, then the straight path with no alignment (naive), with B aligned to A
by activation matching (correlation of units on training images) or by weight matching, each plain
and with REPAIR (every hidden channel's mean/std reset to the interpolation of the endpoints'), and
for BatchNorm nets with BatchNorm statistics recomputed (reset-bn). Barriers are on the test inputs:

    loss barrier     = max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))
    accuracy barrier = max_alpha ((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)

Trained nets are cached under ``benchmarks/.cache/`` (a zoo per model), so a re-run only evaluates.

``--table width`` (the default) is the width sweep of issue 14: ``resnet`` (x1 = 16-32-64 channels,
REPAIR's ResNet20 x1 has the same 16-32-64) and ``convnet`` (x1 = width 0.5: 16-32-48-48-32
channels, 128 fc units) at width multipliers 1, 2 and 4, each pair trained on the first 10000
Fashion-MNIST training images for 4 epochs (the CPU budget: ~40 min of one core in all), barriers at
the midpoint alpha = 0.5 on the first 2000 test images, naive / aligned / aligned + renormalisation,
next to REPAIR's published Fashion-MNIST ResNet20 numbers. It also compares the weight-matching
objective with a straight Git Re-Basin Algorithm 1 (written here, independently) on every pair.
``--table paths`` is the earlier table: the whole path at 9 alphas for mlp, convnet, resnet.

``--table training`` is the width table's row (same columns) for chosen training: ``--arch``,
``--widths``, and runs given by zipped ``--subset`` / ``--epochs`` / ``--blocks`` / ``--seeds``
lists (e.g. ``--subset 10000,10000 --epochs 4,16``: two runs; one value is repeated), with
endpoint accuracies and CPU times: does the barrier fall with more data, epochs or depth?

Usage: python benchmarks/bench_align.py [--table width|paths|training] [--models ...] [--quick]
       python benchmarks/bench_align.py --table training --arch resnet --widths 2 \
           --subset 10000,10000 --epochs 4,16 --blocks 1,1
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("CONVERGENT_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"

#: what each model trains on and is evaluated on (kept small enough for two shared CPU cores)
SETUPS = {
    "mlp": {
        "arch": "mlp",
        "kwargs": {"width": 512, "depth": 5},
        "subset": None,
        "epochs": 5,
        "test_inputs": None,
        "train_inputs": 5000,
    },
    "convnet": {
        "arch": "convnet",
        "kwargs": {"width": 0.5},
        "subset": 20000,
        "epochs": 5,
        "test_inputs": 5000,
        "train_inputs": 2000,
    },
    "resnet": {
        "arch": "resnet",
        "kwargs": {"width": 1.0},
        "subset": 10000,
        "epochs": 5,
        "test_inputs": 5000,
        "train_inputs": 2000,
    },
}
CALIBRATION = 5000  # training images for activation statistics, REPAIR and BatchNorm resets
TARGET_PTS = 2.0  # the target: MLP aligned+REPAIR accuracy barrier under 2 points


def _setup_line(name: str, s: dict, dataset: str) -> str:
    train = "all 60000" if s["subset"] is None else f"first {s['subset']}"
    test = "all 10000" if s["test_inputs"] is None else f"first {s['test_inputs']}"
    return (
        f"  {name}: {s['arch']} {s['kwargs']}, trained on {train} {dataset} training images for "
        f"{s['epochs']} epochs (seeds 0 and 1); test barrier on {test} test images"
    )


def run_model(name: str, s: dict, dataset: str, points: int) -> list[dict]:
    from convergent.align import find_permutation_groups, interpolation_curve, match_pair
    from convergent.align._interpolate import has_batchnorm
    from convergent.align._merge import permuted
    from convergent.data import load_dataset
    from convergent.train import TrainConfig, train_zoo

    ds = load_dataset(dataset, subset=s["subset"])
    t0 = time.perf_counter()
    zoo = train_zoo(
        CACHE / f"{dataset}-{name}",
        arch=s["arch"],
        dataset=ds,
        seeds=(0, 1),
        config=TrainConfig(epochs=s["epochs"], batch_size=128, lr=0.02),
        model_kwargs=s["kwargs"],
        progress=False,
    )
    trained = time.perf_counter() - t0
    a, b = zoo.model("seed0"), zoo.model("seed1")
    calibration = ds.train_images[:CALIBRATION]
    test_x, test_y = ds.split("test")
    n_test = s["test_inputs"]
    splits = {
        "test": (test_x[:n_test], test_y[:n_test]),
        "train": (ds.train_images[: s["train_inputs"]], ds.train_labels[: s["train_inputs"]]),
    }
    spec = find_permutation_groups(a, calibration[:2])
    targets, seconds = {"naive": b}, {"naive": 0.0}
    for method in ("activation", "weight"):
        alignment = match_pair(a, b, spec, method=method, images=calibration)
        targets[method] = permuted(b, spec, alignment.perms)
        seconds[method] = alignment.seconds
    repairs = ["none", "repair"] + (["reset-bn"] if has_batchnorm(a) else [])
    configs = [("naive", "none")]
    if "reset-bn" in repairs:
        configs.append(("naive", "reset-bn"))
    for method in ("activation", "weight"):
        configs += [(method, r) for r in repairs]
    rows = []
    for which, mode in configs:
        curve = interpolation_curve(
            a,
            targets[which],
            splits,
            points=points,
            repair_mode=mode,
            align="none" if which == "naive" else which,
            calibration=calibration,
            progress=False,
        )
        if not rows:
            acc = curve.curves["test"]["accuracy"]
            rows.append(
                {
                    "model": name,
                    "method": "endpoints A / B",
                    "loss barrier": None,
                    "acc barrier (pts)": None,
                    "midpoint acc (%)": f"{100 * acc[0]:.2f} / {100 * acc[-1]:.2f}",
                    "train acc barrier (pts)": None,
                    "matching s": None,
                    "_trained_s": trained,
                }
            )
        mid = int(np.argmin(np.abs(curve.alphas - 0.5)))
        label = which if which == "naive" else f"aligned-{which}"
        if mode != "none":
            label += f" + {mode}"
        rows.append(
            {
                "model": name,
                "method": label,
                "loss barrier": round(curve.barriers["test"]["loss"], 3),
                "acc barrier (pts)": round(100 * curve.barriers["test"]["accuracy"], 2),
                "midpoint acc (%)": f"{100 * curve.curves['test']['accuracy'][mid]:.2f}",
                "train acc barrier (pts)": round(100 * curve.barriers["train"]["accuracy"], 2),
                "matching s": round(seconds[which], 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="width", choices=("width", "paths", "training"))
    parser.add_argument("--models", default=None, help="paths: mlp,convnet,resnet; width: both")
    training = parser.add_argument_group(
        "--table training", "the width table's row for chosen training (runs = zipped lists)"
    )
    training.add_argument("--arch", default="resnet", choices=tuple(WIDTH_SETUPS))
    training.add_argument("--widths", default="2", help="width multipliers, e.g. 1,2 (default 2)")
    training.add_argument(
        "--subset",
        default=str(WIDTH_SUBSET),
        help=f"training images per run (default {WIDTH_SUBSET})",
    )
    training.add_argument(
        "--epochs", default=str(WIDTH_EPOCHS), help=f"epochs per run (default {WIDTH_EPOCHS})"
    )
    training.add_argument("--blocks", default="1", help="resnet blocks per stage per run (1)")
    training.add_argument(
        "--seeds", default="0-1", help="the pair's seeds per run, e.g. 0-1,2-3 (default 0-1)"
    )
    parser.add_argument("--points", type=int, default=9, help="alphas from 0 to 1 (odd: has 0.5)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: digits, tiny subsets (not the benchmark)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.table == "width":
        width_table(args)
    elif args.table == "training":
        training_table(args)
    else:
        paths_table(args)


def paths_table(args: argparse.Namespace) -> None:
    from convergent.report import format_table

    args.models = args.models or "mlp,convnet,resnet"
    dataset = "digits" if args.quick else "fashion-mnist"
    setups = {k: dict(SETUPS[k]) for k in args.models.split(",") if k}
    if args.quick:
        for s in setups.values():
            s.update(epochs=2, subset=300, test_inputs=200, train_inputs=200)
    print(
        "bench_align: the barrier on the straight path between two nets that differ in their seed"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, {platform.machine()}, "
        f"{args.points} points alpha = 0 .. 1, SGD (Nesterov, cosine lr 0.02, batch 128)"
    )
    for name, s in setups.items():
        print(_setup_line(name, s, dataset))
    print(
        f"  activation statistics, REPAIR and BatchNorm resets use the first {CALIBRATION} training "
        "images; 'train acc barrier' is on the first 5000 (mlp) / 2000 (conv nets) of them"
    )
    print("  loss barrier = max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))  (test)")
    print("  acc barrier  = max_alpha ((1 - alpha) acc(0) + alpha acc(1)) - acc(alpha)  (test)")
    print(
        "  published shape (REPAIR, MNIST MLPs width 512): naive midpoint 9.7%, aligned 82.4%, "
        "aligned + REPAIR 98.0%, endpoints 99.1 / 99.0"
    )
    t0 = time.perf_counter()
    rows = []
    for name, s in setups.items():
        rows.extend(run_model(name, s, dataset, args.points))
    trained = {r["model"]: r.pop("_trained_s") for r in rows if "_trained_s" in r}
    print()
    print(format_table(rows))
    print()
    if "mlp" in setups:
        mlp = [r for r in rows if r["model"] == "mlp" and r["method"].endswith("+ repair")]
        best = min(r["acc barrier (pts)"] for r in mlp)
        verdict = "met" if best < TARGET_PTS else "MISSED"
        detail = ", ".join(f"{r['method']}: {r['acc barrier (pts)']}" for r in mlp)
        print(
            f"target: mlp aligned + REPAIR test accuracy barrier < {TARGET_PTS} pts: {verdict} "
            f"({detail})"
        )
    print(
        "training (0 when cached): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in trained.items())
        + f"; total {time.perf_counter() - t0:.0f} s"
    )


# ------------------------------------------------------------------------------------------------
# the width sweep

WIDTH_SETUPS = {
    "resnet": {"arch": "resnet", "base": 1.0, "channels": (16, 32, 64)},
    "convnet": {"arch": "convnet", "base": 0.5, "channels": (32, 64, 96, 96, 64)},
}
MULTIPLIERS = (1, 2, 4)
WIDTH_SUBSET, WIDTH_EPOCHS, WIDTH_TEST, WIDTH_CALIBRATION = 10000, 4, 2000, 2000
#: REPAIR (Jordan et al. 2023), Fashion-MNIST ResNet20 with BatchNorm, reset / REPAIR barrier (points)
PUBLISHED_RESNET20_FMNIST = {1: 16.4, 2: 9.4, 4: 2.6, 8: 1.4}


def git_rebasin_algorithm1(spec, state_a, state_b, *, seed: int = 0, max_iter: int = 100):
    """Git Re-Basin weight matching (Ainsworth et al. 2023, Algorithm 1) as published: identity
    start, each sweep the groups in a random order, each solved by a linear assignment of the summed
    products of A's weights with B's (other groups permuted); stop after a sweep without progress.
    Parameters only (BatchNorm running statistics are not weights). Returns (perms, sweeps)."""
    from scipy.optimize import linear_sum_assignment

    from convergent.align import apply_permutation

    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    perms = {n: np.arange(g.size) for n, g in spec.groups.items()}
    sweeps = 0
    for sweeps in range(1, max_iter + 1):  # noqa: B007
        progress = False
        for idx in rng.permutation(len(names)):
            name = names[idx]
            size = spec.groups[name].size
            b = apply_permutation(state_b, spec, {**perms, name: np.arange(size)})
            cost = np.zeros((size, size))
            for param, axis, offset, repeat in spec.groups[name].axes:
                if param.endswith(("running_mean", "running_var")):
                    continue
                wa = state_a[param].narrow(axis, offset, size * repeat).movedim(axis, 0)
                wb = b[param].narrow(axis, offset, size * repeat).movedim(axis, 0)
                cost += (
                    wa.reshape(size, -1).double().numpy() @ wb.reshape(size, -1).double().numpy().T
                )
            rows, cols = linear_sum_assignment(cost, maximize=True)
            old = cost[np.arange(size), perms[name]].sum()
            new = cost[rows, cols].sum()
            if new > old + 1e-12:
                perms[name] = cols[np.argsort(rows)]
                progress = True
        if not progress:
            break
    return perms, sweeps


def objective(spec, state_a, state_b, perms) -> float:
    """Sum over every permuted parameter (not BatchNorm statistics) of <A, permuted B>."""
    from convergent.align import apply_permutation

    b = apply_permutation(state_b, spec, perms)
    params = {a[0] for g in spec.groups.values() for a in g.axes}
    return float(
        sum(
            float((state_a[p].double() * b[p].double()).sum())
            for p in sorted(params)
            if not p.endswith(("running_mean", "running_var"))
        )
    )


def width_pair(
    arch: str,
    width: float,
    dataset: str,
    subset: int,
    epochs: int,
    blocks: int = 1,
    seeds: tuple[int, int] = (0, 1),
):
    """The cached pair and its training time: (dataset, A, B, wall s, CPU s). ``blocks``
    (residual blocks per stage) is passed to ``resnet`` only; the cache name gains ``-b<blocks>``
    when it is not 1 and ``-s<a>-<b>`` for seeds other than (0, 1), so the width table's zoos keep
    their names."""
    from convergent.data import load_dataset
    from convergent.train import TrainConfig, train_zoo

    ds = load_dataset(dataset, subset=subset)
    kwargs, tag = {"width": width}, ""
    if blocks != 1:
        kwargs["blocks"], tag = blocks, f"-b{blocks}"
    if tuple(seeds) != (0, 1):
        tag += f"-s{seeds[0]}-{seeds[1]}"
    t0, c0 = time.perf_counter(), time.process_time()
    zoo = train_zoo(
        CACHE / f"{dataset}-{arch}-w{width:g}{tag}-n{subset}-e{epochs}",
        arch=arch,
        dataset=ds,
        seeds=tuple(seeds),
        config=TrainConfig(epochs=epochs, batch_size=128, lr=0.02),
        model_kwargs=kwargs,
        progress=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return ds, zoo.model(f"seed{seeds[0]}"), zoo.model(f"seed{seeds[1]}"), wall, cpu


def width_row(
    name: str,
    mult: int,
    dataset: str,
    quick: bool,
    *,
    subset: int = WIDTH_SUBSET,
    epochs: int = WIDTH_EPOCHS,
    blocks: int = 1,
    seeds: tuple[int, int] = (0, 1),
    extras: bool = True,
) -> tuple[dict, dict | None, list[dict]]:
    """One row of the width table (and, with ``extras``, its weight-matching objectives and
    merges) for a pair trained on the first ``subset`` images for ``epochs`` epochs; ``quick``
    overrides the training (digits: 300 images, 1 epoch) and the evaluation sizes."""
    from convergent.align import find_permutation_groups, interpolation_curve, match_pair
    from convergent.align._interpolate import _evaluate, has_batchnorm
    from convergent.align._match import weight_matching
    from convergent.align._merge import permuted

    setup = WIDTH_SETUPS[name]
    width = setup["base"] * mult
    if quick:
        subset, epochs = 300, 1
    n_test, n_cal = (200, 200) if quick else (WIDTH_TEST, WIDTH_CALIBRATION)
    ds, a, b, trained, trained_cpu = width_pair(
        setup["arch"], width, dataset, subset, epochs, blocks, seeds
    )
    t0, c0 = time.perf_counter(), time.process_time()
    calibration = ds.train_images[:n_cal]
    test_x, test_y = ds.split("test")
    splits = {"test": (test_x[:n_test], test_y[:n_test])}
    ends = {"test": {0.0: _evaluate(a, *splits["test"]), 1.0: _evaluate(b, *splits["test"])}}
    spec = find_permutation_groups(a, calibration[:2])
    act = match_pair(a, b, spec, method="activation", images=calibration)
    wm = weight_matching(spec, a.state_dict(), b.state_dict())
    matched_cpu = time.process_time() - c0
    targets = {"naive": b, "act": permuted(b, spec, act.perms), "wm": permuted(b, spec, wm.perms)}
    bn = has_batchnorm(a)
    configs = [("naive", "none"), ("act", "none"), ("act", "repair"), ("wm", "repair")]
    if bn:
        configs += [("naive", "reset-bn"), ("act", "reset-bn"), ("wm", "reset-bn")]
    row = {
        "model": name,
        "x": mult,
        "channels": "-".join(str(max(1, round(c * width))) for c in setup["channels"]),
        "acc A / B (%)": f"{100 * ends['test'][0.0][1]:.1f} / {100 * ends['test'][1.0][1]:.1f}",
    }
    labels = {
        ("naive", "none"): "naive",
        ("naive", "reset-bn"): "naive+reset",
        ("act", "none"): "act",
        ("act", "reset-bn"): "act+reset",
        ("act", "repair"): "act+REPAIR",
        ("wm", "reset-bn"): "wm+reset",
        ("wm", "repair"): "wm+REPAIR",
    }
    for label in labels.values():
        row[label] = "-"
    for which, mode in configs:
        curve = interpolation_curve(
            a,
            targets[which],
            splits,
            alphas=[0.0, 0.5, 1.0],
            repair_mode=mode,
            calibration=calibration,
            endpoints=ends,
            progress=False,
        )
        row[labels[which, mode]] = round(100 * curve.barriers["test"]["accuracy"], 1)
    published = PUBLISHED_RESNET20_FMNIST.get(mult) if name == "resnet" else None
    row["published"] = "-" if published is None else published
    if not extras:
        row["_times"] = {
            "trained s": trained,
            "trained cpu s": trained_cpu,
            "evaluated s": time.perf_counter() - t0,
            "evaluated cpu s": time.process_time() - c0,
        }
        print(
            f"  done: {name} x{mult} blocks {blocks}, {subset} images x {epochs} epochs "
            f"({trained:.0f} s training, {row['_times']['evaluated s']:.0f} s evaluation; CPU: "
            f"{matched_cpu:.0f} s matching, "
            f"{time.process_time() - c0 - matched_cpu:.0f} s curves)",
            flush=True,
        )
        return row, None, []
    ref_perms, ref_sweeps = git_rebasin_algorithm1(spec, a.state_dict(), b.state_dict())
    # the defect this replaced: BatchNorm running statistics in the objective, the forward start only
    import convergent.align._match as match_module

    saved, match_module.STATISTICS = match_module.STATISTICS, ()
    try:
        before = weight_matching(spec, a.state_dict(), b.state_dict(), starts=("forward",))
    finally:
        match_module.STATISTICS = saved
    obj = {
        "model": name,
        "x": mult,
        "before (stats in, forward)": round(
            objective(spec, a.state_dict(), b.state_dict(), before.perms), 2
        ),
        "ours (weight_matching)": round(wm.objective, 2),
        "Algorithm 1": round(objective(spec, a.state_dict(), b.state_dict(), ref_perms), 2),
        "ours - Alg. 1": round(
            wm.objective - objective(spec, a.state_dict(), b.state_dict(), ref_perms), 3
        ),
        "sweeps ours / Alg. 1": f"{wm.iterations} / {ref_sweeps}",
        "trained s": round(trained),
        "evaluated s": round(time.perf_counter() - t0),
    }
    merges = zip_rows(name, mult, a, b, spec, act, calibration, splits, ends) if mult <= 2 else []
    obj["evaluated s"] = round(time.perf_counter() - t0)
    print(
        f"  done: {name} x{mult} ({obj['trained s']} s training, {obj['evaluated s']} s)",
        flush=True,
    )
    return row, obj, merges


#: partial merges: how many groups (in forward order) are merged; the rest stay one per net
PARTIAL = {
    "convnet": {"conv1-3": 3, "conv1-5": 5, "conv1-fc6": 6},
    "resnet": {"stage 1": 2, "stages 1-2": 4},
}


def zip_rows(name, mult, a, b, spec, act, calibration, splits, ends) -> list[dict]:
    """Accuracy of one-to-one merging, ZipIt!-style merging (full and partial) and the ensemble."""
    from convergent.align import evaluate_ensemble, zip_models
    from convergent.align._interpolate import _evaluate, interpolate_state
    from convergent.align._merge import permuted
    from convergent.align._repair import point_statistics, repair

    x, y = splits["test"]

    def acc(model) -> float:
        return round(100 * _evaluate(model, x, y)[1], 1)

    rows = []

    def add(label: str, value: float) -> None:
        rows.append({"model": name, "x": mult, "merge": label, "test acc (%)": value})

    add("A", round(100 * ends["test"][0.0][1], 1))
    add("B", round(100 * ends["test"][1.0][1], 1))
    add("ensemble (mean logits, 2 passes)", round(100 * evaluate_ensemble([a, b], x, y)[1], 1))
    aligned = permuted(b, spec, act.perms)
    mid = copy.deepcopy(a)
    mid.load_state_dict(interpolate_state(a.state_dict(), aligned.state_dict(), 0.5))
    sa, sb = point_statistics(a, calibration), point_statistics(aligned, calibration)
    add("one-to-one: act + average + REPAIR", acc(repair(mid, sa, sb, 0.5, calibration)))
    cache = {}
    for within in (False, True):
        z = zip_models(
            {"a": a, "b": b}, spec, calibration, within=within, repair_mode="repair", **cache
        )
        cache = {"correlations": z.correlations, "statistics": z.statistics}
        label = "ZipIt full, within + across" if within else "ZipIt full, across only"
        add(f"{label} + REPAIR", acc(z.model))
    for label, groups in PARTIAL[name].items():
        z = zip_models(
            {"a": a, "b": b}, spec, calibration, groups=groups, repair_mode="repair", **cache
        )
        add(f"ZipIt partial: {label} merged + REPAIR", acc(z.model))
    return rows


def width_table(args: argparse.Namespace) -> None:
    from convergent.report import format_table

    dataset = "digits" if args.quick else "fashion-mnist"
    models = (args.models or "resnet,convnet").split(",")
    mults = (1, 2) if args.quick else MULTIPLIERS
    print(
        "bench_align --table width: the barrier at alpha = 0.5 between two nets that differ in seed"
    )
    subset, epochs = (300, 1) if args.quick else (WIDTH_SUBSET, WIDTH_EPOCHS)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, {platform.machine()}; "
        f"{dataset}: each pair trained on the first {subset} training images for "
        f"{epochs} epochs (SGD Nesterov, cosine lr 0.02, batch 128, seeds 0 and 1)"
    )
    print(
        f"  barrier = (acc(0) + acc(1)) / 2 - acc(0.5), in points, on the first {WIDTH_TEST} test "
        f"images; matching, REPAIR and BatchNorm resets use the first {WIDTH_CALIBRATION} training "
        "images"
    )
    print(
        "  act = aligned by activation matching (correlation), wm = by weight matching; reset = "
        "BatchNorm statistics recomputed; REPAIR = every hidden channel (conv/linear outputs, "
        "BatchNorm outputs, residual sums) reset to the endpoints' mean statistics"
    )
    print(
        "  published = REPAIR (Jordan et al. 2023), Fashion-MNIST ResNet20 (3 blocks per stage, "
        "trained to convergence), BatchNorm reset/REPAIR: x1 16.4, x2 9.4, x4 2.6, x8 1.4; their "
        "CIFAR-10 ResNet20: 26.0 at x1 -> 1.0 at x32; VGG11 (64-512 channels) CIFAR-10 + REPAIR 4.0"
    )
    t0 = time.perf_counter()
    rows, objs, merges = [], [], []
    for name in models:
        for mult in mults:
            row, obj, merge = width_row(name, mult, dataset, args.quick)
            rows.append(row)
            objs.append(obj)
            merges.extend(merge)
    print()
    print(format_table(rows))
    print()
    print("weight-matching objective (sum of <A, permuted B> over every permuted weight):")
    print(format_table(objs))
    print()
    print(
        "beyond one-to-one (x1, x2): one merged net vs ZipIt!-style merges (greedy pairs of "
        "correlated features, within and across nets; partial = the first groups merged, the "
        "rest kept per net, logits averaged) vs the ensemble, test accuracy:"
    )
    print(format_table(merges))
    print()
    resnet = [r for r in rows if r["model"] == "resnet" and r["x"] >= 2]
    if resnet:
        best = [
            min(v for k, v in r.items() if k in ("act+REPAIR", "act+reset") and v != "-")
            for r in resnet
        ]
        verdict = "met" if all(v <= 5.0 for v in best) else "MISSED"
        detail = ", ".join(f"x{mult}: {v}" for mult, v in zip([r["x"] for r in resnet], best))
        print(
            "target: resnet aligned + REPAIR barrier <= 5 points at width >= 2: "
            f"{verdict} ({detail})"
        )
    print(f"total {time.perf_counter() - t0:.0f} s")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"{flag} takes integers >= 1 separated by commas; got {text!r}")
    return values


def _seed_pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        parts = item.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] == parts[1]:
            raise SystemExit(f"--seeds takes pairs of distinct seeds like 0-1,2-3; got {text!r}")
        pairs.append((int(parts[0]), int(parts[1])))
    return pairs


def training_runs(args: argparse.Namespace) -> list[tuple[int, int, int, int, tuple[int, int]]]:
    """(multiplier, subset, epochs, blocks, seeds) per run: --subset, --epochs, --blocks and
    --seeds are zipped (a single value is repeated), then crossed with --widths."""
    subsets = _int_list("--subset", args.subset)
    epochs = _int_list("--epochs", args.epochs)
    blocks = _int_list("--blocks", args.blocks)
    seeds = _seed_pairs(args.seeds)
    n = max(len(subsets), len(epochs), len(blocks), len(seeds))
    lists = []
    for flag, values in (
        ("--subset", subsets),
        ("--epochs", epochs),
        ("--blocks", blocks),
        ("--seeds", seeds),
    ):
        if len(values) not in (1, n):
            raise SystemExit(f"{flag} has {len(values)} values; give 1 or {n} (one per run)")
        lists.append(values * n if len(values) == 1 else values)
    if args.arch != "resnet" and any(b != 1 for b in lists[2]):
        raise SystemExit(f"--blocks is for resnet only; got --arch {args.arch}")
    return [(mult, *run) for mult in _int_list("--widths", args.widths) for run in zip(*lists)]


def training_table(args: argparse.Namespace) -> None:
    """The width table's row (same columns) for chosen widths, training set sizes, epochs and
    depths, with endpoint accuracies and the CPU time of training and evaluation."""
    from convergent.report import format_table

    dataset = "digits" if args.quick else "fashion-mnist"
    runs = training_runs(args)
    print(
        "bench_align --table training: the width table's barrier at alpha = 0.5 for more training"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, {platform.machine()}; "
        f"{dataset}, {args.arch}: each pair (the 'seeds') trained on the first 'images' "
        "training images for 'epochs' epochs (SGD Nesterov, cosine lr 0.02 -> 0 over the run, "
        "batch 128, weight decay 5e-4); blocks = residual blocks per stage"
    )
    print(
        f"  barrier = (acc(0) + acc(1)) / 2 - acc(0.5), in points, on the first {WIDTH_TEST} test "
        f"images; matching, REPAIR and BatchNorm resets use the first {WIDTH_CALIBRATION} training "
        "images; columns as in --table width"
    )
    print(
        "  published = REPAIR (Jordan et al. 2023), Fashion-MNIST ResNet20 (3 blocks per stage, "
        "trained to convergence), BatchNorm reset/REPAIR: x1 16.4, x2 9.4, x4 2.6, x8 1.4"
    )
    t0 = time.perf_counter()
    rows = []
    for mult, subset, epochs, blocks, seeds in runs:
        row, _, _ = width_row(
            args.arch,
            mult,
            dataset,
            args.quick,
            subset=subset,
            epochs=epochs,
            blocks=blocks,
            seeds=seeds,
            extras=False,
        )
        times = row.pop("_times")
        if args.quick:
            subset, epochs = 300, 1
        rows.append(
            {
                "model": row.pop("model"),
                "x": row.pop("x"),
                "blocks": blocks,
                "images": subset,
                "epochs": epochs,
                "seeds": f"{seeds[0]}, {seeds[1]}",
                **row,
                "train CPU s": round(times["trained cpu s"]),
                "eval CPU s": round(times["evaluated cpu s"]),
            }
        )
    print()
    print(format_table(rows))
    print()
    if args.arch == "resnet":
        for r in rows:
            best = min(r[k] for k in ("act+REPAIR", "act+reset") if r[k] != "-")
            verdict = "met" if best <= 5.0 else "MISSED"
            print(
                f"  resnet x{r['x']} blocks {r['blocks']}, {r['images']} images x {r['epochs']} "
                f"epochs: aligned + REPAIR/reset {best} points: <= 5 {verdict}"
            )
    print(
        "training 0 s when cached; CPU s = process time of this process (one thread); "
        f"total {time.perf_counter() - t0:.0f} s wall"
    )


if __name__ == "__main__":
    main()
