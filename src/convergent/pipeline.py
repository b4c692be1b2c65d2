"""The chains of stages: ``convergent demo`` (train -> collect -> analyze -> [interpolate] ->
report), each stage resumable.

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
from pathlib import Path
from typing import Any

from convergent._errors import ConvergentError
from convergent.align import interpolate_run
from convergent.collect import collect_run
from convergent.data import load_dataset
from convergent.report import build_report
from convergent.results import analyze_run
from convergent.train import default_config, train_zoo

#: Demo settings per dataset where the training defaults would not fit the demo's time budget on 2
#: CPU cores: Fashion-MNIST uses a half-width convnet for 3 epochs (about 90% test accuracy).
DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"model_kwargs": {"width": 0.5}, "epochs": 3},
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
        vs. aligned + REPAIR, written to ``interpolation/`` and shown in the report.
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
    quick = DEMO_DEFAULTS.get(dataset, {}) if arch == "convnet" else {}
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
        seconds["interpolate"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[4/4] report -> {out / 'report'}")
    report = build_report(out / "results", out / "report", formats=formats, progress=progress)
    seconds["report"] = time.perf_counter() - t
    return {"results": results, "report": report, "seconds": seconds}
