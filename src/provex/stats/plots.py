"""Figures for betting tests: wealth processes with the 1/alpha line, rejection rate and time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from provex.stats._engine import BatchBettingResult
from provex.stats.fdr import rank_concepts
from provex.viz.heatmap import save_figure

__all__ = ["plot_concept_tests"]


def plot_concept_tests(
    result: BatchBettingResult, names: Sequence[str], path: str | os.PathLike, title: str = "", max_paths: int = 20
) -> Path:
    """Left: wealth paths (up to ``max_paths`` repeats per concept, log scale) against 1/alpha;
    right: rejection rate and mean rejection time per concept, ordered by rejection time.
    ``result`` has batch shape (repeats, concepts)."""
    if result.rejected.ndim != 2 or result.rejected.shape[1] != len(names):
        raise ValueError(f"result must have batch shape (repeats, {len(names)})")
    ranked = rank_concepts(result.rejected, result.tau, result.tau_max, names, result.alpha)
    order = [list(names).index(c.name) for c in ranked]
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
    wealth = result.wealth.cpu().numpy()
    steps = np.arange(wealth.shape[-1])
    for rank, k in enumerate(order):
        for r in range(min(max_paths, wealth.shape[0])):
            w = wealth[r, k]
            ok = np.isfinite(w)
            ax0.plot(steps[ok], w[ok], color=colors(rank % 20), alpha=0.35, lw=0.8, label=names[k] if r == 0 else None)
    ax0.axhline(1 / result.alpha, color="k", ls="--", lw=1, label=f"1/alpha = {1 / result.alpha:g}")
    ax0.set_yscale("log")
    ax0.set_xlabel("step t")
    ax0.set_ylabel("wealth K_t")
    ax0.set_title("wealth processes (reject when K_t >= 1/alpha)")
    ax0.legend(fontsize=7, loc="upper left")
    ypos = np.arange(len(ranked))[::-1]
    ax1.barh(
        ypos,
        [c.rejection_rate for c in ranked],
        color=[colors(i % 20) for i in range(len(ranked))],
        alpha=0.8,
        label="rejection rate",
    )
    ax1.plot([c.mean_tau for c in ranked], ypos, "ko", label="mean tau / tau_max")
    ax1.axvline(result.alpha, color="gray", ls=":", lw=1, label="alpha")
    ax1.set_yticks(ypos, [c.name for c in ranked])
    ax1.set_xlim(0, 1.05)
    ax1.set_title(f"{result.test} ({result.kernel}), {wealth.shape[0]} repeats, tau_max = {result.tau_max}")
    ax1.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
