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
fill for inpainting). Both run on the solver driver of :mod:`provex.fw.driver` and return its
:class:`~provex.fw.SolverResult`: ``gap`` holds the per-iteration, per-image relative change of
the iterate (for ADMM ``info["primal_residuals"]`` the primal residual ||x - z||), ``converged``
the final verdict. Every image iterates until all have converged (as before the driver).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from provex.fw.driver import SolverResult, Step, iterate
from provex.inverse.lpn import LPN
from provex.inverse.operators import LinearOperator

__all__ = ["check_step_size", "pnp_admm", "pnp_pgd"]

Denoiser = Callable[[torch.Tensor], torch.Tensor]


def __getattr__(name: str) -> Any:
    if name == "PnPResult":  # one result type for every solver; the old name is kept for one release
        warnings.warn("PnPResult is deprecated; use provex.fw.SolverResult", DeprecationWarning, stacklevel=2)
        return SolverResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rel_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return (new - old).flatten(1).norm(dim=1) / old.flatten(1).norm(dim=1).clamp_min(1e-12)


def _check_inputs(y: torch.Tensor, op: LinearOperator, denoiser: Denoiser, iters: int, tol: float) -> None:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"op must be a provex.inverse.operators.LinearOperator, got {type(op).__name__}")
    op._check(y, op.out_shape, "y", "measurements")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf values")
    if not callable(denoiser):
        raise ValueError("denoiser must be callable (an LPN or any x -> x map)")
    if isinstance(iters, bool) or not isinstance(iters, (int, float)) or not math.isfinite(iters):
        raise ValueError(f"iters must be a positive integer, got {iters}")
    if int(iters) != iters or iters <= 0:
        raise ValueError(f"iters must be a positive integer, got {iters}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative finite number, got {tol}")


def _start(y: torch.Tensor, op: LinearOperator, x0: torch.Tensor | None) -> torch.Tensor:
    """``x0`` (checked: shape and finiteness) or the operator's initial guess."""
    if x0 is None:
        return op.initial_guess(y)
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0 must be a tensor of images, got {type(x0).__name__}")
    op._check(x0, op.in_shape, "x0", "images")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or inf values")
    return x0.clone()


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
) -> SolverResult:
    """PnP proximal gradient descent; ``eta`` defaults to 0.99 / sigma_max(A)^2 (inside the theorem's range)."""
    start = time.perf_counter()
    _check_inputs(y, op, denoiser, iters, tol)
    bound = 1.0 / op.norm_sq()
    eta = 0.99 * bound if eta is None else float(eta)
    check_step_size(eta, op, force=force)
    _warn_if_not_strongly_convex(denoiser)
    x = _start(y, op, x0)

    def one(t: int, idx: torch.Tensor) -> Step:
        xa, ya = _rows(x, idx), _rows(y, idx)
        new = _apply(denoiser, xa - eta * op.adjoint(op(xa) - ya))
        r = _rel_change(new, xa)
        x[idx] = new
        return Step(r, done=r <= tol)

    info = {"eta": eta, "eta_bound": bound, "method": "pnp-pgd", "tol": tol}
    return iterate(
        one,
        x,
        max_iter=int(iters),
        until="all",
        progress=progress,
        desc="pnp-pgd",
        info=info,
        start=start,
        gap_name="relative change",
    )


def pnp_admm(
    y: torch.Tensor,
    op: LinearOperator,
    denoiser: Denoiser,
    rho: float = 1.0,
    iters: int = 100,
    x0: torch.Tensor | None = None,
    tol: float = 1e-4,
    progress: bool = False,
) -> SolverResult:
    """PnP-ADMM (scaled form); ``rho`` weights the prior (larger rho, stronger regularisation).

    The result's ``x`` is the denoised iterate ``z``; ``info["primal_residuals"]`` (iterations, N)
    the relative primal residual ``||x - z|| / ||z||``; an image has converged when both its
    relative change and its primal residual are ``<= tol``.
    """
    start = time.perf_counter()
    _check_inputs(y, op, denoiser, iters, tol)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be positive, got {rho}")
    _warn_if_not_strongly_convex(denoiser)
    aty = op.adjoint(y)
    z = _start(y, op, x0)
    u = torch.zeros_like(z)
    primal: list[torch.Tensor] = []
    last = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    def one(t: int, idx: torch.Tensor) -> Step:
        za, ua = _rows(z, idx), _rows(u, idx)
        xa = op.normal_solve(_rows(aty, idx) + rho * (za - ua), rho)
        z_new = _apply(denoiser, xa + ua)
        u[idx] = ua + xa - z_new
        r = _rel_change(z_new, za)
        p = (xa - z_new).flatten(1).norm(dim=1) / z_new.flatten(1).norm(dim=1).clamp_min(1e-12)
        z[idx] = z_new
        last[idx] = p
        primal.append(last.clone())
        return Step(r, done=(r <= tol) & (p <= tol))

    info: dict[str, Any] = {"rho": rho, "method": "pnp-admm", "tol": tol}
    res = iterate(
        one,
        z,
        max_iter=int(iters),
        until="all",
        progress=progress,
        desc="pnp-admm",
        info=info,
        start=start,
        gap_name="relative change",
    )
    res.info["primal_residuals"] = torch.stack(primal) if primal else torch.empty(0, z.shape[0], dtype=z.dtype)
    return res


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``t`` (the tensor itself when ``idx`` is every row)."""
    return t if idx.numel() == t.shape[0] else t[idx]
