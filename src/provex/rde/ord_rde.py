"""Ord-RDE (Macdonald et al. 2022): a relevance *ordering* by Frank-Wolfe over the Birkhoff polytope.

A doubly stochastic S (n x n per image) minimises the mean distortion of its masks ``S p_k``
over the rates k (:class:`provex.rde.ordering.OrderingObjective`); each iteration solves one
n x n linear assignment per image, so the number of components is capped (``max_components``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.fw import Birkhoff, frank_wolfe, resolve_step
from provex.fw.lmo import rounded
from provex.rde.mr_rde import default_rates
from provex.rde.options import DistortionOptions, SolverOptions
from provex.rde.ordering import OrderingObjective
from provex.rde.problem import info, setup, start_scores
from provex.rde.rc_rde import FAMILY
from provex.registry import register_method

__all__ = ["AUTO_COMPONENTS", "MAX_COMPONENTS", "ord_rde"]

AUTO_COMPONENTS = 256  # grid="auto": blocks with at most this many components (2 x 2 on MNIST, 14 x 14 at 224)
MAX_COMPONENTS = 1024  # default cap: an n x n S and an n x n assignment per image and iteration


@register_method(
    "ord-rde",
    family=FAMILY,
    description="ordering RDE: relevance ordering over the Birkhoff polytope by (stochastic) Frank-Wolfe",
)
def ord_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    distortion: str = "auto",
    n_samples: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    step: str | None = None,
    seed: int | Sequence[int] | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    reference: Any = None,
    noise: str = "per-pixel",
    grid: int | str | None = "auto",
    stochastic: bool = True,
    rates_per_iter: int | None = None,
    fixed_noise: bool | None = None,
    init: str | None = None,
    max_components: int = MAX_COMPONENTS,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Doubly stochastic S minimising the mean distortion of its masks ``S p_k`` over all rates.

    ``relevance = S @ linspace(0, 1, n)`` per component; ``ordering`` is each component's
    rank (0 = least relevant; ties go to the lower index). ``stochastic=True`` samples
    ``rates_per_iter`` rates per iteration and image (default ``(n-1)//20 + 1``: 10 on MNIST
    blocks; the reference used about n/10 rates and 200 iterations, which cost 4x more for
    the same ordering quality in our measurements, see notes/issue-3.md);
    ``stochastic=False`` uses all n-1 rates. ``grid="auto"`` picks the smallest blocks with
    at most 256 components (2 x 2 on MNIST: n = 196; 14 x 14 at 224 x 224); any grid giving
    more than ``max_components`` (1024) components is refused, since each iteration costs an
    n x n linear assignment per image. Defaults (None): 100 iterations of the
    1/sqrt(t+1) rule from the identity (ADF) or, with Monte Carlo, from the ordering of the
    linearised distortion with one fresh draw per mask (about 1,300 forward+backward passes
    per image at n = 256). ``info["masks"]`` holds ``S p_k`` at ``info["mask_rates"]`` (the
    MR-RDE rates). ``callback(t, S)`` sees the (N, n, n) matrices, do not modify them.
    """
    if isinstance(max_components, bool) or not isinstance(max_components, int) or max_components < 2:
        raise ValueError(f"max_components must be an integer >= 2, got {max_components!r}")
    options = DistortionOptions.create(
        noise=noise,
        reference=reference,
        distortion=distortion,
        n_samples=n_samples,
        fixed_noise=fixed_noise,
        grid=grid,
        batch_size=batch_size,
        seed=seed,
    )
    solver = SolverOptions(max_iter=max_iter, tol=tol, step=step, init=init, progress=progress, callback=callback)
    problem = setup("ord-rde", model, x, target, options, solver, max_components=AUTO_COMPONENTS, by_image=True)
    dist, comps, solver = problem.dist, problem.comps, problem.solver
    n, num = comps.n, x.shape[0]
    if n > max_components:
        raise ValueError(
            f"grid: Ord-RDE with n = {n} components exceeds max_components = {max_components} (an n x n "
            "matrix and an n x n linear assignment per image and iteration); use a coarser grid "
            "(grid='auto' keeps n <= 256) or raise max_components"
        )
    if stochastic:
        m = (n - 1) // 20 + 1 if rates_per_iter is None else rates_per_iter
    else:
        if rates_per_iter not in (None, n - 1):
            raise ValueError("rates_per_iter must be None when stochastic=False (all n - 1 rates are used)")
        m = n - 1
    image = torch.arange(num, device=x.device)
    obj = OrderingObjective(dist, image, m, problem.options.seed)
    rule = resolve_step(solver.step) if solver.step is not None else ("2/(t+2)" if obj.stochastic else "monotone")
    if solver.init == "gradient":  # the ordering by the linearised distortion (most relevant last)
        rank = rounded(start_scores(problem)).argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        s0 = torch.zeros(num, n, n, dtype=x.dtype, device=x.device).scatter_(2, rank.unsqueeze(2), 1.0)
    elif solver.init == "identity":
        s0 = torch.eye(n, dtype=x.dtype, device=x.device).expand(num, n, n).clone()
    else:
        raise ValueError(f"init must be 'identity' or 'gradient' for Ord-RDE, got {solver.init!r}")
    res = frank_wolfe(
        obj,
        Birkhoff(),
        s0,
        max_iter=solver.max_iter,
        step=rule,
        rtol=solver.tol,
        stochastic=obj.stochastic,
        progress=solver.progress,
        desc="Ord-RDE",
        callback=solver.callback,
    )
    S = res.x
    lin = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device)
    score = S @ lin  # (N, n)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # exact ties: lower index first
    mask_rates = default_rates(n)
    pk = torch.zeros(n, len(mask_rates), dtype=x.dtype, device=x.device)
    for j, k in enumerate(mask_rates):
        pk[n - k :, j] = 1
    masks = (S @ pk).transpose(1, 2)  # (N, R, n)
    out = info(problem, res, (num,), step=rule, rates_per_iter=m)
    out["stochastic"] = obj.stochastic
    out["masks"] = comps.expand(masks.transpose(0, 1).reshape(-1, n)).view(len(mask_rates), num, *x.shape[1:]).cpu()
    out["mask_rates"] = mask_rates
    return Explanation(
        comps.expand(score).detach(),
        "ord-rde",
        target.detach().clone(),
        out,
        ordering=comps.expand(rank),
    )
