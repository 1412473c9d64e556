"""Components: what one entry of a mask ``s`` covers in the image.

By default every entry of the (C, H, W) image is its own component (n = C*H*W). With
``grid=b`` the components are b x b pixel blocks with all channels tied (n = H*W / b^2), so
that Ord-RDE's n x n variable stays small on larger images.
"""

from __future__ import annotations

import torch

__all__ = ["Components"]


class Components:
    """Maps masks over components (M, n) to pixel masks (M, C, H, W) and back."""

    def __init__(self, image_shape: tuple[int, int, int], grid: int | None = None) -> None:
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        if grid is not None:
            if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
                raise ValueError(f"grid must be a positive integer block size or None, got {grid!r}")
            if h % grid or w % grid:
                raise ValueError(f"grid={grid} does not divide the image size {h}x{w}")
            self.shape = (1, h // grid, w // grid)
        else:
            self.shape = (c, h, w)
        self.grid = grid
        self.n = self.shape[0] * self.shape[1] * self.shape[2]

    def __repr__(self) -> str:
        return f"Components(n={self.n}, grid={self.grid}, image_shape={self.image_shape})"

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """(M, n) component values -> (M, C, H, W) pixel values (differentiable)."""
        m = s.shape[0]
        c, h, w = self.image_shape
        if self.grid is None:
            return s.reshape(m, c, h, w)
        b = self.grid
        _, hh, ww = self.shape
        return s.reshape(m, 1, hh, 1, ww, 1).expand(m, c, hh, b, ww, b).reshape(m, c, h, w)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) pixel values -> (M, n) sums over each component (adjoint of expand)."""
        m = t.shape[0]
        if self.grid is None:
            return t.reshape(m, self.n)
        c, h, w = self.image_shape
        b = self.grid
        return t.reshape(m, c, h // b, b, w // b, b).sum((1, 3, 5)).reshape(m, self.n)
