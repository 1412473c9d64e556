"""Image quality per image: PSNR and SSIM (Wang et al. 2004), batched in torch.

SSIM uses the 11-tap Gaussian window (sigma 1.5), population covariances, K1 = 0.01, K2 = 0.03
and averages the SSIM map over the pixels whose window lies inside the image, which is what
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=R)`` computes (checked in the tests); multi-channel
images are averaged over channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _pair(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise ValueError("x and ref must be torch tensors")
    if x.shape != ref.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but ref has shape {tuple(ref.shape)}")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    return x.detach().double(), ref.detach().double().to(x.device)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image of ``x`` against ``ref``, shape (N,)."""
    x, ref = _pair(x, ref)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    mse = (x - ref).flatten(1).pow(2).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gauss(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity of each (C, H, W) image of ``x`` against ``ref``, shape (N,)."""
    x, ref = _pair(x, ref)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise ValueError(f"images must be at least {2 * radius + 1} pixels on each side for SSIM")
    n, c, h, w = x.shape
    g = _gauss(sigma, radius, x)
    kh, kw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def filt(t: torch.Tensor) -> torch.Tensor:  # valid-region separable Gaussian filter
        t = t.reshape(n * c, 1, h, w)
        return F.conv2d(F.conv2d(t, kh), kw)

    ux, uy = filt(x), filt(ref)
    vx = filt(x * x) - ux * ux
    vy = filt(ref * ref) - uy * uy
    vxy = filt(x * ref) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(2).mean(1).float()
