"""How long the report of the digits demo takes to build, measured side by side in one run.

The report reads results only. Rows, each the best of ``--repeats`` builds into a fresh folder:

- ``png``: the default (every figure once, as PNG, embedded in the page; the layers' figures drawn
  by one forked process per CPU);
- ``png, one process``: the same drawn in this process only (``workers=1``);
- ``png+svg``: the same plus SVG files (``--formats png,svg``);
- ``floor``: rendering the page from figures already drawn (Jinja2 and base64 only): what is
  left when no figure is drawn.

Target (issue 11): the default build in at most 5 s on 2 idle cores. The demo run is made once in
``benchmarks/.cache/demo`` (train, collect, analyze; about 1.5 minutes on 2 cores) and reused.

Usage: python benchmarks/bench_report.py [--repeats 3] [--out benchmarks/.cache/demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / ".cache" / "demo"))
    args = parser.parse_args()
    os.environ.setdefault("CONVERGENT_NO_PROGRESS", "1")
    import torch

    from convergent.pipeline import run_demo
    from convergent.report import _build, build_report

    torch.set_num_threads(2)
    out = Path(args.out)
    if not (out / "results" / "results.json").exists():
        run_demo(out, progress=False, log=lambda _: None)
    results_dir = out / "results"
    rows = []
    cases = (
        ("png", ("png",), None),
        ("png, one process", ("png",), 1),
        ("png+svg", ("png", "svg"), None),
    )
    for label, formats, workers in cases:
        best = float("inf")
        for _ in range(args.repeats):
            target = Path(tempfile.mkdtemp())
            t0 = time.perf_counter()
            build_report(results_dir, target, formats=formats, workers=workers, progress=False)
            best = min(best, time.perf_counter() - t0)
            shutil.rmtree(target)
        rows.append((label, best))
    # the floor: the same page with every figure replaced by one already drawn PNG
    drawn = Path(tempfile.mkdtemp())
    build_report(results_dir, drawn, progress=False)
    png = next((drawn / "figures").glob("*.png")).read_bytes()

    class Cached:
        formats = ["png"]

        def __call__(self, figure, stem, alt, caption=""):
            import base64

            return {"data": base64.b64encode(png).decode(), "alt": alt, "caption": caption}

    original = _build._Figures
    _build._Figures = lambda directory, formats: Cached()  # type: ignore[assignment]
    try:
        best = float("inf")
        for _ in range(args.repeats):
            target = Path(tempfile.mkdtemp())
            t0 = time.perf_counter()
            build_report(results_dir, target, progress=False)
            best = min(best, time.perf_counter() - t0)
            shutil.rmtree(target)
    finally:
        _build._Figures = original
    rows.append(("floor (no figure drawn)", best))
    shutil.rmtree(drawn)
    layers = len(list((results_dir / "arrays").glob("*.safetensors")))
    print(
        f"report of the digits demo ({layers} layers, 4 nets), best of {args.repeats}, "
        f"{os.cpu_count()} cores, torch threads 2; target: png build <= {TARGET_SECONDS:.0f} s"
    )
    print(f"{'build':<26}{'seconds':>9}{'x floor':>9}{'x target':>10}")
    floor = rows[-1][1]
    for label, seconds in rows:
        print(f"{label:<26}{seconds:>9.2f}{seconds / floor:>9.2f}{seconds / TARGET_SECONDS:>10.2f}")


if __name__ == "__main__":
    main()
