"""Heat maps of relevance over images (matplotlib), written atomically to PNG files.

A panel draws the image in grey (RGB photos as their luminance, so that colour means
relevance) and the map over it with a colour map that fades to transparent at zero
(:func:`provex.viz.style.overlay_cmap`): signed maps on a diverging scale centred at zero,
non-negative maps on a sequential one. How channels are reduced, the value range and the
colour-bar label come from a :class:`~provex.viz.style.MapStyle`; without one, channels are
summed and the sign decides the scale (the behaviour of earlier versions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from provex.io import atomic_write
from provex.viz.style import MapStyle, display_map, overlay_cmap

__all__ = [
    "check_images",
    "draw_heatmap",
    "image_display",
    "map_limits",
    "new_figure",
    "panel_limits",
    "plot_relevance",
    "plot_relevance_columns",
    "save_figure",
    "to_display",
]


def to_display(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H, W) for a heat map: channels summed."""
    t = t.detach().float().cpu()
    return t.sum(0) if t.ndim == 3 else t


def image_display(img: torch.Tensor, underlay: bool = True) -> tuple[np.ndarray, str | None]:
    """An image for ``imshow``: (H, W) grey or (H, W, 3) RGB scaled to [0, 1].

    ``underlay=True`` (under a heat map): RGB photos become their luminance, lightened, so
    the map's colours are the only colours in the panel.
    """
    img = img.detach().float().cpu()
    if img.ndim == 3 and img.shape[0] == 3:
        lo, hi = img.min(), img.max()
        rgb = ((img - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy()
        if not underlay:
            return rgb, None
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        return 0.25 + 0.75 * grey, "gray"
    g = to_display(img).numpy()
    return g, "gray"


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure outside pyplot's global state (safe in notebooks and threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110, close: bool = True) -> Path:
    """Save a figure to PNG atomically (and close it unless ``close=False``)."""
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        if close:
            plt.close(fig)
    return Path(path)


def check_images(images: torch.Tensor | None, shape: Sequence[int], name: str = "images") -> torch.Tensor | None:
    """``images`` must be (N, C', H, W) with the maps' N, H and W (any channel count)."""
    if images is None:
        return None
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    n, _, h, w = shape
    if images.ndim != 4 or images.shape[0] != n or tuple(images.shape[2:]) != (h, w):
        raise ValueError(f"{name} must be (N={n}, C, H={h}, W={w}) like the maps, got shape {tuple(images.shape)}")
    return images


def map_limits(values: Sequence[np.ndarray], style: MapStyle) -> tuple[float, float, bool]:
    """(vmin, vmax, signed) for a colour scale shared by ``values`` (NaNs ignored)."""
    finite = [v[np.isfinite(v)] for v in values]
    finite = [v for v in finite if v.size]
    big = max((float(np.abs(v).max()) for v in finite), default=0.0)
    signed = style.signed if style.signed is not None else any(bool((v < 0).any()) for v in finite)
    if style.value_range is not None and not signed:
        return style.value_range[0], style.value_range[1], False
    big = big or 1.0
    return (-big if signed else 0.0), big, signed


def panel_limits(values: np.ndarray, style: MapStyle, signed: bool) -> tuple[float, float, bool]:
    """A per-map colour scale for ``values`` whose sign convention is fixed by the figure."""
    vmin, vmax, _ = map_limits([values], replace(style, signed=signed))
    return vmin, vmax, signed


def draw_heatmap(
    ax: plt.Axes,
    rel: torch.Tensor,
    image: torch.Tensor | None,
    cmap: str = "RdBu_r",
    colorbar: bool = True,
    *,
    style: MapStyle | None = None,
    limits: tuple[float, float, bool] | None = None,
    label: str | None = None,
):
    """One panel: the image in grey (if given) with the relevance heat map over it.

    ``limits`` = (vmin, vmax, signed) fixes the colour scale (e.g. shared by several panels);
    by default the panel's own range. ``cmap`` is used without an image (over an image, the
    overlay colour maps that fade to transparent at zero are used). Returns the image artist.
    """
    style = style or MapStyle()
    r = display_map(rel, style)
    vmin, vmax, signed = limits if limits is not None else map_limits([r], style)
    if image is not None:
        disp, img_cmap = image_display(image)
        ax.imshow(disp, cmap=img_cmap, vmin=0.0 if img_cmap else None, vmax=None)
        colours = overlay_cmap(signed)
    else:
        colours = plt.get_cmap(cmap if signed else "YlOrRd").with_extremes(bad=(1, 1, 1, 0))
    im = ax.imshow(r, cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7)
        if label:
            cb.set_label(label, fontsize=7)
    return im


def _grid_figure(nrows: int, ncols: int, panel: float = 2.4) -> tuple[Figure, np.ndarray]:
    fig = new_figure(panel * ncols + 0.6, panel * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_relevance(
    path: str | os.PathLike | None,
    relevance: torch.Tensor,
    images: torch.Tensor | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 5,
    nrows: int | None = None,
    cmap: str = "RdBu_r",
    suptitle: str | None = None,
    *,
    style: MapStyle | None = None,
    scale: str = "per-map",
) -> Path | Figure:
    """Grid of heat maps, one panel per map in ``relevance`` (N, C, H, W).

    ``scale="shared"``: one colour scale (and one labelled colour bar) for every panel;
    ``"per-map"``: each panel on its own range with its own colour bar. Writes ``path`` and
    returns it, or returns the figure when ``path`` is None.
    """
    if relevance.ndim != 4:
        raise ValueError(f"relevance must be (N, C, H, W), got {tuple(relevance.shape)}")
    if scale not in ("shared", "per-map"):
        raise ValueError(f"scale must be 'shared' or 'per-map', got {scale!r}")
    images = check_images(images, relevance.shape)
    style = style or MapStyle()
    n, ch = relevance.shape[0], relevance.shape[1]
    ncols = max(1, min(ncols, n))
    nrows = nrows or -(-n // ncols)
    fig, axes = _grid_figure(nrows, ncols)
    label = style.colorbar_label(ch)
    shown = [display_map(relevance[i], style) for i in range(n)]
    everything = map_limits(shown, style)
    shared = everything if scale == "shared" else None
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        last_in_row = (i % ncols == ncols - 1) or i == n - 1
        im = draw_heatmap(
            ax,
            relevance[i],
            None if images is None else images[i],
            cmap,
            colorbar=shared is None,
            style=style,
            limits=shared or panel_limits(shown[i], style, everything[2]),
            label=label if last_in_row else None,  # one label per row of per-map colour bars
        )
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, wrap=True)
    if shared is not None and im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02)
        cb.set_label(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig if path is None else save_figure(fig, path)


def plot_relevance_columns(
    path: str | os.PathLike | None,
    columns: dict[str, torch.Tensor],
    images: torch.Tensor | None = None,
    row_titles: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    suptitle: str | None = None,
    *,
    style: MapStyle | None = None,
    scale: str = "shared",
) -> Path | Figure:
    """Table of heat maps: one row per image, one column per named (N, C, H, W) map.

    All columns share one unit (e.g. MR-RDE's mean mask and its per-rate masks), so
    ``scale="shared"`` puts every panel on one colour scale with one colour bar; ``"per-map"``
    gives each panel its own. With ``images``, the first column shows the input itself.
    """
    if not columns:
        raise ValueError("columns must hold at least one map")
    if scale not in ("shared", "per-map"):
        raise ValueError(f"scale must be 'shared' or 'per-map', got {scale!r}")
    maps = list(columns.values())
    n = maps[0].shape[0]
    for name, m in columns.items():
        if m.ndim != 4 or m.shape[0] != n:
            raise ValueError(f"map {name!r} must be (N={n}, C, H, W), got {tuple(m.shape)}")
    images = check_images(images, maps[0].shape)
    style = style or MapStyle()
    label = style.colorbar_label(maps[0].shape[1])
    offset = 0 if images is None else 1
    ncols = len(maps) + offset
    fig, axes = _grid_figure(n, ncols, panel=2.1)
    everything = map_limits([display_map(m[i], style) for m in maps for i in range(n)], style)
    shared = everything if scale == "shared" else None
    im = None
    for i in range(n):
        if images is not None:
            disp, img_cmap = image_display(images[i], underlay=False)
            axes[i, 0].imshow(disp, cmap=img_cmap)
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
            if i == 0:
                axes[i, 0].set_title("input", fontsize=8)
        for j, (name, m) in enumerate(columns.items()):
            ax = axes[i, j + offset]
            im = draw_heatmap(
                ax,
                m[i],
                None if images is None else images[i],
                cmap,
                colorbar=shared is None,
                style=style,
                limits=shared or panel_limits(display_map(m[i], style), style, everything[2]),
                label=None,
            )
            if i == 0:
                ax.set_title(name, fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    if shared is not None and im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.6, pad=0.02)
        cb.set_label(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig if path is None else save_figure(fig, path)
