"""RC-RDE (rate-constrained RDE, Macdonald et al. 2022): ``min D(s)`` s.t. ``s in [0,1]^n``, ``sum(s) <= k``.

Frank-Wolfe over the non-negative k-sparse polytope (top-k LMO). :func:`solve_rates` solves
every (rate, image) pair of a batch as one Frank-Wolfe run (MR-RDE uses it too): one batched
model pass per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.fw import KSparseNonNegative, frank_wolfe, resolve_step
from provex.rde.options import DistortionOptions, SolverOptions
from provex.rde.problem import Problem, final_distortion, info, setup, start_scores
from provex.registry import register_method

__all__ = ["DEFAULT_RATE", "REFERENCE_N", "rate_count", "rc_rde", "solve_rates"]

FAMILY = "rate-distortion"
REFERENCE_N = 784  # MNIST pixels: the papers' rates are given out of 784
DEFAULT_RATE = 100  # of REFERENCE_N (the papers' MNIST setting), scaled to the number of components


def rate_count(value: Any, n: int, name: str = "rate") -> int:
    """A rate as a number of components: a whole number in 1..n, or a fraction in (0, 1) of n."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a whole number of components or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float) and 0 < value < 1:
        return max(1, round(value * n))
    if value != int(value):
        raise ValueError(f"{name} must be a whole number of components or a fraction in (0, 1), got {value!r}")
    if not 1 <= int(value) <= n:
        raise ValueError(f"{name} must be in 1..{n} (the number of components) or a fraction in (0, 1), got {value!r}")
    return int(value)


def scaled_rate(rate: int, n: int) -> int:
    """A rate given out of MNIST's 784 pixels, scaled to ``n`` components."""
    return max(1, round(rate * n / REFERENCE_N))


def _step(step: str | None, stochastic: bool) -> str:
    if step is None:
        return "2/(t+2)" if stochastic else "monotone"
    return resolve_step(step)


def solve_rates(
    problem: Problem, target: torch.Tensor, rates: Sequence[Any], rate_name: str, desc: str
) -> tuple[torch.Tensor, dict[str, Any], list[int]]:
    """RC-RDE for every (rate, image) pair as one batched FW run: masks (R, N, n), info, rates."""
    dist, comps, solver = problem.dist, problem.comps, problem.solver
    n, num, x = comps.n, dist.x.shape[0], dist.x
    counts = [rate_count(r, n, rate_name) for r in rates]
    if len(set(counts)) != len(counts):
        raise ValueError(f"{rate_name} must be distinct numbers of components, got {counts} (of {n})")
    k = torch.tensor(counts, device=x.device).repeat_interleave(num)  # problem p = r * N + i
    image = torch.arange(num, device=x.device).repeat(len(counts))
    rule = _step(solver.step, dist.stochastic)
    if rule == "monotone" and dist.stochastic:
        raise ValueError("step='monotone' needs a deterministic objective (fixed_noise=True or ADF)")
    lmo = KSparseNonNegative(k, n)
    if solver.init == "gradient":  # the top-k vertex of the linearised distortion of each image
        x0 = lmo(-start_scores(problem)[image])
    elif solver.init == "zeros":
        x0 = torch.zeros(len(counts) * num, n, dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"init must be 'zeros' or 'gradient' for {desc}, got {solver.init!r}")

    def objective(s: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        return dist(s, image[idx], need_grad)

    res = frank_wolfe(
        objective,
        lmo,
        x0,
        max_iter=solver.max_iter,
        step=rule,
        rtol=solver.tol,
        stochastic=dist.stochastic,
        progress=solver.progress,
        desc=desc,
        callback=solver.callback,
    )
    final = final_distortion(problem, res.x, image)
    out = info(problem, res, (len(counts), num), step=rule, rates=counts)
    out["distortion"] = final.view(len(counts), num).cpu()
    return res.x.view(len(counts), num, n), out, counts


@register_method(
    "rc-rde",
    family=FAMILY,
    description="rate-constrained RDE: min distortion s.t. sum(s) <= rate, by Frank-Wolfe (Macdonald et al. 2022)",
)
def rc_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rate: int | float | None = None,
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
    fixed_noise: bool | None = None,
    init: str | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Sparse mask ``s in [0,1]^n`` with ``sum(s) <= rate`` that keeps the target logit.

    ``rate``: a number of components or a fraction in (0, 1) of them (default 100/784 of the
    components: 100 MNIST pixels). Options (:class:`~provex.rde.options.DistortionOptions`,
    :class:`~provex.rde.options.SolverOptions`; None takes the defaults of
    :data:`~provex.rde.options.DEFAULTS` for the resolved estimator): with ADF, 300
    iterations of the monotone rule from s = 0; with Monte Carlo, a fixed bank of 32 draws per
    image, the monotone rule from the gradient's top-k vertex, at most 50 iterations, stopping
    when the FW gap is below 1e-3 of the start objective (about 1,700 forward+backward passes
    per image). ``callback(t, s)`` sees the masks (R*N, n), do not modify them.
    """
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
    problem = setup("rc-rde", model, x, target, options, solver)
    k = scaled_rate(DEFAULT_RATE, problem.comps.n) if rate is None else rate
    masks, out, rates = solve_rates(problem, target, [k], "rate", "RC-RDE")
    for key in ("objective", "gap", "distortion"):
        out[key] = out[key].squeeze(-2)
    out["iterations"] = out["iterations"].squeeze(0)
    out["rate"] = rates[0]
    del out["rates"]
    return Explanation(problem.comps.expand(masks[0]).detach(), "rc-rde", target.detach().clone(), out)
