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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from provex.fw.lmo import LMO
from provex.fw.steps import resolve_step, step_size

__all__ = ["FWResult", "Objective", "check_finite_objective", "dual_gap", "frank_wolfe", "momentum_weight"]

MAX_HALVINGS = 40  # monotone rule: a problem whose step fell below 2^-40 stops


class Objective(Protocol):
    """``f(x, index, need_grad)`` -> values (P,) and gradients like ``x`` (or None).

    ``x`` holds the rows of the problems listed in ``index`` (positions in the full batch).
    """

    def __call__(
        self, x: torch.Tensor, index: torch.Tensor, need_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass
class FWResult:
    """Solution and diagnostics of a batched Frank-Wolfe run (one row / column per problem).

    ``objective`` (T+1, P) is the objective at every iterate as the solver saw it (noisy for
    a stochastic objective); ``gap`` (T, P) the FW dual gap at each iteration (for stopped
    problems the last value is repeated); ``iterations`` (P,) the steps each problem took;
    ``times`` (T+1,) the wall-clock seconds at which each iterate was reached.
    """

    x: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor
    iterations: torch.Tensor
    evaluations: int
    seconds: float
    times: torch.Tensor | None = None  # (T+1,) seconds since the start at each iterate
    extra: dict = field(default_factory=dict)


def dual_gap(grad: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Frank-Wolfe gap ``<grad, x - v>`` per problem (first dimension)."""
    return (grad * (x - v)).flatten(1).sum(1)


def momentum_weight(t: int) -> float:
    """Weight ``1 - beta_t`` of the new stochastic gradient at iteration ``t`` (1 at t = 0)."""
    return min(1.0, 4.0 / (t + 8.0) ** (2.0 / 3.0)) if t > 0 else 1.0


def check_finite_objective(f: torch.Tensor, index: torch.Tensor, t: int) -> None:
    bad = ~torch.isfinite(f)
    if bool(bad.any()):
        raise ValueError(
            f"objective is not finite (NaN/inf) at iteration {t} for problem(s) {index[bad].tolist()[:10]}"
        )


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
) -> FWResult:
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
    """
    rule = resolve_step(step)
    if rule == "monotone" and stochastic:
        raise ValueError("step='monotone' needs a deterministic objective; use '1/sqrt(t+1)' or '2/(t+2)'")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    start = time.perf_counter()
    x = x0.detach().clone()
    p = x.shape[0]
    dev = x.device
    everyone = torch.arange(p, device=dev)
    if rtol < 0 or bool((torch.as_tensor(tol) < 0).any()):
        raise ValueError(f"tol and rtol must be >= 0, got tol={tol}, rtol={rtol}")
    f, g = objective(x, everyone, True)
    evaluations = 1
    check_finite_objective(f, everyone, 0)
    tol_t = torch.as_tensor(tol, dtype=x.dtype, device=dev).expand(p) + rtol * f.detach().abs()
    f = f.detach().clone()
    d = g.detach().clone()
    averaging = stochastic or momentum is not None
    active = torch.ones(p, dtype=torch.bool, device=dev)
    factor = torch.zeros(p, dtype=torch.long, device=dev)
    iterations = torch.zeros(p, dtype=torch.long, device=dev)
    gap = torch.full((p,), math.inf, dtype=x.dtype, device=dev)
    hist_f, hist_gap, times = [f.clone()], [], [time.perf_counter() - start]
    bar = tqdm(range(max_iter), desc=desc, disable=not progress, leave=False)
    for t in bar:
        idx = everyone if bool(active.all()) else active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa, da = x[idx], d[idx]
        v = lmo(da, idx)
        direction = v - xa
        gap_a = -(da * direction).flatten(1).sum(1)
        gap[idx] = gap_a
        go = gap_a > tol_t[idx]
        if not bool(go.all()):
            active[idx[~go]] = False
            idx, xa, direction = idx[go], xa[go], direction[go]
            if idx.numel() == 0:
                hist_gap.append(gap.clone())
                hist_f.append(f.clone())
                times.append(time.perf_counter() - start)
                break
        shape = (-1,) + (1,) * (x.ndim - 1)
        gamma = step_size(rule, t, factor[idx]).to(x.dtype).view(shape) if rule == "monotone" else step_size(rule, t)
        x_new = xa + gamma * direction
        f_new, g_new = objective(x_new, idx, True)
        evaluations += 1
        check_finite_objective(f_new, idx, t + 1)
        if rule == "monotone":
            x_new, f_new, g_new, extra_evals = _monotone_backtrack(
                objective, t, idx, xa, direction, f[idx], x_new, f_new, g_new, factor
            )
            evaluations += extra_evals
            active[idx[factor[idx] >= MAX_HALVINGS]] = False
        x[idx] = x_new
        f[idx] = f_new.detach()
        if averaging:
            w = (1.0 - momentum) if momentum is not None else momentum_weight(t + 1)
            d[idx] = (1.0 - w) * d[idx] + w * g_new.detach()
        else:
            d[idx] = g_new.detach()
        iterations[idx] += 1
        hist_f.append(f.clone())
        hist_gap.append(gap.clone())
        times.append(time.perf_counter() - start)
        if callback is not None:
            callback(t, x)
        if progress and t % 10 == 0:
            bar.set_postfix(objective=f"{float(f.mean()):.4g}", active=int(idx.numel()))
    bar.close()
    return FWResult(
        x=x,
        objective=torch.stack(hist_f),
        gap=torch.stack(hist_gap) if hist_gap else torch.empty(0, p, dtype=x.dtype, device=dev),
        iterations=iterations,
        evaluations=evaluations,
        seconds=time.perf_counter() - start,
        times=torch.tensor(times, dtype=torch.float64),
        extra={"factor": factor},
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
        check_finite_objective(f_trial, idx[pos], t + 1)
        x_new[pos], f_new[pos], g_new[pos] = trial, f_trial.detach(), g_trial.detach()
        pos = pos[f_trial > f_old[pos]]
    return x_new, f_new, g_new, evals
