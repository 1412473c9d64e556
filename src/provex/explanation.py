"""The result type every provex method returns.

An :class:`Explanation` holds a relevance map of the input's shape, the explained target
class per image, the method's name, an ``info`` dict of timings and solver diagnostics and,
for ordering methods, each component's rank, and optionally extra named maps of the same
shape (e.g. MR-RDE's per-rate maps) that ``plot`` draws beside the main map. It saves to and loads from one ``.pt`` file
(``torch.load(..., weights_only=True)`` safe) and plots itself to a PNG.

The fields, checks, ``save`` and ``load`` live in :class:`provex.explanation_data.ExplanationData`
(below the tests and the plots, which accept it); this module adds ``test`` and ``plot``,
the two conveniences that call up into :mod:`provex.stats` and :mod:`provex.viz`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from provex.explanation_data import ExplanationData
from provex.io import atomic_path

__all__ = ["Explanation", "atomic_path"]


class Explanation(ExplanationData):
    """Relevance of each input component for the model's output on each image.

    Attributes:
        relevance: (N, C, H, W) tensor, larger means more relevant.
        method: registry name of the method that produced it.
        target: (N,) class explained for each image.
        info: timings, options and solver diagnostics (objective per iteration, ...).
        ordering: optional (N, C, H, W) rank of each component (0 = least relevant).
        prediction: optional (N,) predicted class of each image.
        maps: optional extra named (N, C, H, W) maps (e.g. one per rate); ``plot`` draws them
            as extra columns beside ``relevance``.
    """

    def test(self, model: Any, x: torch.Tensor, **options: Any) -> Any:
        """Test the regions this map highlights on images ``x``: :func:`provex.stats.test_regions`."""
        from provex.stats.region_tests import test_regions

        return test_regions(model, x, self, **options)

    def plot(
        self,
        path: str | os.PathLike | None = None,
        images: torch.Tensor | None = None,
        ncols: int | None = None,
        cmap: str = "RdBu_r",
        titles: list[str] | None = None,
        *,
        labels: list[str] | None = None,
        scale: str | None = None,
        return_figure: bool = False,
    ) -> Path | Any:
        """Draw the maps: one panel per image, the map over the image, a labelled colour bar.

        With extra ``maps`` the figure has one row per image and one column per map (the
        main relevance first, then each named map); ``ncols`` is then ignored. SHAP-XRT
        explanations are drawn as region p-values and decisions. ``labels``: class names for
        the titles; ``scale``: ``"shared"`` (one colour scale for all panels) or ``"per-map"``
        (default: shared for masks and other fixed-range maps, per map otherwise), stated in
        the figure's title. ``images`` must have the maps' N, H and W.

        With ``path``: writes a PNG atomically and returns its path (or the matplotlib figure
        with ``return_figure=True``). Without: returns the figure (for notebooks).
        """
        from provex.viz.explain_plot import plot_explanation
        from provex.viz.heatmap import save_figure

        fig = plot_explanation(self, images, ncols=ncols, cmap=cmap, titles=titles, labels=labels, scale=scale)
        if path is None:
            return fig
        written = save_figure(fig, path, close=not return_figure)
        return fig if return_figure else written
