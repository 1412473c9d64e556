"""Projected gradient descent over the box ``[0, 1]^n`` for many independent problems at once.

L-RDE (Macdonald et al. 2019, :mod:`provex.rde.lagrangian`) is solved with it, as in the
reference implementation: projected gradient descent (clip to the box)
with heavy-ball averaging of the gradient (``m <- 0.85 m + 0.15 g``) and a backtracking line
search: a trial ``s' = clip(s - eta m)`` is accepted when
``f(s) - f(s') >= c / eta * ||s' - s||^2`` (c = 0.65), otherwise ``eta *= 0.7`` (at most 30
times, then the last trial is taken); the first trial step grows by 1/0.7 after an immediate
acceptance and shrinks by 0.7 after 5 or more trials. Every image has its own step size and
all images advance together (one batched objective call per trial).

A problem stops at ``max_iter`` or when its objective decreased by less than
``tol * |f|`` over the last 10 iterations. The FW dual gap over the box,
``<g, s - v>`` with ``v = 1[g < 0]``, is recorded as the stationarity measure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from provex.fw.driver import SolverResult, Step, check_finite, iterate
from provex.fw.solver import Objective, dual_gap

__all__ = ["projected_gradient"]

WINDOW = 10


def projected_gradient(
    objective: Objective,
    x0: torch.Tensor,
    *,
    max_iter: int = 500,
    tol: float = 1e-5,
    step0: float = 1.0,
    momentum: float = 0.85,
    c: float = 0.65,
    tau: float = 0.7,
    max_ls: int = 30,
    progress: bool = False,
    desc: str = "projected gradient",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> SolverResult:
    """Minimise P independent problems over ``[0, 1]^n`` from ``x0`` (P, n); see the module doc.

    ``info``: ``line_search_trials`` (objective calls of the line searches) and ``step``
    (each problem's first trial step at the end).
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    start = time.perf_counter()
    x = x0.detach().clone()
    p = x.shape[0]
    dev = x.device
    everyone = torch.arange(p, device=dev)
    f, g = objective(x, everyone, True)
    check_finite(f, everyone, 0)
    f, g = f.detach().clone(), g.detach().clone()
    m = torch.zeros_like(x)
    eta0 = torch.full((p,), float(step0), dtype=x.dtype, device=dev)
    recent = [f.clone()]  # the objective after each of the last WINDOW iterations
    ls_total = [0]

    def one(t: int, idx: torch.Tensor) -> Step:
        xa, ga, fa = x[idx], g[idx], f[idx]
        gap = dual_gap(ga, xa, (ga < 0).to(x.dtype))  # FW gap over the box: the stationarity measure
        ma = momentum * m[idx] + (1.0 - momentum) * ga
        m[idx] = ma
        eta = eta0[idx].clone()
        x_new = (xa - eta[:, None] * ma).clamp(0.0, 1.0)
        f_new, g_new = objective(x_new, idx, True)
        evaluations = 1
        check_finite(f_new, idx, t + 1)
        g_new = g_new.detach().clone()
        f_new = f_new.detach().clone()
        count = torch.ones(idx.numel(), dtype=torch.long, device=dev)
        ok = (fa - f_new) >= c / eta * (x_new - xa).square().sum(1)
        pos = (~ok).nonzero().squeeze(1)
        retried = pos
        while pos.numel():
            eta[pos] *= tau
            count[pos] += 1
            trial = (xa[pos] - eta[pos, None] * ma[pos]).clamp(0.0, 1.0)
            f_trial, _ = objective(trial, idx[pos], False)
            evaluations += 1
            check_finite(f_trial, idx[pos], t + 1)
            x_new[pos], f_new[pos] = trial, f_trial.detach()
            ok = (fa[pos] - f_trial) >= c / eta[pos] * (trial - xa[pos]).square().sum(1)
            pos = pos[~ok & (count[pos] < max_ls)]
        if retried.numel():
            _, g_retried = objective(x_new[retried], idx[retried], True)
            evaluations += 1
            g_new[retried] = g_retried.detach()
        ls_total[0] += int(count.sum())
        grow, shrink = count == 1, count >= min(5, max_ls)
        eta0[idx[grow]] /= tau
        eta0[idx[shrink]] *= tau
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        recent.append(f.clone())
        del recent[: -(WINDOW + 1)]
        done = torch.zeros(idx.numel(), dtype=torch.bool, device=dev)
        if t + 1 >= WINDOW and tol > 0:
            before = recent[0][idx]
            done = (before - f_new) <= tol * f_new.abs()
        return Step(gap, f_new, done=done, evaluations=evaluations)

    res = iterate(
        one,
        x,
        f,
        max_iter=max_iter,
        evaluations=1,
        progress=progress,
        desc=desc,
        callback=callback,
        gap_name="box FW gap",
        start=start,
    )
    res.info.update(line_search_trials=ls_total[0], step=eta0)
    return res
