"""What a method's map means on screen: its label and unit, how channels are reduced, its range.

Every figure (``Explanation.plot``, the commands' PNGs, the HTML report) asks :func:`map_style`
how to draw a method's relevance so that colour bars carry a label and a unit, a [0, 1] mask
over three channels is shown on [0, 1] (channels averaged, not summed), values a method itself
discards (h-Shap cells at or below its threshold) are not painted, and signed maps use a
diverging scale centred at zero. The same colour maps are exported for Plotly
(:func:`plotly_colorscale`), so the report and the PNGs look alike.

Colour maps fade to transparent towards zero: a map is drawn over its image, and a zero (or
near-zero) value leaves the image visible instead of painting it with a solid colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap

__all__ = [
    "HSHAP_NUMERICAL_ZERO",
    "MapStyle",
    "display_map",
    "map_style",
    "overlay_cmap",
    "plotly_colorscale",
]


@dataclass(frozen=True)
class MapStyle:
    """How to draw one method's maps.

    Attributes:
        label: what the value is ("mask value", "gradient of the target logit", ...).
        unit: its unit, or "" when it has none (mask values, ranks).
        reduce: how channels are combined for display: ``"sum"`` for additive quantities
            (gradients, Shapley and LRP relevance, which add up over components), ``"mean"``
            for intensive ones (mask values, ordering scores, p-values).
        signed: True for a diverging scale centred at 0, False for a sequential one from 0,
            None to decide from the data (any negative value -> signed).
        value_range: the method's own range (masks: (0, 1)); a shared scale uses it.
        threshold: values with ``|v| <= threshold`` are not drawn (the method discards them).
        kind: ``"map"``, or ``"p-value"`` for region tests (drawn as regions and decisions).
    """

    label: str = "relevance"
    unit: str = ""
    reduce: str = "sum"
    signed: bool | None = None
    value_range: tuple[float, float] | None = None
    threshold: float | None = None
    kind: str = "map"

    def colorbar_label(self, channels: int = 1) -> str:
        """``"mask value (mean over 3 channels)"``, ``"gradient [logit / input unit]"``, ..."""
        tail = (f"[{self.unit}] " if self.unit else "") + (
            f"({self.reduce} over {channels} channels)" if channels > 1 else ""
        )
        tail = tail.strip()
        if not tail:
            return self.label
        return f"{self.label}\n{tail}" if len(self.label) + len(tail) > 40 else f"{self.label} {tail}"


HSHAP_NUMERICAL_ZERO = 1e-12
"""h-Shap cell scores at or below this are rounding residue (the image's own score is 1)."""

_MASK = MapStyle("mask value (1 = kept)", "", "mean", False, (0.0, 1.0))
_GRADIENT = MapStyle("gradient of the target logit", "logit / input unit", "sum", None)
_STYLES: dict[str, MapStyle] = {
    "rc-rde": _MASK,
    "mr-rde": replace(_MASK, label="mean mask value over rates"),
    "l-rde": _MASK,
    "ord-rde": MapStyle("ordering score (0 = removed first, 1 = kept last)", "", "mean", False, (0.0, 1.0)),
    "h-shap": MapStyle("h-Shap cell score", "share of the target score", "sum", None),
    "shap-xrt": MapStyle("SHAP-XRT p-value", "", "mean", False, (0.0, 1.0), kind="p-value"),
    "sensitivity": _GRADIENT,
    "smoothgrad": replace(_GRADIENT, label="mean gradient of the target logit (noisy copies)"),
    "guided-backprop": replace(_GRADIENT, label="guided-backprop gradient"),
    "lrp-alpha-beta": MapStyle("LRP relevance (alpha-beta)", "share of the target logit", "sum", None),
    "deep-taylor": MapStyle("LRP relevance (deep Taylor)", "share of the target logit", "sum", None),
    "kernel-shap": MapStyle("KernelSHAP coefficient", "change of the target logit", "sum", None),
    "lime": MapStyle("LIME coefficient", "change of the target logit", "sum", None),
}


def map_style(method: str, info: Mapping[str, Any] | None = None) -> MapStyle:
    """The display style of ``method``'s relevance, refined by the explanation's ``info``.

    ``info["options"]`` changes the label where an option changes the quantity (sensitivity
    with ``absolute=True`` shows magnitudes; SmoothGrad with ``square=True`` mean squares);
    h-Shap's absolute ``threshold`` hides the cells it discards; a method may set
    ``info["unit"]`` / ``info["label"]`` itself, which wins.
    """
    info = dict(info or {})
    options = dict(info.get("options") or {})
    style = _STYLES.get(method, MapStyle())
    if method == "sensitivity" and options.get("absolute"):
        style = replace(style, label="|gradient of the target logit|", signed=False)
    if method == "smoothgrad" and options.get("square"):
        style = replace(
            style, label="mean squared gradient (noisy copies)", unit="(logit / input unit)^2", signed=False
        )
    if method == "h-shap":
        # cell scores are products of Shapley values on a scale where the whole image scores 1;
        # below 1e-12 they are float64 residue, and at or below an absolute threshold the method
        # itself discards them: neither is painted (a per-map scale would show residue solid)
        t = info.get("threshold", options.get("threshold"))
        absolute = info.get("threshold_mode", options.get("threshold_mode", "absolute")) == "absolute"
        floor = float(t) if absolute and isinstance(t, (int, float)) else 0.0
        style = replace(style, threshold=max(floor, HSHAP_NUMERICAL_ZERO))
    if method == "h-shap" and info.get("score") == "logit":
        style = replace(style, unit="share of the target logit")
    if isinstance(info.get("unit"), str):
        style = replace(style, unit=info["unit"])
    if isinstance(info.get("label"), str):
        style = replace(style, label=info["label"])
    return style


def display_map(t: torch.Tensor, style: MapStyle) -> np.ndarray:
    """(C, H, W) or (H, W) -> (H, W) float64 array for display, reduced as ``style`` says.

    Values the method discards (``|v| <= style.threshold``) become NaN: not drawn.
    """
    t = t.detach().to(torch.float64).cpu()
    if t.ndim == 3:
        t = t.sum(0) if style.reduce == "sum" else t.mean(0)
    out = t.numpy().copy()
    if style.threshold is not None:
        out[np.abs(out) <= style.threshold] = np.nan
    return out


# Colour maps for overlays: opacity grows with |value|, so zero shows the image underneath.
# Near-constant hues (orange-red; blue for negative values) read on black strokes, white
# backgrounds and grey photos alike; the opacity, not the lightness, carries the magnitude.
_SEQ = ["#ff8c1a", "#f4511e", "#e0201b"]
_NEG = ["#1f5fd1", "#2f7de1", "#4a98ee"]
_POS = ["#f4511e", "#e8321c", "#e0201b"]


def _ramp(colors: list[str], n: int) -> np.ndarray:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("ramp", colors)(np.linspace(0, 1, n))


def _rgba_table(signed: bool, n: int = 256, max_alpha: float = 0.8) -> np.ndarray:
    """(n, 4) RGBA colours from the lowest to the highest value of the scale."""
    if signed:
        half = n // 2
        neg = _ramp(_NEG, half)  # most negative -> mildly negative
        pos = _ramp(_POS, n - half)  # mildly positive -> most positive
        table = np.concatenate([neg, pos])
        alpha = np.abs(np.linspace(-1, 1, n))
    else:
        table = _ramp(_SEQ, n)
        alpha = np.linspace(0, 1, n)
    table[:, 3] = max_alpha * np.clip(alpha, 0, 1) ** 0.75
    return table


def overlay_cmap(signed: bool, max_alpha: float = 0.8) -> ListedColormap:
    """Matplotlib colour map for a map drawn over its image (transparent at zero)."""
    cmap = ListedColormap(_rgba_table(signed, max_alpha=max_alpha), name="provex-signed" if signed else "provex-seq")
    return cmap.with_extremes(bad=(0, 0, 0, 0))


def plotly_colorscale(signed: bool, n: int = 11, max_alpha: float = 0.8) -> list[list[Any]]:
    """The same colour map as a Plotly ``colorscale`` (rgba stops)."""
    table = _rgba_table(signed, n, max_alpha)
    return [
        [float(i / (n - 1)), f"rgba({int(r * 255)},{int(g * 255)},{int(b * 255)},{a:.3f})"]
        for i, (r, g, b, a) in enumerate(table)
    ]
