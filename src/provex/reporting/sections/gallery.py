"""The gallery: every image with the maps of every method over it, and a detail view.

Cards show the image and one thumbnail per method (the map's colours stacked over the image),
the target, prediction and label, and each method's ordering area where known. Selecting a
card opens the detail view: Plotly heat maps at full size (up to ``detail_side``) with the value
under the pointer, MR-RDE's per-rate maps, SHAP-XRT region p-values and decisions, and a
shared / per-map colour-scale switch. Cards are built by the page only for the visible page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from provex.reporting.encode import image_uri, map_uri, pool_to, quantize
from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import ImageSet, Inputs
from provex.viz.heatmap import map_limits
from provex.viz.style import display_map, plotly_colorscale

__all__ = ["gallery_sections"]


def _f(x: float | None, digits: int = 4) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _region_boxes(regions: torch.Tensor, max_side: int, h: int, w: int) -> list[list[float]]:
    """Bounding boxes (x0, y0, x1, y1) of each region in detail-view pixel units."""
    scale = max(h, w) / min(max(h, w), max_side)
    boxes = []
    for r in regions:
        ys, xs = torch.nonzero(r, as_tuple=True)
        if ys.numel() == 0:
            boxes.append([0, 0, 0, 0])
            continue
        boxes.append(
            [
                float(xs.min()) / scale - 0.5,
                float(ys.min()) / scale - 0.5,
                (float(xs.max()) + 1) / scale - 0.5,
                (float(ys.max()) + 1) / scale - 0.5,
            ]
        )
    return boxes


def _gallery(s: ImageSet, k: int, opt: ReportOptions) -> Section:
    labels = opt.labels or s.labels
    methods = s.methods
    displays = {m: [display_map(s.maps[m][i], s.styles[m]) for i in range(s.n)] for m in methods}
    extra_displays = {
        m: {name: [display_map(t[i], s.styles[m]) for i in range(s.n)] for name, t in s.extra_maps.get(m, {}).items()}
        for m in methods
    }
    meta = []
    for m in methods:
        st = s.styles[m]
        pool = displays[m] + [v for lst in extra_displays[m].values() for v in lst]
        vmin, vmax, signed = map_limits(pool, st)
        fixed = st.value_range is not None and not signed
        entry: dict[str, Any] = {
            "name": m,
            "label": st.colorbar_label(s.shape[0]).replace("\n", " "),
            "unit": st.unit,
            "signed": signed,
            "shared": [vmin, vmax],
            "thumbScale": f"on the method's fixed range {vmin:g} to {vmax:g}" if fixed else "each on its own range",
            "thumbShared": fixed,
            "threshold": st.threshold,
            "colorscale": plotly_colorscale(signed),
            "extra": list(extra_displays[m]),
            "kind": "p-value" if m in s.pvalues else "map",
            "hasAuc": m in s.auc,
        }
        if m in s.pvalues:
            pv = s.pvalues[m]
            entry["alpha"] = pv["alpha"]
            entry["boxes"] = _region_boxes(pv["regions"], opt.detail_side, s.shape[1], s.shape[2])
            floor = 1.0 / (int(pv["K"]) + 1) if pv.get("K") else float(pv["p"].min().clamp_min(1e-6))
            entry["pFloor"] = min(floor, pv["alpha"] / 2)
            entry["context"] = pv.get("context")
            entry["colorscale"] = plotly_colorscale(False, max_alpha=0.65)
        meta.append(entry)

    first = methods[0]
    items = []
    for i in range(s.n):
        img = s.images[i] if s.images is not None else None
        tgt = int(s.target[first][i])
        pred = int(s.prediction[first][i]) if first in s.prediction else None
        item: dict[str, Any] = {
            "i": i,
            "index": int(s.index[i]),
            "label": int(s.label[i]) if int(s.label[i]) >= 0 else None,
            "target": tgt,
            "pred": pred,
            "targets": {m: int(s.target[m][i]) for m in methods},
            "img": image_uri(img, opt.thumb_side, underlay=True) if img is not None else None,
            "imgDetail": image_uri(img, opt.detail_side, underlay=True) if img is not None else None,
            "imgColor": (
                image_uri(img, opt.thumb_side, underlay=False) if img is not None and img.shape[0] == 3 else None
            ),
            "maps": {},
            "vals": {},
            "extra": {},
            "auc": {},
            "p": {},
        }
        for e in meta:
            m = e["name"]
            v = displays[m][i]
            if m in s.pvalues:
                p = s.pvalues[m]["p"][i]
                grid = np.full(v.shape, np.nan)
                for r, reg in enumerate(s.pvalues[m]["regions"]):
                    grid[reg.numpy()] = -np.log10(max(float(p[r]), e["pFloor"]))
                item["maps"][m] = map_uri(grid, 0.0, -np.log10(e["pFloor"]), False, opt.thumb_side)
                pgrid = np.full(v.shape, np.nan)
                for r, reg in enumerate(s.pvalues[m]["regions"]):
                    pgrid[reg.numpy()] = float(p[r])
                item["vals"][m] = quantize(pgrid, opt.detail_side)
                item["p"][m] = [_f(float(x)) for x in p]
            else:
                if e["thumbShared"]:
                    lo, hi = e["shared"]
                else:
                    lo, hi, _ = map_limits([v], s.styles[m])
                    if e["signed"]:
                        big = max(abs(lo), abs(hi))
                        lo, hi = -big, big
                item["maps"][m] = map_uri(v, lo, hi, e["signed"], opt.thumb_side)
                item["vals"][m] = quantize(v, opt.detail_side)
            if extra_displays[m]:
                item["extra"][m] = {name: quantize(lst[i], opt.detail_side) for name, lst in extra_displays[m].items()}
            if m in s.auc:
                a = s.auc[m]
                item["auc"][m] = {
                    "d": _f(float(a["distortion"][i])),
                    "a": _f(float(a["accuracy"][i])) if a.get("accuracy") is not None else None,
                }
        items.append(item)
    classes = sorted({it["target"] for it in items})
    h, w = pool_to(np.zeros(s.shape[1:]), opt.detail_side).shape
    data = {
        "name": s.name,
        "n": s.n,
        "methods": meta,
        "items": items,
        "classes": [{"k": c, "name": labels[c] if labels and 0 <= c < len(labels) else str(c)} for c in classes],
        "labels": labels,
        "pageSize": opt.page_size,
        "detailShape": [h, w],
        "hasImages": s.images is not None,
    }
    sid = f"gallery-{k}"
    return Section(
        id=sid,
        title=f"Gallery: {s.name}" if k else "Gallery",
        template="gallery.html.j2",
        context={
            "set": s,
            "methods": meta,
            "classes": data["classes"],
            "n": s.n,
            "shape": s.shape,
            "detail_side": opt.detail_side,
            "pooled": max(s.shape[1:]) > opt.detail_side,
        },
        data=data,
        settings=s.settings,
    )


@register_section("gallery", order=10)
def gallery_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """One gallery per image set."""
    return [_gallery(s, k, options) for k, s in enumerate(inputs.image_sets) if s.maps]
