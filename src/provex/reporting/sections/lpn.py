"""Learned proximal networks: the prior's curves and the reconstructions, where present.

From ``provex benchmark lpn`` results: mean R(x) against the perturbation level (noise,
blur) with the rank correlation, PSNR / SSIM of plug-and-play reconstructions against TV per
task, the Laplace toy's errors, and the benchmark's reconstruction figures.
"""

from __future__ import annotations

import base64
from typing import Any

from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import Inputs, short_path

__all__ = ["lpn_sections"]


def _prior_figure(prior: dict[str, Any], sid: str) -> dict[str, dict[str, Any]]:
    figs = {}
    for kind, p in prior.items():
        if not isinstance(p, dict) or "levels" not in p or "mean_R" not in p:
            continue
        figs[f"{sid}-prior-{kind}"] = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": p["levels"],
                    "y": p["mean_R"],
                    "name": f"mean R(x), {kind}",
                    "hovertemplate": "level %{x}<br>mean R %{y:.2f}<extra></extra>",
                }
            ],
            "layout": {
                "title": {
                    "text": f"prior R(x) against {kind} level "
                    f"(Spearman mean {p.get('spearman_mean', float('nan')):.3f})",
                    "font": {"size": 13},
                },
                "xaxis": {"title": {"text": f"{kind} level"}},
                "yaxis": {"title": {"text": "mean R(x) (higher = less likely under the prior)"}},
                "height": 340,
                "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
            },
        }
    return figs


@register_section("lpn", order=40)
def lpn_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """One section per LPN results file."""
    out = []
    for k, r in enumerate(inputs.results_of("lpn")):
        d = r.data
        sid = f"lpn-{k}"
        rec_rows = []
        for task, t in (d.get("reconstruct") or {}).items():
            rec_rows.append(
                {
                    "task": task,
                    "lpn": (t.get("psnr_lpn") or {}).get("mean"),
                    "tv": (t.get("psnr_tv") or {}).get("mean"),
                    "start": (t.get("psnr_initial_guess") or {}).get("mean"),
                    "ssim_lpn": (t.get("ssim_lpn") or {}).get("mean"),
                    "ssim_tv": (t.get("ssim_tv") or {}).get("mean"),
                    "better": t.get("fraction_images_lpn_better"),
                }
            )
        pngs = []
        for f in sorted(r.path.glob("*.png")):
            if f.stat().st_size <= 2_000_000:
                pngs.append(
                    {"name": f.name, "uri": "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode()}
                )
        out.append(
            Section(
                id=sid,
                title=f"Learned proximal network: {short_path(r.path)}",
                template="lpn.html.j2",
                context={
                    "prior": d.get("prior") or {},
                    "rec_rows": rec_rows,
                    "laplace": d.get("laplace") or {},
                    "card": d.get("lpn_mnist_card") or {},
                    "pngs": pngs,
                },
                figures=_prior_figure(d.get("prior") or {}, sid),
                settings={**(d.get("settings") or {}), "path": str(r.path), "environment": d.get("environment")},
            )
        )
    return out
