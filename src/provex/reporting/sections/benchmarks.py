"""The h-Shap and testing-by-betting benchmarks' results (tables, one chart each, their figures)."""

from __future__ import annotations

import base64
from typing import Any

from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import Inputs, short_path

__all__ = ["benchmark_sections"]


def _pngs(path, limit: int = 2_000_000) -> list[dict[str, str]]:
    return [
        {"name": f.name, "uri": "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode()}
        for f in sorted(path.glob("*.png"))
        if f.stat().st_size <= limit
    ]


def _hshap(r, k: int) -> Section:
    d = r.data
    rows = d["results"]
    fams: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        fams.setdefault(row.get("family", "?"), []).append(row)
    data = [
        {
            "type": "scatter",
            "mode": "markers+lines",
            "name": fam,
            "x": [x.get("evaluations_per_image") for x in rs],
            "y": [x.get("f1_mean") for x in rs],
            "error_y": {"type": "data", "array": [x.get("f1_sem") for x in rs], "visible": True},
            "text": [x.get("name") for x in rs],
            "hovertemplate": "%{text}<br>%{x:.0f} evaluations / image<br>f1 %{y:.3f}<extra></extra>",
        }
        for fam, rs in fams.items()
    ]
    sid = f"hshap-{k}"
    fig = {
        "data": data,
        "layout": {
            "title": {"text": "f1 of the map against the true cross, by cost", "font": {"size": 13}},
            "xaxis": {"type": "log", "title": {"text": "model evaluations per image"}},
            "yaxis": {"title": {"text": "f1 (mean ± s.e.)"}},
            "height": 380,
            "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
        },
    }
    return Section(
        id=sid,
        title=f"h-Shap benchmark: {short_path(r.path)}",
        template="hshap.html.j2",
        context={"rows": rows, "goal": d.get("goal"), "pngs": _pngs(r.path)},
        figures={f"{sid}-f1": fig},
        settings={**(d.get("settings") or {}), "model": d.get("model"), "path": str(r.path)},
    )


def _betting(r, k: int) -> Section:
    d = r.data
    sid = f"betting-{k}"
    figures = {}
    sweep = d.get("sweep")
    if isinstance(sweep, dict) and "b2" in sweep:
        figures[f"{sid}-sweep"] = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": name,
                    "x": sweep["b2"],
                    "y": v["rejection_rate"],
                    "hovertemplate": f"{name}<br>b2 %{{x}}<br>rejection rate %{{y:.2f}}<extra></extra>",
                }
                for name, v in sweep.items()
                if name != "b2" and isinstance(v, dict)
            ],
            "layout": {
                "title": {"text": "synthetic experiment: rejection rate on z2 against b2", "font": {"size": 13}},
                "xaxis": {"title": {"text": "b2 (effect of z2)"}},
                "yaxis": {"title": {"text": "rejection rate"}, "range": [0, 1.05]},
                "height": 360,
                "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
            },
        }
    return Section(
        id=sid,
        title=f"Testing by betting benchmark: {short_path(r.path)}",
        template="betting.html.j2",
        context={"synthetic": d.get("synthetic") or [], "fdr": d.get("fdr") or [], "pngs": _pngs(r.path)},
        figures=figures,
        settings={**(d.get("settings") or {}), "path": str(r.path), "environment": d.get("environment")},
    )


@register_section("benchmarks", order=50)
def benchmark_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """h-Shap and betting benchmark results."""
    out = [_hshap(r, k) for k, r in enumerate(inputs.results_of("hshap"))]
    out += [_betting(r, k) for k, r in enumerate(inputs.results_of("betting"))]
    return out
