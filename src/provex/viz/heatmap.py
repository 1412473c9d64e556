"""Heat maps of relevance over images, written to PNG files with matplotlib (Agg backend).

Signed maps use a diverging colour map centred at zero; non-negative maps a sequential one.
Multi-channel maps are summed over channels for display. Files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from provex.explanation import atomic_path

__all__ = ["draw_heatmap", "plot_relevance", "plot_relevance_columns", "save_figure", "to_display"]


def to_display(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (H, W) for a heat map: channels summed."""
    t = t.detach().float().cpu()
    return t.sum(0) if t.ndim == 3 else t


def _image_display(img: torch.Tensor) -> tuple[np.ndarray, str | None]:
    img = img.detach().float().cpu()
    if img.ndim == 3 and img.shape[0] == 3:
        lo, hi = img.min(), img.max()
        return ((img - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy(), None
    return to_display(img).numpy(), "gray"


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure to PNG atomically and close it."""
    final, tmp = atomic_path(path)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        tmp.replace(final)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return final


def draw_heatmap(ax: plt.Axes, rel: torch.Tensor, image: torch.Tensor | None, cmap: str, colorbar: bool = True) -> None:
    """One panel: the image in grey (if given) with the relevance heat map over it."""
    r = to_display(rel)
    signed = bool((r < 0).any())
    vmax = float(r.abs().max()) or 1.0
    alpha: float | np.ndarray = 1.0
    if image is not None:
        disp, img_cmap = _image_display(image)
        ax.imshow(disp, cmap=img_cmap, alpha=1.0)
        # signed maps: a fixed blend; non-negative maps (masks): opacity grows with the value,
        # so zero leaves the image visible and a kept pixel is a saturated red on black or white
        alpha = 0.6 if signed else np.clip(0.9 * r.numpy() / vmax, 0.0, 0.9)
    im = ax.imshow(
        r.numpy(),
        cmap=cmap if signed else "YlOrRd",
        vmin=-vmax if signed else 0.0,
        vmax=vmax,
        alpha=alpha,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)


def plot_relevance(
    path: str | os.PathLike,
    relevance: torch.Tensor,
    images: torch.Tensor | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 5,
    nrows: int | None = None,
    cmap: str = "RdBu_r",
    suptitle: str | None = None,
) -> Path:
    """Grid of heat maps, one panel per map in ``relevance`` (N, C, H, W)."""
    if relevance.ndim != 4:
        raise ValueError(f"relevance must be (N, C, H, W), got {tuple(relevance.shape)}")
    n = relevance.shape[0]
    if images is not None and images.shape[0] != n:
        raise ValueError(f"images has {images.shape[0]} entries but relevance has {n}")
    ncols = max(1, min(ncols, n))
    nrows = nrows or -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        draw_heatmap(ax, relevance[i], None if images is None else images[i], cmap)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_relevance_columns(
    path: str | os.PathLike,
    columns: dict[str, torch.Tensor],
    images: torch.Tensor | None = None,
    row_titles: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    suptitle: str | None = None,
) -> Path:
    """Table of heat maps: one row per image, one column per named (N, C, H, W) map."""
    if not columns:
        raise ValueError("columns must hold at least one map")
    maps = list(columns.values())
    n = maps[0].shape[0]
    for name, m in columns.items():
        if m.ndim != 4 or m.shape[0] != n:
            raise ValueError(f"map {name!r} must be (N={n}, C, H, W), got {tuple(m.shape)}")
    if images is not None and images.shape[0] != n:
        raise ValueError(f"images has {images.shape[0]} entries but the maps have {n}")
    ncols = len(maps)
    fig, axes = plt.subplots(n, ncols, figsize=(2.4 * ncols, 2.3 * n), squeeze=False)
    for i in range(n):
        for j, (name, m) in enumerate(columns.items()):
            ax = axes[i, j]
            draw_heatmap(ax, m[i], None if images is None else images[i], cmap)
            if i == 0:
                ax.set_title(name, fontsize=9)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return save_figure(fig, path)
