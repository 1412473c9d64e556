"""Image regions as features: a grid, h-Shap's cells, or the regions a relevance map highlights.

SHAP-XRT and the region sampler treat each region as one feature, so a relevance map can be
tested region by region ("is this region statistically important for this prediction?").
Regions are bool masks, (R, H, W) for one image or (N, R, H, W) per image.

:func:`map_regions` turns a relevance map into the regions it highlights, per image, padded
to a fixed count (padding masks are empty and ``valid`` is False there):

- ``"components"``: the support of the map (pixels at or above ``threshold`` times the
  image's largest value, channels summed) split into connected components (8-neighbours),
  components smaller than ``min_size`` pixels dropped, the ``max_regions`` with the largest
  total relevance kept (the natural regions of an RC-RDE mask);
- ``"top-k"``: the ``k`` blocks of ``grid`` x ``grid`` pixels with the largest total
  relevance (any map);
- ``"cells"``: the blocks of ``grid`` pixels (h-Shap's ``min_size`` cells) whose total
  relevance is positive, largest first, at most ``max_regions`` (h-Shap's positive cells).

Blocks follow h-Shap's cell convention: ``H // grid`` by ``W // grid`` cells of exactly
``grid`` pixels, the last row and column absorbing the remainder. Regions are ordered by
total relevance, largest first, in every case.
"""

from __future__ import annotations

import numpy as np
import torch

from provex.cells import cell_edges

__all__ = [
    "REGION_KINDS",
    "as_region_masks",
    "block_regions",
    "grid_regions",
    "label_map",
    "map_regions",
    "paint",
    "quadrant_regions",
]

REGION_KINDS = ("components", "top-k", "cells")
"""The region constructions :func:`map_regions` knows."""


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


def _positive_int(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def block_regions(height: int, width: int, grid: int) -> torch.Tensor:
    """Blocks of ``grid`` x ``grid`` pixels as (R, H, W) masks, row-major (h-Shap's cell convention)."""
    grid = _positive_int(grid, "grid")
    if grid > min(height, width):
        raise ValueError(f"grid must be at most the image side ({height} x {width}), got {grid}")
    re, ce = cell_edges(height, grid), cell_edges(width, grid)
    rows, cols = len(re) - 1, len(ce) - 1
    out = torch.zeros(rows * cols, height, width, dtype=torch.bool)
    for i in range(rows):
        for k in range(cols):
            out[i * cols + k, re[i] : re[i + 1], ce[k] : ce[k + 1]] = True
    return out


def _pixel_map(relevance: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) relevance -> (N, H, W) float64 (channels summed)."""
    if not isinstance(relevance, torch.Tensor) or relevance.ndim not in (3, 4):
        shape = tuple(relevance.shape) if isinstance(relevance, torch.Tensor) else type(relevance).__name__
        raise ValueError(f"relevance must be a tensor (N, C, H, W) or (N, H, W), got {shape}")
    if not bool(torch.isfinite(relevance).all()):
        raise ValueError("relevance contains NaN or inf values")
    r = relevance.detach().to("cpu", torch.float64)
    return r.sum(1) if r.ndim == 4 else r


def _pad(per_image: list[list[torch.Tensor]], height: int, width: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.zeros(len(per_image), count, height, width, dtype=torch.bool)
    valid = torch.zeros(len(per_image), count, dtype=torch.bool)
    for i, regions in enumerate(per_image):
        for r, m in enumerate(regions[:count]):
            masks[i, r] = m
            valid[i, r] = True
    return masks, valid


def _components(m: torch.Tensor, threshold: float, min_size: int) -> list[torch.Tensor]:
    from scipy import ndimage

    top = float(m.max())
    if top <= 0:
        return []
    support = (m >= threshold * top).numpy()
    labels, n = ndimage.label(support, structure=np.ones((3, 3), dtype=bool))
    lab = torch.from_numpy(labels)
    out = []
    for j in range(1, n + 1):
        mask = lab == j
        if int(mask.sum()) >= min_size:
            out.append((float(m[mask].sum()), j, mask))
    out.sort(key=lambda t: (-t[0], t[1]))
    return [t[2] for t in out]


def map_regions(
    relevance: torch.Tensor,
    regions: str = "top-k",
    *,
    k: int = 4,
    grid: int | None = None,
    threshold: float = 0.5,
    min_size: int = 4,
    max_regions: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The regions a relevance map highlights, per image (see the module docstring).

    Returns ``(masks, valid)``: (N, R, H, W) bool masks and an (N, R) bool tensor saying which
    are real regions (the rest is padding). R is ``k`` for ``"top-k"`` and ``max_regions``
    otherwise, the same for every image (so batches and shards line up). ``grid`` defaults to
    a quarter of the shorter image side.
    """
    m = _pixel_map(relevance)
    _, height, width = m.shape
    if regions not in REGION_KINDS:
        raise ValueError(f"regions must be one of {', '.join(REGION_KINDS)} or a bool mask tensor, got {regions!r}")
    max_regions = _positive_int(max_regions, "max_regions")
    grid = max(1, min(height, width) // 4) if grid is None else _positive_int(grid, "grid")
    per_image: list[list[torch.Tensor]] = []
    if regions == "components":
        t = float(threshold)
        if not 0.0 < t <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] (a fraction of the image's largest value), got {threshold}")
        min_size = _positive_int(min_size, "min_size")
        per_image = [_components(mi, t, min_size) for mi in m]
        return _pad(per_image, height, width, max_regions)
    blocks = block_regions(height, width, grid)
    sums = torch.einsum("nhw,rhw->nr", m, blocks.double())
    if regions == "top-k":
        k = _positive_int(k, "k")
        if k > blocks.shape[0]:
            raise ValueError(f"k={k} is more than the {blocks.shape[0]} blocks of {grid} px")
        for s in sums:
            order = torch.sort(s, descending=True, stable=True).indices[:k]
            per_image.append([blocks[j] for j in order.tolist()])
        return _pad(per_image, height, width, k)
    for s in sums:
        order = torch.sort(s, descending=True, stable=True).indices
        per_image.append([blocks[j] for j in order.tolist() if float(s[j]) > 0])
    return _pad(per_image, height, width, max_regions)


def as_region_masks(
    masks: object, n: int, height: int, width: int, name: str = "regions"
) -> tuple[torch.Tensor, torch.Tensor]:
    """User masks (R, H, W) for every image or (N, R, H, W) -> ``(masks, valid)`` as :func:`map_regions`.

    A mask with no pixel is padding (``valid`` False); a mask must be boolean (or 0/1).
    """
    if not isinstance(masks, torch.Tensor):
        raise ValueError(f"{name} must be 'components', 'top-k', 'cells' or a bool tensor of masks, got {masks!r}")
    t = masks.detach().cpu()
    if t.dtype != torch.bool:
        if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} masks must be boolean (or 0/1), got dtype {t.dtype}")
        t = t.bool()
    if t.ndim == 3:
        t = t.unsqueeze(0).expand(n, *t.shape)
    if t.ndim != 4 or t.shape[0] != n or tuple(t.shape[2:]) != (height, width):
        raise ValueError(
            f"{name} masks must be (R, {height}, {width}) or ({n}, R, {height}, {width}), got {tuple(masks.shape)}"
        )
    if t.shape[1] == 0:
        raise ValueError(f"{name} holds no masks (R = 0)")
    t = t.contiguous()
    valid = t.flatten(2).any(2)
    if not bool(valid.any()):
        raise ValueError(f"{name}: every mask is empty")
    return t, valid


def label_map(masks: torch.Tensor) -> torch.Tensor:
    """(N, R, H, W) masks -> (N, H, W) long labels: 0 outside every region, r + 1 in region r.

    Where masks overlap the lowest region index wins.
    """
    if masks.ndim != 4:
        raise ValueError(f"masks must be (N, R, H, W), got {tuple(masks.shape)}")
    r = masks.shape[1]
    ids = torch.arange(r, 0, -1, device=masks.device).view(1, r, 1, 1)
    top = (masks.long() * ids).amax(1)
    return torch.where(top > 0, r + 1 - top, torch.zeros_like(top))
