"""Section renderers: each turns the report's inputs into zero or more page sections.

A renderer is a function ``(inputs, options) -> list[Section]`` registered with
:func:`register_section` in its own module, listed in :data:`SECTION_MODULES`. Adding a
section (e.g. region tests) is one module: read your results from ``inputs.results_of(KIND)``
(teach the loader your ``results.json`` with
:func:`provex.reporting.sources.register_results_kind`), return :class:`Section` objects whose
``template`` is a Jinja2 file in ``provex/reporting/templates/sections/`` and whose
``figures`` are Plotly figure dicts (drawn by the page's glue, no JavaScript of your own), and
add the module's name to :data:`SECTION_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SECTION_MODULES", "ReportOptions", "Section", "register_section", "renderers"]

SECTION_MODULES: list[str] = [
    "provex.reporting.sections.gallery",
    "provex.reporting.sections.ordering",
    "provex.reporting.sections.concepts",
    "provex.reporting.sections.region_tests",
    "provex.reporting.sections.lpn",
    "provex.reporting.sections.benchmarks",
]
"""Modules that register section renderers (imported in order when a report is built)."""


@dataclass
class ReportOptions:
    """Choices that shape the page (sizes, class names, title)."""

    title: str = "provex report"
    labels: list[str] | None = None
    page_size: int = 48
    thumb_side: int = 96
    detail_side: int = 128


@dataclass
class Section:
    """One part of the page.

    ``template``: a file in ``templates/sections/`` rendered with ``context`` (and ``section``);
    ``figures``: Plotly figures ``{div_id: {"data": [...], "layout": {...}}}`` drawn on load;
    ``data``: JSON for the page's glue under ``section.id``; ``settings``: what produced it.
    """

    id: str
    title: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    nav: bool = True


Renderer = Callable[..., list[Section]]
_RENDERERS: dict[str, tuple[int, Renderer]] = {}


def register_section(name: str, order: int) -> Callable[[Renderer], Renderer]:
    """Decorator: register a renderer; sections appear in increasing ``order``."""

    def deco(fn: Renderer) -> Renderer:
        _RENDERERS[name] = (order, fn)
        return fn

    return deco


def renderers() -> list[tuple[str, Renderer]]:
    """Every registered renderer, in page order (imports :data:`SECTION_MODULES` first)."""
    for mod in SECTION_MODULES:
        importlib.import_module(mod)
    return [(name, fn) for name, (_, fn) in sorted(_RENDERERS.items(), key=lambda kv: (kv[1][0], kv[0]))]
