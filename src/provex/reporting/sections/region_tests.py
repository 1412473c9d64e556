"""Region tests (``provex test-regions``, ``"NAME+test"``): which regions of a map are significant.

Per result file: the test, level and multiplicity control; a scatter of every tested region
(area in pixels against -log10 p, or log10 e for betting) coloured by the decision, with the
rejection threshold drawn; a per-image table (regions tested, significant, model calls); and
the command's own figure (regions outlined on the images) when it sits beside the JSON.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import Inputs

__all__ = ["region_test_sections"]

MAX_ROWS = 200  # per-image table rows shown (the rest are summarised)


def _evidence(region: dict[str, Any], betting: bool) -> float | None:
    """-log10 p (XRT) or log10 e (betting): larger is stronger evidence against the null."""
    value = region.get("e_value") if betting else region.get("p_value")
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return math.log10(value) if betting else -math.log10(value)


def _scatter(d: dict[str, Any], sid: str) -> dict[str, dict[str, Any]]:
    betting = d.get("test") == "betting"
    alpha = float(d.get("alpha", 0.05))
    traces = []
    for rejected, name, colour in ((True, "significant", "#d62728"), (False, "not significant", "#7f7f7f")):
        xs, ys, text = [], [], []
        for img in d.get("images", []):
            for r in img.get("regions", []):
                ev = _evidence(r, betting)
                if bool(r.get("rejected")) != rejected or ev is None:
                    continue
                xs.append(r["area"])
                ys.append(ev)
                text.append(f"image {img['image']}, region {r['region']}, {r.get('model_calls', 0)} calls")
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": xs,
                "y": ys,
                "text": text,
                "marker": {"color": colour, "size": 6, "opacity": 0.75},
                "hovertemplate": "%{text}<br>area %{x} px<br>%{y:.2f}<extra></extra>",
            }
        )
    label = "log10 e-value" if betting else "-log10 p-value"
    line = math.log10(1 / alpha)  # a single test's threshold (the control may ask for more)
    return {
        f"{sid}-scatter": {
            "data": traces,
            "layout": {
                "title": {"text": "every tested region", "font": {"size": 13}, "x": 0.02, "xanchor": "left"},
                "xaxis": {"title": {"text": "region area (pixels)"}, "type": "log"},
                "yaxis": {"title": {"text": label}},
                "shapes": [
                    {
                        "type": "line",
                        "xref": "paper",
                        "x0": 0,
                        "x1": 1,
                        "y0": line,
                        "y1": line,
                        "line": {"dash": "dot", "color": "#444", "width": 1},
                    }
                ],
            },
        }
    }


def _rows(d: dict[str, Any], betting: bool) -> list[dict[str, Any]]:
    rows = []
    for img in d.get("images", [])[:MAX_ROWS]:
        regions = img.get("regions", [])
        best = [e for e in (_evidence(r, betting) for r in regions) if e is not None]
        rows.append(
            {
                "image": img["image"],
                "target": img.get("target"),
                "regions": len(regions),
                "rejected": sum(bool(r.get("rejected")) for r in regions),
                "best": max(best) if best else None,
                "calls": sum(int(r.get("model_calls", 0)) for r in regions),
            }
        )
    return rows


@register_section("region-tests", order=35)
def region_test_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """One section per region-test result file."""
    out = []
    for k, r in enumerate(inputs.results_of("region-tests")):
        d = r.data
        sid = f"region-tests-{k}"
        betting = d.get("test") == "betting"
        png = None
        if r.file is not None and r.file.with_suffix(".png").is_file():
            raw = r.file.with_suffix(".png").read_bytes()
            png = "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
        settings = dict(d.get("settings") or {})
        name = r.file.name if r.file is not None else str(r.path)
        out.append(
            Section(
                id=sid,
                title=f"Region tests: {name} ({d.get('test')}, alpha {d.get('alpha')})",
                template="region_tests.html.j2",
                context={
                    "summary": d.get("summary") or {},
                    "control": d.get("control"),
                    "alpha": d.get("alpha"),
                    "betting": betting,
                    "rows": _rows(d, betting),
                    "more": max(0, len(d.get("images", [])) - MAX_ROWS),
                    "png": png,
                    "settings": settings,
                },
                figures=_scatter(d, sid),
                settings={**settings, "path": str(r.file or r.path)},
            )
        )
    return out
