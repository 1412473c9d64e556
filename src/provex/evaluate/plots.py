"""Figures for evaluations: ordering curves of several methods, and a grid of their maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from provex.evaluate.ordering import OrderingCurve
from provex.viz.heatmap import draw_heatmap, save_figure

__all__ = ["plot_map_grid", "plot_ordering_curves"]


def plot_ordering_curves(
    curves: Mapping[str, OrderingCurve],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Distortion and accuracy against the fraction of components kept, one colour per method.

    Shaded bands are one standard error; the legend gives each method's distortion area.
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig, (ax_d, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab20" if len(curves) > 10 else "tab10")
    for k, (name, c) in enumerate(curves.items()):
        colour = cmap(k % cmap.N)
        f = c.fraction_kept.numpy()
        for ax, mean, se in ((ax_d, c.distortion, c.distortion_se), (ax_a, c.accuracy, c.accuracy_se)):
            m, s = mean.numpy(), se.numpy()
            label = f"{name} ({c.auc_distortion:.4f})" if ax is ax_d else name
            ax.plot(f, m, color=colour, lw=1.4, label=label)
            ax.fill_between(f, m - s, m + s, color=colour, alpha=0.15, lw=0)
    ax_d.set_xlabel("fraction of components kept")
    ax_d.set_ylabel("distortion (squared change of target probability)")
    ax_d.legend(fontsize=7, title="method (distortion area)", title_fontsize=7)
    ax_a.set_xlabel("fraction of components kept")
    ax_a.set_ylabel("accuracy (prediction kept)")
    ax_a.set_ylim(-0.02, 1.02)
    for ax in (ax_d, ax_a):
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    first = next(iter(curves.values())).settings
    fig.suptitle(
        title
        or f"relevance ordering: {first.get('n_images')} images, step {first.get('step')}, "
        f"{first.get('n_noise')} noise draws"
    )
    fig.tight_layout()
    return save_figure(fig, path)


def plot_map_grid(
    maps: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
) -> Path:
    """Rows: methods, columns: images; each panel a heat map over its image.

    ``maps`` holds one (N, C, H, W) tensor per method; ``images`` is (N, C, H, W).
    """
    if not maps:
        raise ValueError("maps is empty: nothing to plot")
    n = images.shape[0]
    for name, m in maps.items():
        if m.shape[0] != n:
            raise ValueError(f"maps[{name!r}] has {m.shape[0]} entries but images has {n}")
    rows = len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.5 * n + 1.2, 1.5 * rows), squeeze=False)
    for r, (name, m) in enumerate(maps.items()):
        for c in range(n):
            ax = axes[r, c]
            draw_heatmap(ax, m[c].detach().cpu(), images[c].cpu(), cmap, colorbar=False)
            if r == 0 and titles is not None:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, path)
