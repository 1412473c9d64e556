"""Cells of a pixel grid: where h-Shap's finest cells and the ``block`` regions start and end.

One convention for both (so a region test on blocks and an h-Shap map agree on cells): a
side of ``size`` pixels holds ``size // cell`` cells of exactly ``cell`` pixels, the last
one absorbing the remainder. It lives below :mod:`provex.shapley` and :mod:`provex.stats`,
which both use it, so that neither imports the other for it.
"""

from __future__ import annotations

import torch

__all__ = ["cell_edges"]


def cell_edges(size: int, min_size: int) -> torch.Tensor:
    """Pixel edges of the cells along one side: ``[0, s, 2s, ..., size]`` (the last cell absorbs the rest)."""
    n = size // min_size
    edges = torch.arange(n + 1) * min_size
    edges[-1] = size
    return edges
