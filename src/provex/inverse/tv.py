"""Total-variation baseline: argmin_x 1/2 ||A x - y||^2 + lam * TV(x), batched, by Chambolle-Pock.

TV is the isotropic total variation with forward differences and Neumann boundary
(sum over pixels of the Euclidean norm of the discrete gradient, summed over channels). The
primal-dual algorithm (Chambolle and Pock 2011) uses K = grad (||K||^2 <= 8), the prox of the
data term, (A^T A + I / tau)^{-1}(A^T y + v / tau) (``op.normal_solve``), and the projection
onto {|p_ij| <= lam} for the dual. Step sizes tau = sigma = 0.99 / sqrt(8).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from provex.inverse.operators import LinearOperator

__all__ = ["grad2d", "tv_norm", "tv_objective", "tv_reconstruct"]


def grad2d(x: torch.Tensor) -> torch.Tensor:
    """Forward differences (N, C, H, W) -> (N, 2, C, H, W), zero at the last row / column."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gy[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gx, gy], 1)


def _div(p: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of :func:`grad2d`."""
    px, py = p[:, 0], p[:, 1]
    dx = torch.zeros_like(px)
    dy = torch.zeros_like(py)
    dx[..., 0, :] = px[..., 0, :]
    dx[..., 1:-1, :] = px[..., 1:-1, :] - px[..., :-2, :]
    dx[..., -1, :] = -px[..., -2, :]
    dy[..., :, 0] = py[..., :, 0]
    dy[..., :, 1:-1] = py[..., :, 1:-1] - py[..., :, :-2]
    dy[..., :, -1] = -py[..., :, -2]
    return dx + dy


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each image, shape (N,)."""
    return grad2d(x).pow(2).sum(1).sqrt().flatten(1).sum(1)


def tv_objective(x: torch.Tensor, y: torch.Tensor, op: LinearOperator, lam: float) -> torch.Tensor:
    """1/2 ||A x - y||^2 + lam * TV(x) per image."""
    return 0.5 * (op(x) - y).flatten(1).pow(2).sum(1) + lam * tv_norm(x)


def tv_reconstruct(
    y: torch.Tensor,
    op: LinearOperator,
    lam: float,
    iters: int = 300,
    progress: bool = False,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """TV-regularised least squares for every measurement in ``y``; returns (N, *op.in_shape).

    The problem is convex, so the start (``x0``, by default A^T y) changes only how many
    iterations are needed, not the minimiser; an iterate stopped early does depend on it (with a
    small ``lam`` the holes of an inpainting fill in only slowly), so compare two starts to check
    convergence.
    """
    op._check(y, op.out_shape, "y", "measurements")
    if len(op.in_shape) != 3:
        raise ValueError(f"TV needs images (C, H, W), the operator's input shape is {op.in_shape}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be >= 0, got {lam}")
    if int(iters) != iters or iters <= 0:
        raise ValueError(f"iters must be a positive integer, got {iters}")
    tau = sigma = 0.99 / math.sqrt(8.0)
    aty = op.adjoint(y)
    x = aty.clone() if x0 is None else x0.clone()
    op._check(x, op.in_shape, "x0", "images")
    xbar = x.clone()
    p = torch.zeros_like(grad2d(x))
    for _ in tqdm(range(iters), desc="tv", disable=not progress):
        p = p + sigma * grad2d(xbar)
        norm = p.pow(2).sum(1, keepdim=True).sqrt()
        p = p / torch.clamp(norm / lam, min=1.0) if lam > 0 else torch.zeros_like(p)
        x_new = op.normal_solve(aty + (x + tau * _div(p)) / tau, 1.0 / tau)
        xbar = 2 * x_new - x
        x = x_new
    return x
