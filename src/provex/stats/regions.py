"""Image regions as features: a grid, or h-Shap's quadtree cells, as (R, H, W) bool masks.

SHAP-XRT and the region sampler treat each region as one feature, so a relevance map can be
tested region by region ("is this region statistically important for this prediction?").
"""

from __future__ import annotations

import torch

__all__ = ["grid_regions", "paint", "quadrant_regions"]


def _cuts(n: int, parts: int) -> list[int]:
    return [round(i * n / parts) for i in range(parts + 1)]


def grid_regions(height: int, width: int, rows: int, cols: int | None = None) -> torch.Tensor:
    """``rows x cols`` rectangular cells (row-major), as near-equal as the size allows."""
    cols = rows if cols is None else cols
    for name, v, size in (("rows", rows, height), ("cols", cols, width)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= size:
            raise ValueError(f"{name} must be an integer in 1..{size}, got {v!r}")
    rc, cc = _cuts(height, rows), _cuts(width, cols)
    out = torch.zeros(rows * cols, height, width, dtype=torch.bool)
    for i in range(rows):
        for k in range(cols):
            out[i * cols + k, rc[i] : rc[i + 1], cc[k] : cc[k + 1]] = True
    return out


def quadrant_regions(height: int, width: int, level: int = 1) -> torch.Tensor:
    """h-Shap's cells at quadtree ``level``: the image split into 2^level x 2^level quadrants.

    Cells are ordered row-major (level 1: top-left, top-right, bottom-left, bottom-right).
    """
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"level must be a nonnegative integer, got {level!r}")
    parts = 2**level
    if parts > min(height, width):
        raise ValueError(f"level {level} gives {parts} cells per side, more than the image size {height}x{width}")
    return grid_regions(height, width, parts, parts)


def paint(values: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Map per-region values (..., R) to pixels (..., H, W) (0 outside every region)."""
    if values.shape[-1] != regions.shape[0]:
        raise ValueError(f"values has {values.shape[-1]} entries for {regions.shape[0]} regions")
    r = regions.to(device=values.device, dtype=values.dtype)
    return torch.einsum("...r,rhw->...hw", values, r)
