"""The report: one self-contained HTML page that shows what a model learned (``provex report``).

>>> import provex
>>> provex.report(["provex-out/mnist-cnn-sensitivity.pt", "benchmarks/relevance_ordering/results"],
...               "report.html", images="images.pt")          # doctest: +SKIP

``provex.report`` is :func:`write_report`; this package is an app (``cli -> reporting ->
library``): the library never imports it. Sections come from renderers registered in
:mod:`provex.reporting.sections`; inputs are read by :mod:`provex.reporting.sources`.
"""

from __future__ import annotations

from provex.reporting.render import build_report, render_html, write_report
from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import load_inputs, register_results_kind

__all__ = [
    "ReportOptions",
    "Section",
    "build_report",
    "load_inputs",
    "register_results_kind",
    "register_section",
    "render_html",
    "report_after",
    "write_report",
]


def report_after(outputs, out, **options) -> str:
    """For ``--report`` of other commands: write the page for ``outputs`` (paths of what the
    command wrote; ``options`` as for :func:`write_report`, e.g. ``images=x``) and return a
    one-line note naming it and its size."""
    path = write_report(outputs, out, **options)
    size = path.stat().st_size
    return f"report: {path} ({size / 1e6:.1f} MB)"
