"""The chains of stages: ``convergent demo`` (train -> collect -> analyze -> [interpolate] ->
report), each stage resumable; ``convergent compare`` (two nets and a reference level -> collect ->
analyze -> comparison + report).

Only chains the stage functions (every stage is also its own command). Layout of ``out``:
``zoo/`` (nets), ``stats/`` (joint statistics on the test split; ``stats/fit/`` the training split,
where one-to-many prediction is fitted), ``results/`` (analyses), ``interpolation/`` (optional),
``report/`` (HTML, figures, summary). Re-running after an interruption redoes only what is
missing: finished nets are kept and an unfinished one resumes from its last epoch, finished
statistics and analysed layers are reused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from convergent._errors import ConvergentError
from convergent._manifest import relative_ref
from convergent.align import interpolate_run, merge_run
from convergent.collect import collect_run
from convergent.data import load_dataset
from convergent.models import build_for
from convergent.report import build_report
from convergent.results import Threshold, analyze_run, compare_pair, save_comparison
from convergent.train import default_config, train_zoo
from convergent.zoo import load_dataset_for, load_net, load_zoo, locate_net, weights_digest

#: Demo settings per (architecture, dataset) where the training defaults would not fit the demo's
#: time budget on 2 CPU cores: on Fashion-MNIST a half-width convnet for 3 epochs (about 90% test
#: accuracy), the vit for 3 epochs (about 87.5%).
DEMO_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("convnet", "fashion-mnist"): {"model_kwargs": {"width": 0.5}, "epochs": 3},
    ("vit", "fashion-mnist"): {"epochs": 3},
}


def run_demo(
    out: str | os.PathLike = "runs/demo",
    *,
    dataset: str = "digits",
    data_dir: str | os.PathLike | None = None,
    nets: int = 4,
    arch: str = "convnet",
    model_kwargs: dict[str, Any] | None = None,
    epochs: int | None = None,
    subset: int | None = None,
    mi: bool = True,
    interpolate: bool = False,
    fit_inputs: int | None = 10000,
    formats: tuple[str, ...] = ("png",),
    device: str = "cpu",
    progress: bool | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Run the main job and return ``{"results": Results, "report": path, "seconds": {stage: s}}``.

    Parameters
    ----------
    out : path
        Output directory (created; reused if it holds an earlier run of the same settings).
    dataset, data_dir : dataset name and optional directory (see ``convergent.data``).
    nets : int
        Number of nets (seeds ``0 .. nets-1``).
    arch : str
        Architecture (built-in name or ``package.module:factory``).
    model_kwargs : dict, optional
        Architecture arguments (e.g. ``{"width": 0.5}``).
    epochs, subset : optional training overrides (fewer epochs, first ``subset`` training images).
        Unset, the dataset's training defaults apply, except where :data:`DEMO_DEFAULTS` names
        quicker demo settings (for the built-in convnet).
    mi : bool
        Also mutual-information matching for the first pair (histograms kept at collect time).
    interpolate : bool
        Also the loss barrier between the first two nets, naive vs. aligned (activation matching)
        vs. aligned + REPAIR, and the merge of every net into one (activation matching to the
        first, averaged, REPAIR) next to the members and their ensemble, written to
        ``interpolation/`` and shown in the report.
    fit_inputs : int, optional
        Training inputs whose statistics one-to-many prediction is fitted on (scored on the test
        split).
    formats : tuple of str
        Figure files of the report (``png``; ``svg`` too on request).
    """
    if int(nets) != nets or nets < 2:
        raise ValueError(
            f"The 'nets' parameter of demo must be an integer >= 2 (comparing needs two nets). "
            f"Got {nets!r} instead."
        )
    out = Path(out)
    quick = DEMO_DEFAULTS.get((arch, dataset), {})
    model_kwargs = model_kwargs if model_kwargs is not None else quick.get("model_kwargs")
    epochs = epochs if epochs is not None else quick.get("epochs")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    ds = load_dataset(dataset, data_dir, subset=subset)
    config = default_config(ds.name, epochs=epochs)
    log(f"[1/4] train {nets} x {arch} on {ds.name} ({config.epochs} epochs) -> {out / 'zoo'}")
    train_zoo(
        out / "zoo",
        arch=arch,
        dataset=ds,
        seeds=list(range(nets)),
        config=config,
        model_kwargs=model_kwargs,
        device=device,
        progress=progress,
    )
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    log(
        f"[2/4] collect statistics on the test split (and the train split, to fit one-to-many "
        f"prediction) -> {out / 'stats'}"
    )
    try:
        collect_run(
            out / "stats",
            zoo=out / "zoo",
            data_dir=data_dir,
            split="test",
            fit_split="train",
            fit_inputs=fit_inputs,
            mi="first" if mi else "none",
            device=device,
            progress=progress,
        )
    except ConvergentError as err:
        raise ConvergentError(
            f"{err} (the demo keeps each stage in {out}; use another --out for other settings)"
        ) from err
    seconds["collect"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[3/4] analyze every layer and pair -> {out / 'results'}")
    results = analyze_run(out / "stats", out / "results", progress=progress)
    seconds["analyze"] = time.perf_counter() - t

    if interpolate:
        t = time.perf_counter()
        target = out / "interpolation"
        if (target / "interpolation.json").is_file():
            log(f"[3b] interpolation already in {target}")
        else:
            log(f"[3b] interpolate seed0 -> seed1 (naive, aligned, aligned + repair) -> {target}")
            interpolate_run(
                out / "zoo" / "seed0",
                out / "zoo" / "seed1",
                target,
                align="activation",
                repair_mode="repair",
                data_dir=data_dir,
                progress=progress,
            )
        merged = target / "merged.safetensors"
        if merged.with_suffix(".json").is_file():
            log(f"[3c] merge already in {target}")
        else:
            log(f"[3c] merge the {nets} nets (activation matching + REPAIR) -> {merged}")
            merge_run(
                out / "zoo",
                merged,
                method="activation",
                repair_mode="repair",
                data_dir=data_dir,
                progress=progress,
            )
        seconds["interpolate"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[4/4] report -> {out / 'report'}")
    report = build_report(out / "results", out / "report", formats=formats, progress=progress)
    seconds["report"] = time.perf_counter() - t
    return {"results": results, "report": report, "seconds": seconds}


def _reference_nets(
    net_a: Any, baseline: str | os.PathLike | None, ds: Any, skip: set[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """The nets whose pairs give the reference level: a zoo's (seed-to-seed variation), or the
    architecture of A at initialisation with two seeds (the initialisation null)."""
    models: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    if baseline is not None:
        zoo = load_zoo(baseline)
        for rec in zoo.nets:
            if rec.sha256 in skip:
                continue
            name = f"ref.{rec.name}"
            models[name] = zoo.model(rec.name)
            records.append(
                {
                    "name": name,
                    "arch": rec.arch,
                    "kwargs": dict(rec.kwargs),
                    "seeds": dict(rec.seeds),
                    "source": {"kind": "zoo", "checkpoint": rec.checkpoint, "sha256": rec.sha256},
                }
            )
        if len(models) < 2:
            raise ConvergentError(
                f"The baseline zoo {baseline} holds {len(models)} net(s) other than A and B; the "
                "seed-to-seed reference needs at least 2 (train more seeds)."
            )
        return models, records, "zoo"
    for seed in (0, 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_for(net_a.arch, net_a.kwargs, ds).eval()
        name = f"init.{seed}"
        models[name] = model
        records.append(
            {
                "name": name,
                "arch": net_a.arch,
                "kwargs": dict(net_a.kwargs),
                "seeds": {"init": seed},
                "source": {"kind": "initialisation", "sha256": weights_digest(model)},
            }
        )
    return models, records, "initialisation"


def run_compare(
    a: str | os.PathLike,
    b: str | os.PathLike,
    out: str | os.PathLike = "runs/compare",
    *,
    baseline: str | os.PathLike | None = None,
    arch: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    inputs: str | os.PathLike | None = None,
    vocab: str | os.PathLike | None = None,
    split: str = "test",
    layers: list[str] | None = None,
    max_inputs: int | None = None,
    spatial: str = "positions",
    batch_size: int = 256,
    exact: bool = True,
    thresholds: Sequence[Threshold] = (),
    report: bool = True,
    device: str = "cpu",
    progress: bool | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """``convergent compare A B``: how two nets (two checkpoints, or two nets of a zoo; any
    architecture) differ, layer by layer, next to a reference level, in one pass.

    The reference is the seed-to-seed variation of ``baseline`` (a zoo: every pair of its nets)
    or, without one, the same architecture at initialisation (two seeds). A, B and the reference
    nets are collected together on the same inputs, every pair involved is analysed, and
    ``compare.json`` (:class:`~convergent.results.Comparison`) and a report are written; the
    thresholds (``fc7:cka=0.9``) say whether the check passes. ``batch_size`` and ``exact``
    (float64 per-batch products) are passed to the collection as in ``collect``.

    Returns
    -------
    dict
        ``comparison``, ``results``, ``report`` (path or None), ``seconds`` per part.
    """
    t0 = time.perf_counter()
    out = Path(out)
    seconds: dict[str, float] = {}
    located = [locate_net(a), locate_net(b)]
    ds = None if inputs is not None else load_dataset_for(located, dataset, data_dir)
    net_a, net_b = (load_net(loc, ds, arch=arch, model_kwargs=model_kwargs) for loc in located)
    if net_a.name == net_b.name:
        net_b.name = f"{net_b.name}'"
    models = {net_a.name: net_a.model, net_b.name: net_b.model}
    records = [
        {
            "name": net.name,
            "arch": net.arch,
            "kwargs": dict(net.kwargs),
            "source": {
                "kind": "checkpoint",
                "path": relative_ref(net.path, out / "stats"),
                "sha256": net.sha256,
            },
        }
        for net in (net_a, net_b)
    ]
    ref_models, ref_records, kind = _reference_nets(
        net_a, baseline, ds, {net_a.sha256, net_b.sha256}
    )
    models.update(ref_models)
    records += ref_records
    seconds["load"] = time.perf_counter() - t0
    log(f"[1/3] collect {net_a.name}, {net_b.name} and {len(ref_models)} reference nets ({kind})")
    t = time.perf_counter()
    collect_run(
        out / "stats",
        nets=(models, records),
        dataset=None if ds is None else ds.name,
        data_dir=data_dir,
        subset=None if ds is None else ds.subset,
        inputs=inputs,
        vocab=vocab,
        split=split,
        layers=layers,
        max_inputs=max_inputs,
        spatial=spatial,
        batch_size=batch_size,
        exact=exact,
        pooled=False,
        device=device,
        progress=progress,
    )
    seconds["collect"] = time.perf_counter() - t
    pair = (net_a.name, net_b.name)
    ref_names = [r["name"] for r in ref_records]
    ref_pairs = [(x, y) for i, x in enumerate(ref_names) for y in ref_names[i + 1 :]]
    log(f"[2/3] analyze {pair[0]}~{pair[1]} and {len(ref_pairs)} reference pair(s)")
    t = time.perf_counter()
    results = analyze_run(
        out / "stats", out / "results", pairs=[pair, *ref_pairs], progress=progress
    )
    seconds["analyze"] = time.perf_counter() - t
    comparison = compare_pair(
        results,
        f"{pair[0]}~{pair[1]}",
        [f"{x}~{y}" for x, y in ref_pairs],
        reference_kind=kind,
        thresholds=thresholds,
    )
    path = None
    if report:
        t = time.perf_counter()
        log(f"[3/3] report -> {out / 'report'}")
        save_comparison(out, comparison)  # the report reads it
        path = build_report(out / "results", out / "report", pair=comparison.pair, comparison=out)
        seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    comparison.seconds = dict(seconds)
    save_comparison(out, comparison)
    return {"comparison": comparison, "results": results, "report": path, "seconds": seconds}
