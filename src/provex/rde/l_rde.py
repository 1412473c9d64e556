"""L-RDE (Lagrangian RDE, Macdonald et al. 2019): ``min_s D(s) + mu * Phi(x)^2 * mean(s)`` over ``[0, 1]^n``.

Solved by the projected gradient of :mod:`provex.fw.projected` (momentum 0.85, backtracking
line search, as in the reference implementation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.fw import projected_gradient
from provex.rde.options import DistortionOptions, SolverOptions
from provex.rde.problem import final_distortion, info, setup
from provex.rde.rc_rde import FAMILY
from provex.registry import register_method

__all__ = ["l_rde"]


@register_method(
    "l-rde",
    family=FAMILY,
    description="Lagrangian RDE: min distortion + mu*logit^2*mean(s) by projected gradient (Macdonald et al. 2019)",
)
def l_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    mu: float = 0.5,
    distortion: str = "auto",
    n_samples: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int | Sequence[int] | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    reference: Any = None,
    noise: str = "per-pixel",
    grid: int | str | None = "auto",
    momentum: float = 0.85,
    init: float = 0.25,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Mask ``s in [0,1]^n`` minimising ``D(s) + mu * Phi(x)^2 * mean(s)`` (s0 = ``init``).

    ``tol`` (default 1e-5) stops an image when its objective fell by less than ``tol * |f|``
    over 10 iterations. With Monte Carlo the noise draws are fixed (the line search needs a
    deterministic objective): 16 per image, at most 50 iterations by default (``max_iter``
    500 with ADF). Other options as for RC-RDE.
    """
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu >= 0:
        raise ValueError(f"mu must be a non-negative number, got {mu!r}")
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not 0 <= init <= 1:
        raise ValueError(f"init must be in [0, 1], got {init!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    options = DistortionOptions.create(
        noise=noise,
        reference=reference,
        distortion=distortion,
        n_samples=n_samples,
        fixed_noise=True,
        grid=grid,
        batch_size=batch_size,
        seed=seed,
    )
    solver = SolverOptions(max_iter=max_iter, tol=tol, init="zeros", progress=progress, callback=callback)
    problem = setup("l-rde", model, x, target, options, solver)
    dist, comps, solver = problem.dist, problem.comps, problem.solver
    n, num = comps.n, x.shape[0]
    image = torch.arange(num, device=x.device)
    weight = float(mu) * dist.phi.square() / n  # d/ds of mu * Phi(x)^2 * mean(s)

    def objective(s: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        d, g = dist(s, image[idx], need_grad)
        w = weight[idx]
        f = d + w * s.sum(1)
        return f, (None if g is None else g + w[:, None])

    res = projected_gradient(
        objective,
        torch.full((num, n), float(init), dtype=x.dtype, device=x.device),
        max_iter=solver.max_iter,
        tol=solver.tol,
        momentum=momentum,
        progress=solver.progress,
        desc="L-RDE",
        callback=solver.callback,
    )
    final = final_distortion(problem, res.x, image)
    out = info(problem, res, (num,), mu=float(mu), line_search_trials=res.info["line_search_trials"])
    out["init"] = float(init)
    out["distortion"] = final.cpu()
    out["rate"] = res.x.sum(1).cpu()
    return Explanation(comps.expand(res.x).detach(), "l-rde", target.detach().clone(), out)
