"""What prior did the LPN learn? ``evaluate_prior(lpn, x)`` computes R(x) with f_theta = prox_R.

If f = grad psi with psi convex, then f = prox_R for (Gribonval and Nikolova 2020)

    R(x) = <y*, x> - ||x||^2 / 2 - psi(y*),   y* in argmin_y psi(y) - <y, x>,

i.e. y* solves f(y*) = x (y* = f^{-1}(x)). The inversion is a smooth convex problem; here it is
solved for a whole batch at once by L-BFGS with a per-input history and a per-input Armijo
backtracking line search, warm-started at y = x. Each input stops when the RMS of its gradient
f(y) - x falls below ``tol``. Because R is stationary in y at y*, its error is second order in
the inversion error. Inputs that do not converge are reported per input (``converged``,
``residual``) and by a warning (or an error with ``on_fail="raise"``), never silently returned.
x must lie in the range of f: outside it (possible when psi has no quadratic term, alpha = 0)
the minimiser does not exist and the input is reported as not converged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

__all__ = ["InversionError", "PriorResult", "evaluate_prior", "invert"]


class InversionError(RuntimeError):
    """Raised by ``on_fail="raise"`` when some inputs did not converge."""


@dataclass
class PriorResult:
    """R(x) per input with the inversion y* = f^{-1}(x) and its per-input diagnostics."""

    values: torch.Tensor  # (N,) R(x)
    y: torch.Tensor  # (N, ...) the inverse y*
    residual: torch.Tensor  # (N,) RMS of f(y*) - x
    converged: torch.Tensor  # (N,) bool
    iterations: torch.Tensor  # (N,) L-BFGS iterations used

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


Potential = Callable[[torch.Tensor], torch.Tensor]


def _value_and_grad(psi: Potential, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(y) = psi(y) - <y, x> per sample and its gradient f(y) - x."""
    with torch.enable_grad():
        yg = y.detach().requires_grad_(True)
        val = psi(yg) - (yg * x).flatten(1).sum(1)
        (g,) = torch.autograd.grad(val.sum(), yg)
    return val.detach(), g.detach()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def invert(
    psi: Potential,
    x: torch.Tensor,
    max_iter: int = 500,
    tol: float = 1e-5,
    history: int = 10,
    y0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise psi(y) - <y, x> for each input; returns (y, residual RMS, converged, iterations)."""
    n = x.shape[0]
    d = x[0].numel()
    y = (x if y0 is None else y0).detach().clone()
    val, g = _value_and_grad(psi, y, x)
    scale = math.sqrt(d)
    res = g.flatten(1).norm(dim=1) / scale
    done = res <= tol
    failed = torch.zeros(n, dtype=torch.bool, device=x.device)
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    h0 = torch.ones(n, dtype=x.dtype, device=x.device)
    first = True
    for _ in range(max_iter):
        active = ~(done | failed)
        if not bool(active.any()):
            break
        # Two-loop recursion (per-sample dot products; pairs with rho = 0 are no-ops).
        q = g.clone()
        alphas = []
        for s, yy, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho * _dot(s, q)
            q = q - _bcast(a, q) * yy
            alphas.append(a)
        r = _bcast(h0, q) * q
        for (s, yy, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
            b = rho * _dot(yy, r)
            r = r + _bcast(a - b, r) * s
        direction = -r
        slope = _dot(direction, g)
        bad = ~(slope < 0)
        if bool(bad.any()):  # not a descent direction: fall back to steepest descent for those inputs
            direction[bad] = -g[bad]
            slope = _dot(direction, g)
        gnorm = g.flatten(1).norm(dim=1).clamp_min(1e-30)
        t = torch.ones_like(val)
        if first:
            t = torch.clamp(1.0 / gnorm, max=1.0)
            first = False
        # Armijo backtracking, batched over the inputs still searching.
        new_y, new_val, new_g = y.clone(), val.clone(), g.clone()
        searching = active.clone()
        for _ls in range(40):
            idx = searching.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            cand = y[idx] + _bcast(t[idx], y[idx]) * direction[idx]
            cv, cg = _value_and_grad(psi, cand, x[idx])
            # Armijo decrease, with slack for rounding error in phi near the minimum.
            slack = 16 * torch.finfo(cv.dtype).eps * val[idx].abs()
            ok = (cv <= val[idx] + 1e-4 * t[idx] * slope[idx] + slack) & torch.isfinite(cv)
            acc = idx[ok]
            new_y[acc], new_val[acc], new_g[acc] = cand[ok], cv[ok], cg[ok]
            searching[acc] = False
            t[idx[~ok]] *= 0.5
        # Inputs whose line search found no decrease are stuck (at float precision or diverging).
        stuck = searching & active
        failed |= stuck
        moved = active & ~stuck
        s = new_y - y
        yy = new_g - g
        sy = _dot(s, yy)
        valid = moved & (sy > 1e-12 * _dot(s, s).sqrt() * _dot(yy, yy).sqrt())
        rho = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        s_hist.append(torch.where(_bcast(valid, s), s, torch.zeros_like(s)))
        y_hist.append(torch.where(_bcast(valid, yy), yy, torch.zeros_like(yy)))
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        yy_norm = _dot(yy, yy)
        h0 = torch.where(valid, sy / yy_norm.clamp_min(1e-30), h0)
        y, val, g = new_y, new_val, new_g
        iters[moved] += 1
        res = g.flatten(1).norm(dim=1) / scale
        done = done | (res <= tol)
    return y, res, done, iters


def evaluate_prior(
    lpn: torch.nn.Module,
    x: torch.Tensor,
    max_iter: int = 500,
    tol: float = 1e-5,
    batch_size: int = 256,
    on_fail: str = "warn",
    progress: bool = False,
) -> PriorResult:
    """R(x) for each input of ``x`` (the LPN's input shape with a batch dimension), batched.

    ``lpn`` needs ``psi(x) -> (N,)`` (a :class:`provex.inverse.LPN`, or any module whose
    forward is the gradient of its ``psi``). ``tol`` bounds the RMS of f(y*) - x per input;
    ``on_fail`` is "warn" (default), "raise" or "ignore" for inputs that do not reach it.
    """
    if not hasattr(lpn, "psi"):
        raise ValueError(f"lpn must provide psi(x) (a provex.inverse.LPN), got {type(lpn).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty floating tensor with a batch dimension")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf values")
    if on_fail not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_fail must be 'warn', 'raise' or 'ignore', got {on_fail!r}")
    if not (tol > 0) or max_iter <= 0 or batch_size <= 0:
        raise ValueError("tol, max_iter and batch_size must be positive")
    param = next(lpn.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    was_training = lpn.training
    lpn.eval()
    outs = []
    chunks = range(0, x.shape[0], batch_size)
    try:
        for i in tqdm(chunks, desc="invert lpn", disable=not progress):
            xb = x[i : i + batch_size]
            y, res, conv, it = invert(lpn.psi, xb, max_iter=max_iter, tol=tol)
            with torch.no_grad():
                r = _dot(y, xb) - 0.5 * _dot(xb, xb) - lpn.psi(y)
            outs.append((r, y, res, conv, it))
    finally:
        lpn.train(was_training)
    result = PriorResult(*(torch.cat([o[k] for o in outs]) for k in range(5)))
    if not result.all_converged and on_fail != "ignore":
        bad = (~result.converged).nonzero().squeeze(1).tolist()
        worst = float(result.residual[~result.converged].max())
        msg = (
            f"prior inversion did not converge for {len(bad)} of {x.shape[0]} inputs (indices {bad[:20]}"
            f"{'...' if len(bad) > 20 else ''}; worst RMS residual |f(y)-x| {worst:.3g} > tol {tol:g}); "
            "their R values are unreliable (see PriorResult.converged). Raise max_iter or tol, or check "
            "that x lies in the range of the LPN."
        )
        if on_fail == "raise":
            raise InversionError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return result
