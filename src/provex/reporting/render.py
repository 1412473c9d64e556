"""Assemble the page: sections rendered with Jinja2, data and Plotly inlined into one HTML file."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from provex.io import atomic_write
from provex.reporting.sections import ReportOptions, Section, renderers
from provex.reporting.sources import Inputs, load_inputs

__all__ = ["build_report", "render_html", "write_report"]

PLOTLY_BUNDLE = "plotly-cartesian.min.js"
"""plotly.js's cartesian bundle (scatter, bar, heatmap, ...; 1.5 MB against 4.8 MB for the full one)."""


def _static(name: str) -> str:
    return resources.files("provex.reporting").joinpath("static", name).read_text(encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _clean(o: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), recursively."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _script_json(o: Any) -> Markup:
    text = json.dumps(_clean(json.loads(json.dumps(o, default=_json_default))), separators=(",", ":"))
    # inside <script>: "</" must not close the element
    return Markup(text.replace("</", "<\\/"))


def build_report(inputs: Inputs, options: ReportOptions | None = None) -> list[Section]:
    """Every section the inputs give, in page order."""
    options = options or ReportOptions()
    sections: list[Section] = []
    for _, fn in renderers():
        sections.extend(fn(inputs, options))
    return sections


def render_html(
    sections: Sequence[Section], options: ReportOptions, input_names: Sequence[str], report_settings: dict[str, Any]
) -> str:
    """The page as one string (no external resource)."""
    from provex import __version__

    env = Environment(
        loader=PackageLoader("provex.reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.policies["json.dumps_kwargs"] = {"default": _json_default, "sort_keys": False}
    figures: dict[str, Any] = {}
    galleries: dict[str, Any] = {}
    for s in sections:
        figures.update(s.figures)
        if s.template == "gallery.html.j2":
            galleries[s.id] = s.data
    settings = {
        "report": report_settings,
        "inputs": {s.id: _clean(json.loads(json.dumps(s.settings, default=_json_default))) for s in sections},
    }
    return env.get_template("report.html.j2").render(
        title=options.title,
        version=__version__,
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        inputs=list(input_names),
        sections=sections,
        settings=settings,
        data_json=_script_json({"figures": figures, "galleries": galleries}),
        plotly_js=Markup(_static(PLOTLY_BUNDLE)),
        glue_js=Markup(_static("report.js")),
    )


def write_report(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike = "report.html",
    *,
    images: torch.Tensor | str | os.PathLike | None = None,
    labels: Sequence[str] | str | os.PathLike | None = None,
    allow_mixed: bool = False,
    title: str | None = None,
    page_size: int = 48,
    thumb_side: int = 96,
    detail_side: int = 128,
) -> Path:
    """Write one self-contained HTML page showing ``inputs`` (``provex report``); returns its path.

    Args:
        inputs: saved explanations (``.pt``), dataset-run folders, results folders of the
            ordering / h-Shap / betting / LPN benchmarks and ``provex test-concepts``.
        out: the HTML file (written atomically).
        images: the images the ``.pt`` explanations explain, (N, C, H, W) tensor or a
            ``.pt`` / ``.npy`` file (run folders carry their own).
        labels: class names, a sequence or a text file with one name per line.
        allow_mixed: report inputs of different models together (refused otherwise).
        page_size: gallery cards per page; ``thumb_side`` / ``detail_side``: the longest side
            of gallery thumbnails and of detail-view maps (larger maps are block-averaged).
    """
    for name, v, lo in (("page_size", page_size, 1), ("thumb_side", thumb_side, 8), ("detail_side", detail_side, 8)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    label_list = _labels(labels)
    image_tensor = _images(images)
    data = load_inputs(paths, images=image_tensor, labels=label_list, allow_mixed=allow_mixed)
    options = ReportOptions(
        title=title or "provex report",
        labels=label_list,
        page_size=page_size,
        thumb_side=thumb_side,
        detail_side=detail_side,
    )
    sections = build_report(data, options)
    from provex import __version__

    report_settings = {
        "provex_version": __version__,
        "inputs": [str(p) for p in paths],
        "allow_mixed": allow_mixed,
        "labels": label_list,
        "page_size": page_size,
        "thumb_side": thumb_side,
        "detail_side": detail_side,
        "plotly": PLOTLY_BUNDLE,
    }
    html = render_html(sections, options, [str(p) for p in paths], report_settings)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"out must be an .html file, got {out}")
    with atomic_write(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out


def _labels(labels: Sequence[str] | str | os.PathLike | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if not p.is_file():
            raise ValueError(f"labels: no such file {p}")
        names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise ValueError(f"labels: {p} holds no class name")
        return names
    names = list(labels)
    if not all(isinstance(n, str) for n in names):
        raise ValueError("labels must be class names (strings)")
    return names


def _images(images: torch.Tensor | str | os.PathLike | None) -> torch.Tensor | None:
    if images is None or isinstance(images, torch.Tensor):
        return images
    p = Path(images)
    if not p.is_file():
        raise ValueError(f"images: no such file {p}")
    try:
        if p.suffix == ".npy":
            import numpy as np

            t = torch.from_numpy(np.load(p, allow_pickle=False))
        else:
            t = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"images: {p} is not a tensor file ({err.__class__.__name__})") from None
    if not isinstance(t, torch.Tensor) or t.ndim != 4:
        raise ValueError(f"images: {p} must hold one (N, C, H, W) tensor")
    return t.float()
