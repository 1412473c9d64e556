"""Concept tests (``provex test-concepts``): rejection rate, rejection time and wealth, per class.

Per class logit: the rejection rate of each concept before and after e-BH FDR control (bars,
with the level alpha marked), the mean rejection time tau / tau_max, the table the command
prints, and the wealth paths: drawn from ``wealth`` in the results when the command stored
them (``{concept: [path per repeat]}``), otherwise the command's own PNG is embedded.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import Inputs

__all__ = ["concept_sections"]


def _bars(cls: str, rows: list[dict[str, Any]], alpha: float, fdr: bool, sid: str) -> dict[str, dict[str, Any]]:
    names = [r["concept"] for r in rows]
    data = [
        {
            "type": "bar",
            "name": "rejection rate",
            "x": names,
            "y": [r["rejection_rate"] for r in rows],
            "marker": {"color": "#1f77b4"},
            "hovertemplate": "%{x}<br>rejection rate %{y:.2f}<extra></extra>",
        }
    ]
    if fdr:
        data.append(
            {
                "type": "bar",
                "name": "after e-BH (FDR)",
                "x": names,
                "y": [r.get("fdr_rejection_rate") for r in rows],
                "marker": {"color": "#ff7f0e"},
                "hovertemplate": "%{x}<br>e-BH rejection rate %{y:.2f}<extra></extra>",
            }
        )
    rate = {
        "data": data,
        "layout": {
            "title": {"text": f"class {cls}: rejection rate", "font": {"size": 13}, "x": 0.02, "xanchor": "left"},
            "barmode": "group",
            "yaxis": {"title": {"text": "fraction of repeats rejected"}, "range": [0, 1.05]},
            "xaxis": {"automargin": True, "tickangle": 30},
            "shapes": [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": alpha,
                    "y1": alpha,
                    "line": {"dash": "dot", "color": "#444", "width": 1},
                }
            ],
            "annotations": [
                {"xref": "paper", "x": 1, "y": alpha, "text": f"alpha = {alpha:g}", "showarrow": False, "yshift": 8}
            ],
            "margin": {"l": 55, "r": 10, "t": 40, "b": 110},
            "height": 360,
            "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        },
    }
    tau = {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [r["mean_tau"] for r in rows],
                "y": names,
                "marker": {"color": "#2ca02c"},
                "hovertemplate": "%{y}<br>mean tau / tau_max %{x:.3f}<extra></extra>",
                "name": "mean tau / tau_max",
            }
        ],
        "layout": {
            "title": {"text": f"class {cls}: rejection time (earlier = more important)", "font": {"size": 13}},
            "xaxis": {"title": {"text": "mean tau / tau_max (non-rejections count as 1)"}, "range": [0, 1.02]},
            "yaxis": {"autorange": "reversed"},
            "margin": {"l": 180, "r": 10, "t": 40, "b": 50},
            "height": 360,
        },
    }
    return {f"{sid}-rate-{cls}": rate, f"{sid}-tau-{cls}": tau}


def _wealth(cls: str, wealth: dict[str, list[list[float]]], alpha: float, sid: str) -> dict[str, dict[str, Any]]:
    data = []
    for k, (concept, paths) in enumerate(wealth.items()):
        for r, path in enumerate(paths):
            y = [None if v is None or not math.isfinite(v) else v for v in path]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": list(range(len(y))),
                    "y": y,
                    "name": concept,
                    "legendgroup": concept,
                    "showlegend": r == 0,
                    "opacity": 0.45,
                    "line": {"width": 1, "color": f"hsl({(k * 47) % 360},65%,45%)"},
                    "hovertemplate": f"{concept}<br>step %{{x}}<br>wealth %{{y:.3g}}<extra></extra>",
                }
            )
    return {
        f"{sid}-wealth-{cls}": {
            "data": data,
            "layout": {
                "title": {"text": f"class {cls}: wealth per repeat (reject at 1/alpha)", "font": {"size": 13}},
                "yaxis": {"type": "log", "title": {"text": "wealth"}},
                "xaxis": {"title": {"text": "test step"}},
                "shapes": [
                    {
                        "type": "line",
                        "xref": "paper",
                        "x0": 0,
                        "x1": 1,
                        "y0": 1 / alpha,
                        "y1": 1 / alpha,
                        "line": {"dash": "dash", "color": "#c00"},
                    }
                ],
                "height": 380,
                "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
            },
        }
    }


@register_section("concepts", order=30)
def concept_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """One section per ``test-concepts`` results file."""
    out = []
    for k, r in enumerate(inputs.results_of("concepts")):
        d = r.data
        st = d.get("settings") or {}
        alpha = float(st.get("alpha", 0.05))
        fdr = bool(st.get("fdr"))
        sid = f"concepts-{k}"
        figures: dict[str, Any] = {}
        classes = []
        for cls, res in (d.get("results") or {}).items():
            rows = res.get("rows") or []
            figures.update(_bars(cls, rows, alpha, fdr, sid))
            entry: dict[str, Any] = {"cls": cls, "rows": rows, "wealth_png": None, "wealth_plot": False}
            if isinstance(res.get("wealth"), dict):
                figures.update(_wealth(cls, res["wealth"], alpha, sid))
                entry["wealth_plot"] = True
            elif res.get("figure") and (r.path / res["figure"]).is_file():
                raw = (r.path / res["figure"]).read_bytes()
                entry["wealth_png"] = "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
                entry["wealth_file"] = res["figure"]
            classes.append(entry)
        out.append(
            Section(
                id=sid,
                title=f"Concept tests: {st.get('model', '')} ({st.get('test', '')}, {st.get('kernel', '')} kernel)",
                template="concepts.html.j2",
                context={
                    "classes": classes,
                    "fdr": fdr,
                    "alpha": alpha,
                    "settings": st,
                    "cav_accuracy": d.get("cav_accuracy") or {},
                    "seconds": d.get("seconds"),
                },
                figures=figures,
                settings={**st, "path": str(r.path), "environment": d.get("environment")},
            )
        )
    return out
