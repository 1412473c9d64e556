"""Deterministic and stochastic Frank-Wolfe for many independent problems at once.

``frank_wolfe(objective, lmo, x0, ...)`` minimises P independent problems that share one
objective *function* (one call evaluates all of them, e.g. one batched model pass for P
images) over the set of ``lmo``. Each iteration:

1. ``v = lmo(d)`` with ``d`` the gradient (deterministic) or a momentum average of
   stochastic gradients ``d_t = beta_t d_{t-1} + (1 - beta_t) g_t`` (stochastic FW; default
   ``1 - beta_t = min(1, 4 / (t + 8)^(2/3))``, the schedule of Mokhtari et al.);
2. the FW dual gap ``<d, x - v>`` (an upper bound on ``f(x) - min f`` for convex ``f``, and
   the usual stationarity measure otherwise); a problem whose gap is ``<= tol`` stops;
3. ``x <- x + gamma (v - x)`` with a rule from :mod:`provex.fw.steps`.

Problems that have stopped are no longer evaluated, so the batch shrinks as they converge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import torch

from provex.fw.driver import SolverResult, Step, check_finite, iterate
from provex.fw.lmo import LMO
from provex.fw.steps import resolve_step, step_size

__all__ = ["Objective", "check_finite_objective", "dual_gap", "frank_wolfe", "momentum_weight"]

MAX_HALVINGS = 40  # monotone rule: a problem whose step fell below 2^-40 stops


class Objective(Protocol):
    """``f(x, index, need_grad)`` -> values (P,) and gradients like ``x`` (or None).

    ``x`` holds the rows of the problems listed in ``index`` (positions in the full batch).
    """

    def __call__(
        self, x: torch.Tensor, index: torch.Tensor, need_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def dual_gap(grad: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Frank-Wolfe gap ``<grad, x - v>`` per problem (first dimension)."""
    return (grad * (x - v)).flatten(1).sum(1)


def momentum_weight(t: int) -> float:
    """Weight ``1 - beta_t`` of the new stochastic gradient at iteration ``t`` (1 at t = 0)."""
    return min(1.0, 4.0 / (t + 8.0) ** (2.0 / 3.0)) if t > 0 else 1.0


def check_finite_objective(f: torch.Tensor, index: torch.Tensor, t: int) -> None:
    """``ValueError`` if an objective value is NaN/inf (names the iteration and problems)."""
    check_finite(f, index, t)


def frank_wolfe(
    objective: Objective,
    lmo: LMO,
    x0: torch.Tensor,
    *,
    max_iter: int = 300,
    step: str = "2/(t+2)",
    tol: float | torch.Tensor = 0.0,
    rtol: float = 0.0,
    stochastic: bool = False,
    momentum: float | None = None,
    progress: bool = False,
    desc: str = "Frank-Wolfe",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SolverResult:
    """Minimise P independent problems ``objective`` over the set of ``lmo`` from ``x0`` (P, ...).

    Args:
        max_iter: iterations (each one objective call for all unstopped problems).
        step: ``"2/(t+2)"``, ``"1/sqrt(t+1)"`` or ``"monotone"`` (deterministic only).
        tol, rtol: stop a problem when its FW gap is ``<= tol + rtol * |f(x0)|`` (``tol`` a
            float or one value per problem; ``rtol`` makes the test scale-free).
        stochastic: the objective is a stochastic estimate: average gradients with momentum.
        momentum: constant ``beta`` for the averaging (default: the decaying schedule); also
            usable with a deterministic objective.
        callback: ``callback(t, x)`` after every iteration ``t`` (x: all problems, do not modify).

    ``info["factor"]`` holds each problem's halving count of the monotone rule; a problem
    whose step underflows (``MAX_HALVINGS``) stops without counting as converged.
    """
    rule = resolve_step(step)
    if rule == "monotone" and stochastic:
        raise ValueError("step='monotone' needs a deterministic objective; use '1/sqrt(t+1)' or '2/(t+2)'")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    tol_in = torch.as_tensor(tol)
    if not rtol >= 0 or bool((~(tol_in >= 0)).any()):
        raise ValueError(f"tol and rtol must be >= 0, got tol={tol}, rtol={rtol}")
    start = time.perf_counter()
    x = x0.detach().clone()
    p = x.shape[0]
    dev = x.device
    everyone = torch.arange(p, device=dev)
    f, g = objective(x, everyone, True)
    check_finite(f, everyone, 0)
    tol_t = torch.as_tensor(tol, dtype=x.dtype, device=dev).expand(p) + rtol * f.detach().abs()
    f = f.detach().clone()
    d = g.detach().clone()
    averaging = stochastic or momentum is not None
    factor = torch.zeros(p, dtype=torch.long, device=dev)
    shape = (-1,) + (1,) * (x.ndim - 1)

    def one(t: int, idx: torch.Tensor) -> Step:
        xa, da = x[idx], d[idx]
        v = lmo(da, idx)
        gap_a = dual_gap(da, xa, v)
        go = gap_a > tol_t[idx]
        stuck = torch.zeros_like(go)
        if not bool(go.any()):
            return Step(gap_a, f[idx], moved=go, done=~go, stuck=stuck, evaluations=0)
        sub, xs, direction = idx[go], xa[go], (v - xa)[go]
        monotone = rule == "monotone"
        gamma = step_size(rule, t, factor[sub]).to(x.dtype).view(shape) if monotone else step_size(rule, t)
        x_new = xs + gamma * direction
        f_new, g_new = objective(x_new, sub, True)
        evals = 1
        check_finite(f_new, sub, t + 1)
        if rule == "monotone":
            x_new, f_new, g_new, extra = _monotone_backtrack(
                objective, t, sub, xs, direction, f[sub], x_new, f_new, g_new, factor
            )
            evals += extra
            stuck[go] = factor[sub] >= MAX_HALVINGS
        x[sub] = x_new
        f[sub] = f_new.detach()
        if averaging:
            w = (1.0 - momentum) if momentum is not None else momentum_weight(t + 1)
            d[sub] = (1.0 - w) * d[sub] + w * g_new.detach()
        else:
            d[sub] = g_new.detach()
        return Step(gap_a, f[idx], moved=go, done=~go, stuck=stuck, evaluations=evals)

    return iterate(
        one,
        x,
        f,
        max_iter=max_iter,
        evaluations=1,
        progress=progress,
        desc=desc,
        callback=callback,
        gap_name="FW gap",
        info={"factor": factor},
        start=start,
    )


def _monotone_backtrack(
    objective: Objective,
    t: int,
    idx: torch.Tensor,
    xa: torch.Tensor,
    direction: torch.Tensor,
    f_old: torch.Tensor,
    x_new: torch.Tensor,
    f_new: torch.Tensor,
    g_new: torch.Tensor,
    factor: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Raise ``factor`` of the problems whose objective went up and retry only those.

    Trials are evaluated with their gradient: one halving usually suffices, so this is
    cheaper than value-only trials followed by a gradient pass at the accepted point.
    """
    evals = 0
    worse = f_new > f_old
    if not bool(worse.any()):
        return x_new, f_new, g_new, evals
    x_new, f_new, g_new = x_new.clone(), f_new.clone(), g_new.clone()
    pos = worse.nonzero().squeeze(1)  # positions within idx still being backtracked
    shape = (-1,) + (1,) * (xa.ndim - 1)
    while pos.numel():
        factor[idx[pos]] += 1
        gave_up = factor[idx[pos]] >= MAX_HALVINGS
        if bool(gave_up.any()):  # the step underflowed: these problems stay where they are
            stuck = pos[gave_up]
            _, g_stuck = objective(xa[stuck], idx[stuck], True)
            evals += 1
            x_new[stuck], f_new[stuck], g_new[stuck] = xa[stuck], f_old[stuck], g_stuck.detach()
            pos = pos[~gave_up]
            if pos.numel() == 0:
                break
        gamma = step_size("monotone", t, factor[idx[pos]]).to(xa.dtype).view(shape)
        trial = xa[pos] + gamma * direction[pos]
        f_trial, g_trial = objective(trial, idx[pos], True)
        evals += 1
        check_finite(f_trial, idx[pos], t + 1)
        x_new[pos], f_new[pos], g_new[pos] = trial, f_trial.detach(), g_trial.detach()
        pos = pos[f_trial > f_old[pos]]
    return x_new, f_new, g_new, evals
