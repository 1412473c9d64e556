"""The report in a real browser: headless Chromium (Playwright, no network).

Skipped with an install message where Chromium or Playwright is missing; under CI (``CI`` set)
that is a failure instead, so CI always runs them (.ci/run installs Debian's chromium).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from provex.reporting import write_report
from provex.reporting.browser import INSTALL_HINT, chromium_path, open_report
from report_fixtures import METHODS, concept_results, small_run

ORDERING = Path(__file__).resolve().parents[1] / "benchmarks" / "relevance_ordering" / "results"


def _need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    else:
        missing = chromium_path() is None
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser tests " + INSTALL_HINT)
        pytest.skip("browser tests " + INSTALL_HINT)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory, mnist_model, mnist_samples) -> Path:
    _need_browser()
    x, y = mnist_samples
    root = tmp_path_factory.mktemp("browser")
    small_run(root / "run", mnist_model, x[:7], y[:7], list(range(7)))
    concept_results(root / "concepts", wealth=True)
    return write_report([root / "run", ORDERING, root / "concepts"], root / "report.html", page_size=4)


def _z(page, k: int = 0) -> str:
    return page.evaluate(f"JSON.stringify(document.querySelectorAll('#gallery-0-root .detail .pv-map')[{k}].data[0].z)")


def test_page_in_chromium(page_path, tmp_path) -> None:
    with open_report(page_path) as r:
        page = r["page"]
        assert r["errors"] == []
        # figures far below the viewport wait until they are scrolled to
        assert page.evaluate("document.getElementById('concepts-0-wealth-8').dataset.drawn") is None
        page.evaluate("window.provexDrawAll()")
        # one curve per method in each ordering chart
        n_curves = "id => document.getElementById(id).data.filter(t => t.meta === 'curve').length"
        assert page.evaluate(n_curves, "ordering-0-distortion") == 10
        assert page.evaluate(n_curves, "ordering-run-0-accuracy") == len(METHODS)
        # the detail view shows every method's map (plus rc-rde's two extra maps)
        shown = page.evaluate(
            "[...document.querySelectorAll('#gallery-0-root .detail .pv-map')].map(d => d.dataset.method)"
        )
        assert shown == ["sensitivity", "rc-rde", "rc-rde k=50", "rc-rde k=100", "smoothgrad"]
        # selecting another image changes the maps shown
        before = _z(page)
        page.click('#gallery-0-root .card[data-i="2"]')
        page.wait_for_function(
            "z => JSON.stringify(document.querySelector('#gallery-0-root .detail .pv-map').data[0].z) !== z", arg=before
        )
        assert _z(page) != before
        assert page.locator('#gallery-0-root .card[data-i="2"]').get_attribute("class") == "card selected"
        # pagination: 7 images, 4 per page
        assert page.locator("#gallery-0-root .card").count() == 4
        page.click("#gallery-0-root .p-next")
        assert page.locator("#gallery-0-root .card").count() == 3
        # the colour scale switch: per map, the sensitivity map spans its own range
        shared = page.evaluate("document.querySelector('#gallery-0-root .detail .pv-map').data[0].zmax")
        page.select_option("#gallery-0-root .f-scale", "per-map")
        page.wait_for_function(
            "s => document.querySelector('#gallery-0-root .detail .pv-map').data[0].zmax !== s", arg=shared
        )
        own = page.evaluate("document.querySelector('#gallery-0-root .detail .pv-map').data[0].zmax")
        assert own < shared
        # sort by faithfulness: the first card has the smallest distortion area of rc-rde
        page.select_option("#gallery-0-root .f-sort", "best:rc-rde")
        data = json.loads(page.evaluate("document.getElementById('provex-data').textContent"))
        items = next(iter(data["galleries"].values()))["items"]
        best = min(items, key=lambda it: it["auc"]["rc-rde"]["d"])
        assert page.locator("#gallery-0-root .card").first.get_attribute("data-i") == str(best["i"])
        # concept section drawn: bars before/after FDR and the wealth paths
        assert page.evaluate("document.getElementById('concepts-0-rate-3').data.length") == 2
        assert page.evaluate("document.getElementById('concepts-0-wealth-8').data.length") == 3
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        assert r["errors"] == []


def test_first_screen_is_painted_before_the_plotting_library(page_path, tmp_path) -> None:
    """The cards and the selected image's maps (as pictures) are painted before plotly.js is
    evaluated; a page whose library is missing still shows them and says so once."""
    with open_report(page_path) as r:
        times = r["page"].evaluate("window.provexTimes")
        assert times["painted"] <= times["plotlyEvaluated"] <= times["ready"]
        assert r["painted_seconds"] <= r["seconds"]
        # once the library is there, the pictures are replaced by Plotly heat maps
        assert r["page"].locator("#gallery-0-root .detail .pv-map.preview").count() == 0
        assert r["page"].locator("#gallery-0-root .detail .pv-map.js-plotly-plot").count() == 5
    html = page_path.read_text(encoding="utf-8")
    start = html.index('<script id="provex-plotly" type="text/plain">')
    end = html.index("</script>", start)
    stripped = tmp_path / "no-plotly.html"
    stripped.write_text(html[:start] + '<script id="provex-plotly" type="text/plain">' + html[end:], encoding="utf-8")
    from playwright.sync_api import sync_playwright

    from provex.reporting.browser import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(stripped.resolve().as_uri(), wait_until="load")
            page.wait_for_function("document.body.dataset.painted === '1'")
            previews = page.locator("#gallery-0-root .detail .pv-map.preview")
            assert previews.count() == 3  # one picture per method (per-rate maps need the library)
            assert previews.first.locator("img").count() == 2  # the image under the map
            assert page.locator("#gallery-0-root .card").count() == 4
            page.wait_for_function("window.provexPainted !== undefined")
            assert len(errors) == 1 and "plotly.js is missing" in errors[0]
        finally:
            browser.close()
