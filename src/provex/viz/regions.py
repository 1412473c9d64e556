"""Region tests drawn as what they are: a p-value per region and a decision, over the image.

Each region is tinted by ``-log10 p`` (the colour bar is labelled in p-values), its p-value is
written at its centre, and regions rejected at ``alpha`` get a solid outline, the others a
dotted one. Used for SHAP-XRT explanations (``info["p_values"]``, ``info["regions"]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from provex.viz.heatmap import check_images, image_display, new_figure, save_figure
from provex.viz.style import overlay_cmap

__all__ = ["draw_region_pvalues", "plot_region_pvalues", "region_pvalue_grid"]


def region_pvalue_grid(p: torch.Tensor, regions: torch.Tensor) -> np.ndarray:
    """(R,) p-values and (R, H, W) boolean regions -> (H, W) p-value per pixel (NaN outside)."""
    p = torch.as_tensor(p, dtype=torch.float64).cpu()
    regions = torch.as_tensor(regions).bool().cpu()
    if regions.ndim != 3 or p.shape != (regions.shape[0],):
        raise ValueError(
            f"p_values must be (R,) for (R, H, W) regions, got {tuple(p.shape)} and {tuple(regions.shape)}"
        )
    out = np.full(tuple(regions.shape[1:]), np.nan)
    for r in range(regions.shape[0]):
        out[regions[r].numpy()] = float(p[r])
    return out


def draw_region_pvalues(
    ax,
    p: torch.Tensor,
    regions: torch.Tensor,
    image: torch.Tensor | None,
    alpha: float,
    p_floor: float,
    colorbar: bool = True,
):
    """One panel: image, regions tinted by -log10 p, p-values written, rejected regions outlined."""
    grid = region_pvalue_grid(p, regions)
    top = -math.log10(p_floor)
    if image is not None:
        disp, img_cmap = image_display(image)
        ax.imshow(disp, cmap=img_cmap)
    im = ax.imshow(-np.log10(np.clip(grid, p_floor, 1.0)), cmap=overlay_cmap(False, 0.65), vmin=0.0, vmax=top)
    h, w = grid.shape
    for r in range(regions.shape[0]):
        mask = regions[r].cpu().numpy()
        if not mask.any():
            continue
        rejected = float(p[r]) <= alpha
        # padded, so that a region touching the border is closed along it
        ax.contour(
            np.arange(-1, w + 1),
            np.arange(-1, h + 1),
            np.pad(mask.astype(float), 1),
            levels=[0.5],
            colors="black",
            linewidths=1.6 if rejected else 0.7,
            linestyles="solid" if rejected else "dotted",
        )
        ys, xs = np.nonzero(mask)
        ax.text(
            xs.mean(),
            ys.mean(),
            f"{float(p[r]):.2g}" + ("*" if rejected else ""),
            ha="center",
            va="center",
            fontsize=7,
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
        )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        _pvalue_colorbar(ax.figure, im, ax, top)
    return im


def _pvalue_colorbar(fig: Figure, im, ax, top: float) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ticks = [float(t) for t in range(math.floor(top) + 1)]
    if top - ticks[-1] > 0.15:
        ticks.append(top)  # the smallest attainable p-value
    cb.set_ticks(ticks)
    cb.set_ticklabels([f"{10.0**-t:.2g}" for t in ticks])
    cb.ax.tick_params(labelsize=7)
    cb.set_label("p-value (log scale)", fontsize=7)


def plot_region_pvalues(
    path: str | os.PathLike | None,
    p_values: torch.Tensor,
    regions: torch.Tensor,
    images: torch.Tensor | None = None,
    alpha: float = 0.05,
    titles: Sequence[str] | None = None,
    ncols: int = 5,
    suptitle: str | None = None,
    p_floor: float | None = None,
) -> Path | Figure:
    """One panel per image with its regions' p-values (N, R) and decisions at ``alpha``.

    ``p_floor`` is the smallest attainable p-value (1 / (K + 1) for SHAP-XRT with K null
    draws); the colour scale runs from p = 1 (transparent) to it.
    """
    p_values = torch.as_tensor(p_values, dtype=torch.float64)
    regions = torch.as_tensor(regions).bool()
    if p_values.ndim != 2:
        raise ValueError(f"p_values must be (N, R), got {tuple(p_values.shape)}")
    n = p_values.shape[0]
    images = check_images(images, (n, 1, *regions.shape[1:]))
    floor = p_floor if p_floor is not None else max(float(p_values.min()), 1e-6)
    floor = min(floor, alpha / 2)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = new_figure(2.6 * ncols + 0.6, 2.4 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        im = draw_region_pvalues(ax, p_values[i], regions, None if images is None else images[i], alpha, floor, False)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if im is not None:
        _pvalue_colorbar(fig, im, axes, -math.log10(floor))
    fig.suptitle(suptitle or f"region p-values; * and solid outline: rejected at alpha = {alpha:g}", fontsize=10)
    return fig if path is None else save_figure(fig, path)
