"""Components: what one entry of a mask ``s`` covers in the image.

``grid=None``: every entry of the (C, H, W) image is its own component (n = C*H*W).
``grid=b``: b x b pixel blocks with all channels tied (n = ceil(H/b) * ceil(W/b)); when b does
not divide the image the last row and column of blocks are smaller. :func:`auto_grid` sizes
the blocks by the image so that n stays near a target (784 by default: pixels on MNIST,
8 x 8 blocks at 224 x 224), which keeps the number of Frank-Wolfe iterations and the variance
of Monte Carlo gradients independent of the resolution.
"""

from __future__ import annotations

import math

import torch

from provex.cells import auto_side

__all__ = ["AUTO_COMPONENTS", "Components", "auto_grid"]

AUTO_COMPONENTS = 784  # grid="auto": at most this many components (28 x 28; 8 x 8 blocks at 224 x 224)


def auto_grid(image_shape: tuple[int, ...], max_components: int = AUTO_COMPONENTS) -> int | None:
    """The smallest block side b with ceil(H/b) * ceil(W/b) <= ``max_components`` (None: single-channel pixels)."""
    c, h, w = (int(v) for v in image_shape[-3:])
    b = auto_side(h, w, max_components)
    return None if b == 1 and c == 1 else b


class Components:
    """Maps masks over components (M, n) to pixel masks (M, C, H, W) and back."""

    def __init__(self, image_shape: tuple[int, int, int], grid: int | None = None) -> None:
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        if grid is not None:
            if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
                raise ValueError(f"grid must be a positive integer block size, 'auto' or None, got {grid!r}")
            if grid > max(h, w):
                raise ValueError(f"grid={grid} is larger than the image ({h}x{w})")
            self.shape = (1, math.ceil(h / grid), math.ceil(w / grid))
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
        full = s.reshape(m, 1, hh, 1, ww, 1).expand(m, c, hh, b, ww, b).reshape(m, c, hh * b, ww * b)
        return full if (hh * b, ww * b) == (h, w) else full[:, :, :h, :w]

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) pixel values -> (M, n) sums over each component (adjoint of expand)."""
        m = t.shape[0]
        if self.grid is None:
            return t.reshape(m, self.n)
        c, h, w = self.image_shape
        b = self.grid
        _, hh, ww = self.shape
        if (hh * b, ww * b) != (h, w):
            t = torch.nn.functional.pad(t, (0, ww * b - w, 0, hh * b - h))
        return t.reshape(m, c, hh, b, ww, b).sum((1, 3, 5)).reshape(m, self.n)
