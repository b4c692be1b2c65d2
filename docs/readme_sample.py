"""Regenerate the README's sample output from an actual run of the main job.

    python docs/readme_sample.py                  # runs `convergent demo` into runs/readme-demo
    python docs/readme_sample.py --out DIR        # elsewhere (an existing run: the sample is kept)
    python docs/readme_sample.py --screenshot     # also docs/report-screenshot.png (Chromium)

It replaces the block after ``<!-- demo-summary -->`` in README.md with what ``convergent demo``
printed (the layer table and its conventions), the nets' accuracies and the stages' timings, so
the README shows numbers a user can reproduce. ``tests/test_readme.py`` checks that the README's
block has the format this script writes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from convergent.pipeline import run_demo
from convergent.report import terminal_summary
from convergent.results import Results

MARKER = "<!-- demo-summary -->"
ROOT = Path(__file__).resolve().parents[1]


def accuracy_line(results: Results) -> str:
    """``nets: seed0 97.1%, ...`` (test accuracy at the end of training)."""
    nets = results.run.get("nets", [])
    parts = [
        f"{n['name']} {100 * n['trained']['test_accuracy']:.1f}%"
        for n in nets
        if isinstance(n, dict) and n.get("trained", {}).get("test_accuracy") is not None
    ]
    return "test accuracy: " + ", ".join(parts)


def sample_block(results: Results, seconds: dict[str, float] | None, report: str) -> str:
    """The fenced block the README shows."""
    lines = [terminal_summary(results), "", accuracy_line(results)]
    if seconds:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        lines.append(f"time: {stages} (total {sum(seconds.values()):.1f} s)")
    lines.append(f"report: {report}")
    return "```\n" + "\n".join(lines) + "\n```"


def replace_block(readme: str, block: str) -> str:
    """README text with the fenced block after the marker replaced."""
    pattern = re.compile(re.escape(MARKER) + r"\n```\n.*?\n```", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no fenced block after {MARKER}.")
    return pattern.sub(lambda _: f"{MARKER}\n{block}", readme)


def screenshot(report: Path, target: Path) -> None:
    """The report's summary (heading, note, table) above its trend figure, as one PNG, taken by
    headless Chromium (Debian's ``chromium``) through Playwright."""
    import io
    import shutil

    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        page = browser.new_page(viewport={"width": 1800, "height": 1000}, device_scale_factor=1)
        page.goto(report.resolve().as_uri())
        top = page.locator("h2#summary").bounding_box()
        table = page.locator("h2#summary ~ table").first.bounding_box()
        left = min(top["x"], table["x"]) - 16
        clip = {
            "x": left,
            "y": top["y"] - 8,
            "width": max(top["width"], table["x"] + table["width"] - left) + 16,
            "height": table["y"] + table["height"] - top["y"] + 16,
        }
        parts = [page.screenshot(clip=clip, full_page=True)]
        parts.append(page.locator("h2#summary ~ figure").first.screenshot())
        browser.close()
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in parts]
    width = max(i.width for i in images)
    sheet = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        sheet.paste(image, (0, y))
        y += image.height
    sheet.save(target, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="runs/readme-demo", help="run folder (default: %(default)s)"
    )
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help="README to update")
    parser.add_argument(
        "--screenshot", action="store_true", help="also redraw docs/report-screenshot.png"
    )
    args = parser.parse_args(argv)
    fresh = not (Path(args.out) / "report" / "report.html").exists()
    done: dict[str, Any] = run_demo(args.out, progress=False)
    if fresh:
        block = sample_block(done["results"], done["seconds"], "runs/demo/report/report.html")
        path = Path(args.readme)
        path.write_text(replace_block(path.read_text(), block))
    else:
        print(
            f"README sample left as it is: {args.out} holds an earlier run, whose stages were not "
            f"timed now; delete {args.out} to regenerate it"
        )
    if args.screenshot:
        screenshot(done["report"], ROOT / "docs" / "report-screenshot.png")
    where = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    if fresh:
        print(f"README sample updated from {args.out} (timed; {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
