"""Plug-and-play reconstruction with a learned proximal network (or any denoiser) as the prox.

For measurements y = A x + noise:

* **PnP-PGD**: ``x <- f(x - eta * A^T (A x - y))``. With f = prox_R an LPN (alpha > 0, smooth
  activations) the iterates converge when ``0 < eta < 1 / sigma_max(A)^2`` (Fang, Buchanan and
  Sulam 2024; the talk's slide writes sigma_max(A), the Lipschitz constant of the data term's
  gradient is sigma_max(A)^2). :func:`pnp_pgd` refuses a step outside that range with a
  ``ValueError`` unless ``force=True`` (then it warns). The fixed point minimises
  1/2 ||Ax - y||^2 + R(x) / eta.
* **PnP-ADMM**: ``x <- (A^T A + rho I)^{-1}(A^T y + rho (z - u))``, ``z <- f(x + u)``,
  ``u <- u + x - z``; with f = prox_R it targets 1/2 ||Ax - y||^2 + rho R(x), so ``rho`` sets the
  prior's weight. No step-size condition is checked for ADMM; convergence is measured.

Both start at ``x0`` or, by default, at ``op.initial_guess(y)`` (A^T y; a normalised-convolution
fill for inpainting). Both return a :class:`PnPResult` with the per-iteration, per-image residuals (relative change of
the iterate; for ADMM also the primal residual ||x - z||), so convergence can be reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from provex.inverse.lpn import LPN
from provex.inverse.operators import LinearOperator

__all__ = ["PnPResult", "check_step_size", "pnp_admm", "pnp_pgd"]

Denoiser = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PnPResult:
    """Reconstruction ``x`` (N, ...) with per-iteration residuals (iterations, N) and diagnostics."""

    x: torch.Tensor
    residuals: torch.Tensor  # relative change ||x_k+1 - x_k|| / ||x_k|| per iteration and image
    converged: torch.Tensor  # (N,) final relative change <= tol
    iterations: int
    info: dict[str, Any] = field(default_factory=dict)


def _rel_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return (new - old).flatten(1).norm(dim=1) / old.flatten(1).norm(dim=1).clamp_min(1e-12)


def _check_inputs(y: torch.Tensor, op: LinearOperator, denoiser: Denoiser, iters: int) -> None:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"op must be a provex.inverse.operators.LinearOperator, got {type(op).__name__}")
    op._check(y, op.out_shape, "y", "measurements")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf values")
    if not callable(denoiser):
        raise ValueError("denoiser must be callable (an LPN or any x -> x map)")
    if int(iters) != iters or iters <= 0:
        raise ValueError(f"iters must be a positive integer, got {iters}")


def check_step_size(eta: float, op: LinearOperator, force: bool = False) -> float:
    """Return the bound 1 / sigma_max(A)^2; raise (or, with ``force``, warn) if eta is not below it."""
    lip = op.norm_sq()
    bound = math.inf if lip == 0 else 1.0 / lip
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be positive, got {eta}")
    if eta >= bound:
        msg = (
            f"eta = {eta:g} violates the PnP-PGD convergence condition eta < 1 / sigma_max(A)^2 = {bound:.6g} "
            f"(sigma_max(A)^2 = {lip:.6g}); the iterates may not converge"
        )
        if not force:
            raise ValueError(msg + "; pass force=True to run anyway")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return bound


def _warn_if_not_strongly_convex(denoiser: Denoiser) -> None:
    if isinstance(denoiser, LPN) and denoiser.alpha <= 0:
        warnings.warn(
            "the LPN has alpha = 0: the PnP convergence theorem assumes psi is strongly convex (alpha > 0)",
            RuntimeWarning,
            stacklevel=3,
        )


def _apply(denoiser: Denoiser, v: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return denoiser(v)


def pnp_pgd(
    y: torch.Tensor,
    op: LinearOperator,
    denoiser: Denoiser,
    eta: float | None = None,
    iters: int = 200,
    x0: torch.Tensor | None = None,
    tol: float = 1e-4,
    force: bool = False,
    progress: bool = False,
) -> PnPResult:
    """PnP proximal gradient descent; ``eta`` defaults to 0.99 / sigma_max(A)^2 (inside the theorem's range)."""
    _check_inputs(y, op, denoiser, iters)
    bound = 1.0 / op.norm_sq()
    eta = 0.99 * bound if eta is None else float(eta)
    check_step_size(eta, op, force=force)
    _warn_if_not_strongly_convex(denoiser)
    x = op.initial_guess(y) if x0 is None else x0.clone()
    op._check(x, op.in_shape, "x0", "images")
    res = []
    for _ in tqdm(range(iters), desc="pnp-pgd", disable=not progress):
        new = _apply(denoiser, x - eta * op.adjoint(op(x) - y))
        res.append(_rel_change(new, x))
        x = new
        if bool((res[-1] <= tol).all()):
            break
    r = torch.stack(res)
    return PnPResult(x, r, r[-1] <= tol, len(res), {"eta": eta, "eta_bound": bound, "method": "pnp-pgd", "tol": tol})


def pnp_admm(
    y: torch.Tensor,
    op: LinearOperator,
    denoiser: Denoiser,
    rho: float = 1.0,
    iters: int = 100,
    x0: torch.Tensor | None = None,
    tol: float = 1e-4,
    progress: bool = False,
) -> PnPResult:
    """PnP-ADMM (scaled form); ``rho`` weights the prior (larger rho, stronger regularisation)."""
    _check_inputs(y, op, denoiser, iters)
    if not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be positive, got {rho}")
    _warn_if_not_strongly_convex(denoiser)
    aty = op.adjoint(y)
    z = op.initial_guess(y) if x0 is None else x0.clone()
    op._check(z, op.in_shape, "x0", "images")
    u = torch.zeros_like(z)
    res, primal = [], []
    x = z
    for _ in tqdm(range(iters), desc="pnp-admm", disable=not progress):
        x = op.normal_solve(aty + rho * (z - u), rho)
        z_new = _apply(denoiser, x + u)
        u = u + x - z_new
        res.append(_rel_change(z_new, z))
        primal.append((x - z_new).flatten(1).norm(dim=1) / z_new.flatten(1).norm(dim=1).clamp_min(1e-12))
        z = z_new
        if bool((res[-1] <= tol).all()) and bool((primal[-1] <= tol).all()):
            break
    r = torch.stack(res)
    p = torch.stack(primal)
    conv = (r[-1] <= tol) & (p[-1] <= tol)
    return PnPResult(z, r, conv, len(res), {"rho": rho, "primal_residuals": p, "method": "pnp-admm", "tol": tol})
