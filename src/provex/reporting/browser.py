"""Open a report in headless Chromium (Playwright) with no network: load time, errors, screenshots.

Used by the browser tests and the report benchmark. Needs the ``playwright`` Python package and
a Chromium binary (Debian: ``apt-get install -y chromium``, at ``/usr/bin/chromium``);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_ARGS", "INSTALL_HINT", "chromium_path", "open_report"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Flags for a quiet headless Chromium on a machine without network."""

INSTALL_HINT = (
    "needs Chromium and Playwright: `apt-get install -y chromium` (Debian, /usr/bin/chromium) and "
    "`pip install playwright` (never `playwright install`); or set PROVEX_CHROMIUM=/path/to/chromium"
)


def chromium_path() -> str | None:
    """The Chromium binary: ``$PROVEX_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    env = os.environ.get("PROVEX_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@contextmanager
def open_report(path: str | os.PathLike, width: int = 1500, height: int = 1000) -> Iterator[dict[str, Any]]:
    """Open ``path``; yields ``{"page", "errors", "seconds", "busy_seconds", ...}`` once it is ready.

    ``errors``: console errors and uncaught exceptions; ``seconds``: from navigation start to
    the page's ready mark (the first gallery page and every figure within the first screen
    drawn by Plotly; figures further down are drawn when scrolled to, or by
    ``window.provexDrawAll()``), measured by the page; ``painted_seconds``: to the first
    screen's paint (cards, the selected image's maps as pictures, tables), before plotly.js
    is evaluated.
    Any request leaving the file (network) is aborted and reported as an error.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError(INSTALL_HINT)
    url = Path(path).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))

            def block(route) -> None:
                if route.request.url.startswith(("data:", "file:", "blob:")):
                    route.continue_()
                else:
                    errors.append(f"network request: {route.request.url}")
                    route.abort()

            page.route("**/*", block)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            t0 = time.perf_counter()
            page.goto(url, wait_until="load", timeout=120_000)
            page.wait_for_function("window.provexReady !== undefined", timeout=120_000)
            wall = time.perf_counter() - t0
            ready_ms = page.evaluate("window.provexReady")
            painted_ms = page.evaluate("window.provexPainted === undefined ? null : window.provexPainted")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            yield {
                "page": page,
                "errors": errors,
                "seconds": float(ready_ms) / 1000.0,
                # the first screen painted before plotly.js is evaluated (None: a page without the mark)
                "painted_seconds": None if painted_ms is None else float(painted_ms) / 1000.0,
                "wall_seconds": wall,
                # main-thread time inside tasks (scripts, layout, paint) up to now: idle waits are
                # excluded, but a task is still stretched when other processes hold the CPU
                "busy_seconds": float(metrics.get("TaskDuration", float("nan"))),
                "script_seconds": float(metrics.get("ScriptDuration", float("nan"))),
            }
        finally:
            browser.close()
