"""The figure of one :class:`~provex.Explanation` (what ``Explanation.plot`` draws).

* one panel per image (map over image), titled with the target and the prediction (class
  names with ``labels``), a colour bar labelled with the method's quantity and unit;
* maps with extra named maps (MR-RDE's per-rate masks): one row per image, one column per map;
* SHAP-XRT: each region's p-value and the decision at ``alpha``, not a heat map;
* the colour scale is shared by all panels or per map, and the title says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure

from provex.viz.heatmap import check_images, plot_relevance, plot_relevance_columns
from provex.viz.regions import plot_region_pvalues
from provex.viz.style import map_style

if TYPE_CHECKING:
    from provex.explanation_data import ExplanationData

__all__ = ["class_name", "plot_explanation"]


def class_name(k: int, labels: Sequence[str] | None) -> str:
    """``"3"``, or ``"3 cat"`` with class names."""
    if labels is not None and 0 <= k < len(labels):
        return f"{k} {labels[k]}"
    return str(k)


def _titles(exp: ExplanationData, labels: Sequence[str] | None) -> list[str]:
    out = []
    for i in range(len(exp)):
        t = f"target {class_name(int(exp.target[i]), labels)}"
        if exp.prediction is not None:
            t += f"\npred {class_name(int(exp.prediction[i]), labels)}"
        out.append(t)
    return out


def plot_explanation(
    exp: ExplanationData,
    images: torch.Tensor | None = None,
    ncols: int | None = None,
    cmap: str = "RdBu_r",
    titles: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    scale: str | None = None,
) -> Figure:
    """The figure of ``exp`` (write it with :func:`provex.viz.heatmap.save_figure`).

    ``scale``: ``"shared"`` (one colour scale for every panel, e.g. to compare images) or
    ``"per-map"`` (each panel on its own range); default: shared for methods with a fixed
    range (masks, ordering scores), per map otherwise.
    """
    if labels is not None and (isinstance(labels, str) or not all(isinstance(s, str) for s in labels)):
        raise ValueError("labels must be a sequence of class names (strings)")
    if scale not in (None, "shared", "per-map"):
        raise ValueError(f"scale must be 'shared' or 'per-map', got {scale!r}")
    images = check_images(images, tuple(exp.relevance.shape))
    style = map_style(exp.method, exp.info)
    n = len(exp)
    titles = list(titles) if titles is not None else _titles(exp, labels)
    if len(titles) != n:
        raise ValueError(f"titles must have {n} entries, got {len(titles)}")
    info = exp.info
    if style.kind == "p-value" and "p_values" in info and "regions" in info:
        alpha = float(info.get("options", {}).get("alpha", 0.05)) if isinstance(info.get("options"), dict) else 0.05
        k = info.get("options", {}).get("K") if isinstance(info.get("options"), dict) else None
        context = info.get("context", "")
        fig = plot_region_pvalues(
            None,
            info["p_values"],
            info["regions"],
            images,
            alpha=alpha,
            titles=titles,
            ncols=ncols or min(n, 5),
            p_floor=1.0 / (int(k) + 1) if k else None,
            suptitle=f"{exp.method}: region p-values (context: {context or 'n/a'}); "
            f"* and solid outline = rejected at alpha = {alpha:g}",
        )
        return fig
    if scale is None:
        scale = "shared" if style.value_range is not None else "per-map"
    scale_text = "colour scale shared by all panels" if scale == "shared" else "colour scale per map"
    suptitle = f"{exp.method}: {scale_text}"
    if style.threshold is not None:
        suptitle += f"; values <= {style.threshold:g} not drawn"
    if exp.maps:
        columns = {"mean" if exp.method == "mr-rde" else "relevance": exp.relevance, **exp.maps}
        fig = plot_relevance_columns(
            None, columns, images=images, row_titles=titles, cmap=cmap, suptitle=suptitle, style=style, scale=scale
        )
    else:
        ncols = ncols or min(n, 5)
        fig = plot_relevance(
            None,
            exp.relevance,
            images=images,
            titles=titles,
            ncols=ncols,
            nrows=math.ceil(n / ncols),
            cmap=cmap,
            suptitle=suptitle,
            style=style,
            scale=scale,
        )
    return fig
