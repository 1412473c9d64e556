"""Shapley games: exact small-game Shapley values and hierarchical Shapley (h-Shap) image maps.

How much does each region of an image contribute to the prediction, fast?

``exact_shapley(value_fn, n_players)`` enumerates all ``2**n`` coalitions of a small game
(``value_fn`` takes a boolean ``(M, n)`` batch of coalitions) and returns float64 Shapley
values, exact zeros included. It is the ground truth the tests hold h-Shap to.

``HShap(model, background, min_size, ...)`` (Teneggi, Luster & Sulam, TPAMI 2022) explores
the image as a quadtree: the four quadrants of a region are the players of a 16-coalition
game (everything outside the coalition replaced by the background), their exact Shapley
values multiply down the tree, and only children above a threshold are explored, down to
``min_size`` pixel cells. Under the paper's assumption (the output is 1 exactly when some
cell holds the object, as in multiple instance learning) the leaf scores are exact Shapley
values of the cell game at a cost linear in the number of important cells. Cycle h-Shap
(``radii``, ``angles``) averages maps over shifted partitions to soften the grid.

    >>> import provex
    >>> model = provex.models.load("crosses-cnn")
    >>> x, y = provex.data.samples("crosses")
    >>> exp = provex.explain(model, x[:4], "h-shap", min_size=4)   # background: the card's data mean
    >>> exp = provex.explain(model, x[:4], "h-shap", threshold_mode="relative", threshold=0.7)
    >>> exp.info["model_evaluations_per_image"]

From the shell: ``provex explain --model crosses-cnn --method h-shap -O threshold=0``; the
benchmark against KernelSHAP, LIME, gradient and SmoothGrad: ``provex benchmark hshap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from provex.explanation import Explanation
from provex.registry import register_method
from provex.shapley.exact import coalitions, exact_shapley, shapley_from_table, shapley_weights
from provex.shapley.hshap import HShap, cell_edges, cycle_shifts

__all__ = [
    "HShap",
    "cell_edges",
    "coalitions",
    "cycle_shifts",
    "exact_shapley",
    "h_shap",
    "resolve_background",
    "shapley_from_table",
    "shapley_weights",
]


def resolve_background(model: nn.Module, x: torch.Tensor, background: torch.Tensor | float | None) -> torch.Tensor:
    """The (C, H, W) background: a tensor as given, a number as a constant image, ``None`` as the
    model card's ``data_mean`` (the mean training image, the paper's reference)."""
    if background is None:
        card = getattr(model, "card", None)
        mean = getattr(card, "data_mean", None)
        if mean is None or tuple(mean.shape) != tuple(x.shape[1:]):
            got = "no model card data_mean" if mean is None else f"a card data_mean of shape {tuple(mean.shape)}"
            raise ValueError(
                f"background: h-shap needs a background image of shape {tuple(x.shape[1:])} and the model has {got};"
                " pass background=<(C, H, W) tensor> or a number (a constant image)"
            )
        return mean.to(device=x.device, dtype=x.dtype)
    if isinstance(background, bool):
        raise ValueError("background must be a tensor, a number or None")
    if isinstance(background, (int, float)):
        return torch.full(x.shape[1:], float(background), dtype=x.dtype, device=x.device)
    if isinstance(background, torch.Tensor):
        return background.to(device=x.device)
    raise ValueError(f"background must be a tensor, a number or None, got {type(background).__name__}")


@register_method(
    "h-shap",
    family="Shapley games",
    description="hierarchical Shapley quadtree maps (Teneggi et al. 2022); background = card data mean",
)
def h_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    background: torch.Tensor | float | None = None,
    min_size: int = 4,
    threshold: float = 0.0,
    threshold_mode: str = "absolute",
    score: str = "softmax",
    batch_size: int = 256,
    radii: Sequence[int] = (0,),
    angles: Sequence[float] = (0.0,),
    progress: bool = False,
) -> Explanation:
    """h-Shap map of each image; see :class:`HShap` for the options (``radii``/``angles``: cycle h-Shap)."""
    bg = resolve_background(model, x, background)
    explainer = HShap(
        model,
        bg,
        min_size=min_size,
        threshold=threshold,
        threshold_mode=threshold_mode,
        score=score,
        batch_size=batch_size,
        radii=radii,
        angles=angles,
        progress=progress,
    )
    return explainer.explain(x, target)
