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
    >>> exp = provex.explain(model, x[:4], "h-shap", grid=4)   # background: the card's data mean
    >>> exp = provex.explain(model, x[:4], "h-shap", threshold_mode="relative", threshold=0.7)
    >>> exp.info["per_image"]["model_calls"]

The registered method's ``grid`` is the finest cell side in pixels (``HShap``'s ``min_size``;
``min_size`` is its deprecated option name). Its default ``"auto"`` is the smallest side >= 4
with at most 256 cells (4 on MNIST's 28 x 28, 14 at 224 x 224, where 4 px cells would mean
3,136 leaves and over 60,000 model passes per image at ``threshold=0``); ``info["grid"]``
records the side used. The background comes from ``reference=`` (a
:class:`provex.Reference`: its ``background`` image): the one given, else the model card's
training mean, else each image's own per-channel mean (with a warning naming the fix). A
tensor or a number (a constant image) is still accepted through the deprecated
``background=`` option.

From the shell: ``provex explain --model crosses-cnn --method h-shap -O threshold=0``; the
benchmark against KernelSHAP, LIME, gradient and SmoothGrad: ``provex benchmark hshap``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from provex.cells import auto_side
from provex.checks import check_int
from provex.explanation import Explanation
from provex.reference import Reference, resolve_reference
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

AUTO_CELLS = 256  # grid="auto": at most this many finest cells


def resolve_background(
    model: nn.Module,
    x: torch.Tensor,
    reference: Reference | str | os.PathLike | torch.Tensor | float | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The background image(s) and a description of where they came from.

    A tensor (C, H, W) / (1, C, H, W) is used as is and a number as a constant image;
    otherwise :func:`provex.reference.resolve_reference` decides (given > model card > each
    image's own per-channel statistics) and the reference's ``background`` is used: (C, H, W),
    or (N, C, H, W) for per-image statistics.
    """
    if isinstance(reference, bool):
        raise ValueError("reference must be a provex.Reference, a path, a tensor, a number or None")
    if isinstance(reference, (int, float)):
        value = float(reference)
        if not math.isfinite(value):
            raise ValueError(f"reference: a constant background must be finite, got {reference!r}")
        bg = torch.full(x.shape[1:], value, dtype=x.dtype, device=x.device)
        return bg, {"source": f"constant {value:g}"}
    if isinstance(reference, torch.Tensor):
        bg = reference[0] if reference.ndim == 4 and reference.shape[0] == 1 else reference
        if tuple(bg.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"reference: a background tensor must have shape {tuple(x.shape[1:])}, got {tuple(bg.shape)}"
            )
        return bg.to(device=x.device, dtype=x.dtype), {"source": "background tensor"}
    ref = resolve_reference(reference, model, x)
    return ref.background, ref.describe()


@register_method(
    "h-shap",
    family="Shapley games",
    description="hierarchical Shapley quadtree maps (Teneggi et al. 2022); background from the reference",
    resolves_target=True,
    deprecated={"min_size": "grid", "background": "reference"},
)
def h_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None,
    reference: Reference | str | os.PathLike | torch.Tensor | float | None = None,
    grid: int | str = "auto",
    threshold: float = 0.0,
    threshold_mode: str = "absolute",
    score: str = "softmax",
    batch_size: int = 256,
    radii: Sequence[int] = (0,),
    angles: Sequence[float] = (0.0,),
    progress: bool = True,
) -> Explanation:
    """h-Shap map of each image; see :class:`HShap` for the options (``radii``/``angles``: cycle h-Shap)."""
    if grid == "auto":  # the finest cells sized by the image: 4 px on 28 x 28, 14 px at 224 x 224
        grid = auto_side(x.shape[2], x.shape[3], AUTO_CELLS, at_least=4, ragged=False)
    grid = check_int(grid, "grid")
    if grid > min(x.shape[2], x.shape[3]):
        raise ValueError(f"grid={grid} is larger than the image ({x.shape[2]} x {x.shape[3]})")
    bg, described = resolve_background(model, x, reference)
    explainer = HShap(
        model,
        bg,
        min_size=grid,
        threshold=threshold,
        threshold_mode=threshold_mode,
        score=score,
        batch_size=batch_size,
        radii=radii,
        angles=angles,
        progress=progress,
    )
    exp = explainer.explain(x, target)
    exp.info["reference"] = described
    exp.info["grid"] = grid
    return exp
