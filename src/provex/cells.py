"""Cells of a pixel grid: where h-Shap's finest cells and the ``block`` regions start and end,
and how large they are by default (:func:`auto_side`, the ``grid="auto"`` of every method
that works on blocks of pixels).

One convention for both (so a region test on blocks and an h-Shap map agree on cells): a
side of ``size`` pixels holds ``size // cell`` cells of exactly ``cell`` pixels, the last
one absorbing the remainder. It lives below :mod:`provex.shapley` and :mod:`provex.stats`,
which both use it, so that neither imports the other for it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["auto_side", "cell_edges"]


def cell_edges(size: int, min_size: int) -> torch.Tensor:
    """Pixel edges of the cells along one side: ``[0, s, 2s, ..., size]`` (the last cell absorbs the rest)."""
    n = size // min_size
    edges = torch.arange(n + 1) * min_size
    edges[-1] = size
    return edges


def auto_side(h: int, w: int, max_cells: int, at_least: int = 1, ragged: bool = True) -> int:
    """The smallest cell side ``b >= at_least`` whose grid over ``h x w`` has at most ``max_cells`` cells.

    ``ragged``: the last row and column are partial cells (``ceil(h / b) * ceil(w / b)`` cells);
    otherwise the last cell absorbs the remainder (``(h // b) * (w // b)``, h-Shap's convention).
    Never larger than the image's shorter side. This is what keeps a method's cost fixed as
    images grow (a 224 x 224 image gets the cell count a 28 x 28 one gets at its default).
    """
    if max_cells < 1 or at_least < 1:
        raise ValueError(f"max_cells and at_least must be positive, got {max_cells} and {at_least}")

    def count(b: int) -> int:
        return math.ceil(h / b) * math.ceil(w / b) if ragged else max(1, h // b) * max(1, w // b)

    # ceil(h/b) ceil(w/b) >= h w / b^2 gives a first side for ragged grids; floor counts can be lower
    b = max(at_least, math.ceil(math.sqrt(h * w / max_cells))) if ragged else at_least
    while count(b) > max_cells and b < min(h, w):
        b += 1
    return max(1, min(b, min(h, w)))
