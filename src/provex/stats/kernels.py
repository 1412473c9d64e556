"""Kernels for the betting tests' witness functions: linear and RBF with a quantile bandwidth.

``RBFKernel`` uses ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` with ``sigma`` the
``quantile``-quantile of the pairwise distances between past points (0.5: the median
heuristic). It is refitted from the past points at every step while there are at most
``REFIT_EVERY_STEP`` of them, then whenever their number has grown by 10%, and frozen once
more than ``freeze_after`` exist: it depends on the past only and costs little. ``LinearKernel`` is the
dot product; the tests use closed-form running sums for it (O(1) per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from provex.checks import choose

REFIT_EVERY_STEP = 32

__all__ = [
    "REFIT_EVERY_STEP",
    "Kernel",
    "LinearKernel",
    "RBFKernel",
    "get_kernel",
    "lastdim_quantile",
    "quantile_bandwidth",
]


def lastdim_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """``numpy.quantile``-style (linear interpolation) quantile over the last axis, any size.

    Uses selection (``kthvalue``) rather than a full sort.
    """
    n = x.shape[-1]
    h = (n - 1) * q
    lo = int(h)
    hi = min(lo + 1, n - 1)
    v_lo = x.kthvalue(lo + 1, dim=-1).values
    if hi == lo or h == lo:
        return v_lo
    v_hi = x.kthvalue(hi + 1, dim=-1).values
    return v_lo + (h - lo) * (v_hi - v_lo)


def quantile_bandwidth(points: torch.Tensor, q: float) -> torch.Tensor:
    """Per batch row, the ``q``-quantile of pairwise distances among ``points`` (B, n, d).

    Zero quantiles (ties) fall back to the largest distance, and then to 1.
    """
    n = points.shape[1]
    if n < 2:
        return torch.ones(points.shape[0], dtype=points.dtype, device=points.device)
    dist = (points - points.transpose(1, 2)).abs() if points.shape[-1] == 1 else torch.cdist(points, points)
    iu = torch.triu_indices(n, n, offset=1, device=points.device)
    pairs = dist[:, iu[0], iu[1]]
    bw = lastdim_quantile(pairs, q)
    bw = torch.where(bw > 0, bw, pairs.amax(-1))
    return torch.where(bw > 0, bw, torch.ones_like(bw))


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape[-1] == 1:
        return (a - b.transpose(1, 2)).square()
    return torch.cdist(a, b).square()


@dataclass(frozen=True)
class Kernel:
    """Base class: ``rows(a, b, bandwidth)`` gives (B, m, n) kernel values for a (B, m, d), b (B, n, d)."""

    name = "kernel"

    @property
    def needs_bandwidth(self) -> bool:
        return False

    def rows(self, a: torch.Tensor, b: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearKernel(Kernel):
    """``k(a, b) = <a, b>``."""

    name = "linear"

    def rows(self, a: torch.Tensor, b: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
        return a @ b.transpose(1, 2)


@dataclass(frozen=True)
class RBFKernel(Kernel):
    """Gaussian kernel with bandwidth from a quantile of past pairwise distances (or fixed)."""

    quantile: float = 0.5
    bandwidth: float | None = None
    freeze_after: int = 100
    name = "rbf"

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"kernel quantile must be in (0, 1], got {self.quantile}")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError(f"kernel bandwidth must be positive, got {self.bandwidth}")
        if self.freeze_after < 2:
            raise ValueError(f"kernel freeze_after must be at least 2, got {self.freeze_after}")

    @property
    def needs_bandwidth(self) -> bool:
        return True

    def refit_due(self, n_past: int, n_last: int | None) -> bool:
        """Whether to refit the bandwidth with ``n_past`` past points (last fit at ``n_last``)."""
        if n_last is None:
            return True
        if self.bandwidth is not None or n_past > self.freeze_after:
            return False
        return n_past <= REFIT_EVERY_STEP or n_past >= 1.1 * n_last

    def fit(self, past: torch.Tensor) -> torch.Tensor:
        """Bandwidth (B,) from past points (B, n, d)."""
        if self.bandwidth is not None:
            return torch.full((past.shape[0],), float(self.bandwidth), dtype=past.dtype, device=past.device)
        return quantile_bandwidth(past, self.quantile)

    def rows(self, a: torch.Tensor, b: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
        if bandwidth is None:
            raise ValueError("RBFKernel.rows needs a bandwidth")
        return torch.exp(-_sqdist(a, b) / (2.0 * bandwidth.square())[:, None, None])


_KERNELS: dict[str, type[Kernel]] = {"linear": LinearKernel, "rbf": RBFKernel}


def get_kernel(kernel: str | Kernel) -> Kernel:
    """``"linear"``, ``"rbf"`` or a :class:`Kernel` instance; anything else is a ValueError."""
    if isinstance(kernel, Kernel):
        return kernel
    return choose("kernel", kernel, _KERNELS, also="a provex.stats.Kernel")()
