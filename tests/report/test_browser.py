"""The generated report in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright. No console errors, every image loaded with a non-zero size, one summary row per layer,
and a screenshot. If the browser is missing this test fails: it is never skipped silently."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# flags for a closed network and a root user (see the environment notes in README)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_renders_in_headless_chromium(tiny_demo, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        "Debian's chromium is needed for the browser test: apt-get install -y chromium "
        "(.ci/run's test command installs it)."
    )
    out, done, _ = tiny_demo
    report = done["report"]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            rows = page.locator("#summary-table tbody tr").count()
            layers = len(done["results"].layers)
            nav = page.eval_on_selector_all("#nav a", "links => links.map(a => a.hash)")
            # the navigation bar stays on screen and every link lands on its section
            page.click(f'#nav a[href="#layer-{list(done["results"].layers)[-1]}"]')
            landed = page.evaluate("window.location.hash")
            nav_visible = page.locator("#nav").is_visible()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert errors == []
    assert len(sizes) >= 1 + 5 * layers  # trends + per-layer figures
    assert all(complete and w > 0 and h > 0 for complete, w, h in sizes), sizes
    assert rows == layers
    assert nav == ["#run", "#summary", "#similarity"] + [
        f"#layer-{n}" for n in done["results"].layers
    ]
    assert landed == f"#layer-{list(done['results'].layers)[-1]}" and nav_visible
    assert shot.stat().st_size > 10_000
